//! Writing result rows as CSV (RFC 4180, configurable) or JSON lines into a spool file.

use std::io::Write;

use tern_core::CsvOptions;

use super::cells::Cell;
use super::error::DataError;

fn io(e: impl std::fmt::Display) -> DataError {
    DataError::transient(format!("cannot write the spool file: {e}"))
}

/// Writes rows in one format; the header (if any) is written with the first call.
pub trait RowWriter: Send {
    /// `cells` empty: only the column names are known (an empty result).
    fn row(&mut self, names: &[String], cells: &[Cell]) -> Result<(), DataError>;
    /// Flushes everything written so far.
    fn finish(&mut self) -> Result<(), DataError>;
}

pub struct CsvRows<W: Write> {
    out: csv::Writer<W>,
    header: bool,
    started: bool,
    null_text: String,
    record: Vec<String>,
}

impl<W: Write> CsvRows<W> {
    pub fn new(w: W, o: &CsvOptions) -> CsvRows<W> {
        let out = csv::WriterBuilder::new()
            .delimiter(o.delimiter as u8)
            .quote(o.quote as u8)
            .quote_style(csv::QuoteStyle::Necessary)
            .double_quote(true)
            .terminator(if o.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(w);
        CsvRows {
            out,
            header: o.header,
            started: false,
            null_text: o.null_text.clone(),
            record: Vec::new(),
        }
    }
}

impl<W: Write + Send> RowWriter for CsvRows<W> {
    fn row(&mut self, names: &[String], cells: &[Cell]) -> Result<(), DataError> {
        if !self.started {
            self.started = true;
            if self.header {
                self.out.write_record(names).map_err(io)?;
            }
        }
        if cells.is_empty() {
            return Ok(());
        }
        self.record.clear();
        for c in cells {
            self.record
                .push(c.text().unwrap_or_else(|| self.null_text.clone()));
        }
        self.out.write_record(&self.record).map_err(io)
    }

    fn finish(&mut self) -> Result<(), DataError> {
        self.out.flush().map_err(io)
    }
}

pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out }
    }
}

impl<W: Write + Send> RowWriter for JsonLines<W> {
    fn row(&mut self, names: &[String], cells: &[Cell]) -> Result<(), DataError> {
        if cells.is_empty() {
            return Ok(());
        }
        let mut obj = serde_json::Map::with_capacity(names.len());
        for (n, c) in names.iter().zip(cells) {
            obj.insert(n.clone(), c.json());
        }
        serde_json::to_writer(&mut self.out, &obj).map_err(io)?;
        self.out.write_all(b"\n").map_err(io)
    }

    fn finish(&mut self) -> Result<(), DataError> {
        self.out.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_text(o: &CsvOptions, rows: &[Vec<Cell>]) -> String {
        let mut buf = Vec::new();
        {
            let mut w = CsvRows::new(&mut buf, o);
            let names = vec!["id".to_string(), "name".to_string()];
            for r in rows {
                w.row(&names, r).unwrap();
            }
            w.finish().unwrap();
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn csv_quotes_per_rfc_4180_and_honours_the_options() {
        let rows = vec![
            vec![Cell::Int(1), Cell::Text("O'Brien, \"Jr\"".into())],
            vec![Cell::Int(2), Cell::Null],
            vec![Cell::Bool(true), Cell::Text("Łódź\nnew line".into())],
        ];
        assert_eq!(
            csv_text(&CsvOptions::default(), &rows),
            "id,name\n1,\"O'Brien, \"\"Jr\"\"\"\n2,\n1,\"Łódź\nnew line\"\n"
        );
        let o = CsvOptions {
            header: false,
            delimiter: ';',
            quote: '\'',
            crlf: true,
            null_text: "NULL".into(),
        };
        assert_eq!(
            csv_text(&o, &rows),
            "1;'O''Brien, \"Jr\"'\r\n2;NULL\r\n1;'Łódź\nnew line'\r\n"
        );
        assert_eq!(csv_text(&CsvOptions::default(), &[vec![]]), "id,name\n");
    }

    #[test]
    fn json_lines_keep_types() {
        let mut buf = Vec::new();
        let mut w = JsonLines::new(&mut buf);
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        w.row(
            &names,
            &[Cell::Int(1), Cell::Null, Cell::Decimal("1.50".into())],
        )
        .unwrap();
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"a\":1,\"b\":null,\"c\":\"1.50\"}\n"
        );
    }
}
