//! JSON lines: one object per row, keys in column order, values typed (see
//! [`Cell::write_json`]). The keys are encoded once; each line is built in a reused buffer.

use std::io::Write;

use super::super::cells::{Cell, Column};
use super::super::db::RowSink;
use super::super::error::DataError;
use super::{io, RowWriter, BUFFER};

pub struct JsonLines<W: Write> {
    out: std::io::BufWriter<W>,
    /// `"name":` of each column, JSON-escaped.
    keys: Vec<Vec<u8>>,
    line: Vec<u8>,
    scratch: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines {
            out: std::io::BufWriter::with_capacity(BUFFER, out),
            keys: Vec::new(),
            line: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl<W: Write + Send> RowSink for JsonLines<W> {
    fn start(&mut self, columns: &[Column]) -> Result<(), DataError> {
        self.keys = columns
            .iter()
            .map(|c| {
                let mut k = serde_json::to_vec(&c.name).unwrap_or_default();
                k.push(b':');
                k
            })
            .collect();
        Ok(())
    }

    fn value(&mut self, i: usize, cell: Cell<'_>) -> Result<(), DataError> {
        self.line.push(if i == 0 { b'{' } else { b',' });
        self.line.extend_from_slice(&self.keys[i]);
        cell.write_json(&mut self.line, &mut self.scratch);
        Ok(())
    }

    fn end_row(&mut self) -> Result<(), DataError> {
        if self.line.is_empty() {
            self.line.push(b'{');
        }
        self.line.extend_from_slice(b"}\n");
        let r = self.out.write_all(&self.line).map_err(io);
        self.line.clear();
        r
    }
}

impl<W: Write + Send> RowWriter for JsonLines<W> {
    fn finish(&mut self) -> Result<(), DataError> {
        self.out.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::cells::Kind;
    use super::super::tests::{columns, feed};
    use super::*;

    #[test]
    fn json_lines_keep_types() {
        let mut buf = Vec::new();
        {
            let mut w = JsonLines::new(&mut buf);
            feed(
                &mut w,
                &columns(&["a", "b", "c\""], Kind::Text),
                &[
                    vec![
                        Cell::Int(1),
                        Cell::Null,
                        Cell::Decimal(rust_decimal::Decimal::new(150, 2)),
                    ],
                    vec![Cell::Float(0.5), Cell::Bool(true), Cell::Text("x")],
                ],
            );
        }
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"a\":1,\"b\":null,\"c\\\"\":\"1.50\"}\n{\"a\":0.5,\"b\":true,\"c\\\"\":\"x\"}\n"
        );
    }
}
