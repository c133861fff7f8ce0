//! Writing a streamed result into the export target (see `Lake::create`): CSV (RFC 4180, configurable), JSON lines or
//! Parquet. Each writer receives the columns once and then the values one by one
//! ([`RowSink`]); none keeps more than a bounded part of the result in memory.

mod csv_rows;
mod json_lines;
mod parquet_rows;

pub use csv_rows::CsvRows;
pub use json_lines::JsonLines;
pub use parquet_rows::ParquetRows;

use super::db::RowSink;
use super::error::DataError;

/// A writer of one format.
pub trait RowWriter: RowSink + Send {
    /// Writes out everything received so far (the file is complete after this).
    fn finish(&mut self) -> Result<(), DataError>;
}

fn io(e: impl std::fmt::Display) -> DataError {
    DataError::transient(format!("cannot write the export: {e}"))
}

/// Buffer of the writers in front of the target.
const BUFFER: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::super::cells::{Cell, Column, Kind};
    use super::*;

    /// Columns `names`, all of kind `kind`.
    pub fn columns(names: &[&str], kind: Kind) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                kind,
                unsigned: false,
                db_type: "TEXT".into(),
            })
            .collect()
    }

    /// Sends `rows` through a writer.
    pub fn feed(w: &mut dyn RowWriter, cols: &[Column], rows: &[Vec<Cell>]) {
        w.start(cols).unwrap();
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                w.value(i, *c).unwrap();
            }
            w.end_row().unwrap();
        }
        w.finish().unwrap();
    }
}
