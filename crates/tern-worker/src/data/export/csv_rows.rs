//! CSV: RFC 4180 quoting through the `csv` crate, with the task's delimiter, quote, line ending
//! and NULL text. Values are written field by field from their text form (no record built).

use std::io::Write;

use tern_core::CsvOptions;

use super::super::cells::{Cell, Column};
use super::super::db::RowSink;
use super::super::error::DataError;
use super::{io, RowWriter, BUFFER};

pub struct CsvRows<W: Write> {
    out: csv::Writer<W>,
    header: bool,
    null_text: Vec<u8>,
    scratch: Vec<u8>,
}

impl<W: Write> CsvRows<W> {
    /// Writes into `w` through a buffer of its own.
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
            .buffer_capacity(BUFFER)
            .from_writer(w);
        CsvRows {
            out,
            header: o.header,
            null_text: o.null_text.clone().into_bytes(),
            scratch: Vec::with_capacity(64),
        }
    }
}

impl<W: Write + Send> RowSink for CsvRows<W> {
    fn start(&mut self, columns: &[Column]) -> Result<(), DataError> {
        if self.header {
            self.out
                .write_record(columns.iter().map(|c| c.name.as_bytes()))
                .map_err(io)?;
        }
        Ok(())
    }

    fn value(&mut self, _i: usize, cell: Cell<'_>) -> Result<(), DataError> {
        let field = cell.text(&mut self.scratch).unwrap_or(&self.null_text);
        self.out.write_field(field).map_err(io)
    }

    fn end_row(&mut self) -> Result<(), DataError> {
        self.out.write_record(None::<&[u8]>).map_err(io)
    }
}

impl<W: Write + Send> RowWriter for CsvRows<W> {
    fn finish(&mut self) -> Result<(), DataError> {
        self.out.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::cells::Kind;
    use super::super::tests::{columns, feed};
    use super::*;

    fn csv_text(o: &CsvOptions, rows: &[Vec<Cell>]) -> String {
        let mut buf = Vec::new();
        {
            let mut w = CsvRows::new(&mut buf, o);
            feed(&mut w, &columns(&["id", "name"], Kind::Text), rows);
        }
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn csv_quotes_per_rfc_4180_and_honours_the_options() {
        let rows = vec![
            vec![Cell::Int(1), Cell::Text("O'Brien, \"Jr\"")],
            vec![Cell::Int(2), Cell::Null],
            vec![Cell::Bool(true), Cell::Text("Łódź\nnew line")],
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
        assert_eq!(csv_text(&CsvOptions::default(), &[]), "id,name\n");
    }
}
