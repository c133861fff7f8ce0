//! Result columns and values in a form every output format can write: a [`Column`] has a
//! name and a [`Kind`] (decided once per query from the database's column type), a [`Cell`] is
//! one value borrowed from the row it was read from (no allocation per value). The text and
//! JSON forms of a value are written into the caller's buffers.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// The type of a result column, from the database's column type: how its values are read and
/// which Parquet type holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Integers of at most 32 bits (signed), or unsigned ones of at most 24.
    Int32,
    Int64,
    /// MySQL `BIGINT UNSIGNED`.
    UInt64,
    Float64,
    /// An exact decimal of known precision and scale (PostgreSQL `NUMERIC(p, s)`, p ≤ 38).
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// An exact decimal of unknown scale (MySQL `DECIMAL`, a bare `NUMERIC`): kept as text.
    DecimalText,
    Text,
    Bytes,
    /// A date and time without a time zone.
    DateTime,
    /// A point in time, read in UTC (PostgreSQL `TIMESTAMPTZ`, MySQL `TIMESTAMP`).
    TimestampUtc,
    Date,
    Time,
    Json,
    Uuid,
    /// Another type: read as text where the driver can, else an error naming the type.
    Other,
}

/// One column of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    /// An integer column holding unsigned values (MySQL `UNSIGNED`, PostgreSQL `OID`).
    pub unsigned: bool,
    /// The database's name of the type, for messages.
    pub db_type: String,
}

/// A value of a result row, borrowed from the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// An exact decimal read as a number (PostgreSQL `NUMERIC`).
    Decimal(rust_decimal::Decimal),
    /// Text, and exact decimals a database sends as text (MySQL `DECIMAL`).
    Text(&'a str),
    Bytes(&'a [u8]),
    DateTime(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    Uuid(sqlx::types::Uuid),
    /// A JSON document as the database sent it.
    Json(&'a str),
}

/// `YYYY-MM-DD`.
pub fn push_date(out: &mut Vec<u8>, d: &NaiveDate) {
    let y = d.year();
    if (0..=9999).contains(&y) {
        push_digits(out, y as u32, 4);
    } else {
        out.extend_from_slice(d.format("%Y").to_string().as_bytes());
    }
    out.push(b'-');
    push_digits(out, d.month(), 2);
    out.push(b'-');
    push_digits(out, d.day(), 2);
}

/// `HH:MM:SS`, with six fraction digits only when there is a fraction.
pub fn push_time(out: &mut Vec<u8>, t: &NaiveTime) {
    let nanos = t.nanosecond();
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    // A leap second is kept in the nanoseconds (chrono's convention): it shows as :60.
    push_digits(out, t.second() + nanos / 1_000_000_000, 2);
    if nanos != 0 {
        out.push(b'.');
        push_digits(out, (nanos % 1_000_000_000) / 1000, 6);
    }
}

/// `YYYY-MM-DD HH:MM:SS`, with a fraction only when there is one.
pub fn push_datetime(out: &mut Vec<u8>, t: &NaiveDateTime) {
    push_date(out, &t.date());
    out.push(b' ');
    push_time(out, &t.time());
}

/// `n` as exactly `width` decimal digits (zero-padded).
fn push_digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (start..start + width).rev() {
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn push_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl<'a> Cell<'a> {
    /// The text form used by CSV, Parquet text columns and outputs: booleans `0`/`1`, dates
    /// `YYYY-MM-DD HH:MM:SS`, bytes as hex, JSON compact. `None` for NULL. Text is returned as
    /// is; anything else is written into `scratch` (cleared first).
    pub fn text<'s>(&'s self, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        scratch.clear();
        match self {
            Cell::Null => return None,
            Cell::Text(s) => return Some(s.as_bytes()),
            Cell::Bool(b) => return Some(if *b { b"1" } else { b"0" }),
            Cell::Int(i) => scratch.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Cell::UInt(u) => scratch.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
            Cell::Float(f) => push_display(scratch, f),
            Cell::Decimal(d) => push_display(scratch, d),
            Cell::Bytes(b) => {
                scratch.reserve(b.len() * 2);
                for x in *b {
                    scratch.push(HEX[(x >> 4) as usize]);
                    scratch.push(HEX[(x & 15) as usize]);
                }
            }
            Cell::DateTime(t) => push_datetime(scratch, t),
            Cell::Date(d) => push_date(scratch, d),
            Cell::Time(t) => push_time(scratch, t),
            Cell::Uuid(u) => push_display(scratch, u.hyphenated()),
            Cell::Json(j) => match serde_json::from_str::<serde_json::Value>(j) {
                Ok(v) => {
                    // Serializing a Value into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *scratch, &v);
                }
                Err(_) => return Some(j.as_bytes()),
            },
        }
        Some(scratch)
    }

    /// The text form as an owned string (see [`Cell::text`]).
    pub fn to_text(&self) -> Option<String> {
        let mut buf = Vec::new();
        self.text(&mut buf)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Appends the JSON form used by JSON lines: numbers and booleans as such, JSON documents
    /// as JSON, everything else as a string of its text form.
    pub fn write_json(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        match self {
            Cell::Null => out.extend_from_slice(b"null"),
            Cell::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Cell::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Cell::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
            // serde_json writes non-finite numbers as null.
            Cell::Float(f) => {
                let _ = serde_json::to_writer(&mut *out, f);
            }
            Cell::Text(s) => {
                let _ = serde_json::to_writer(&mut *out, s);
            }
            Cell::Json(j) => match serde_json::from_str::<serde_json::Value>(j) {
                Ok(v) => {
                    let _ = serde_json::to_writer(&mut *out, &v);
                }
                Err(_) => {
                    let _ = serde_json::to_writer(&mut *out, j);
                }
            },
            other => {
                let text = other.text(scratch).unwrap_or_default();
                let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(text));
            }
        }
    }

    /// The JSON value (for outputs).
    pub fn json(&self) -> serde_json::Value {
        let mut out = Vec::new();
        self.write_json(&mut out, &mut Vec::new());
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: Cell) -> String {
        c.to_text().unwrap_or_else(|| "<null>".into())
    }

    #[test]
    fn text_forms() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        let t = d.and_hms_micro_opt(3, 4, 5, 60).unwrap();
        assert_eq!(text(Cell::DateTime(t)), "2026-01-02 03:04:05.000060");
        assert_eq!(
            text(Cell::DateTime(d.and_hms_opt(23, 59, 59).unwrap())),
            "2026-01-02 23:59:59"
        );
        assert_eq!(
            text(Cell::Date(NaiveDate::from_ymd_opt(33, 12, 31).unwrap())),
            "0033-12-31"
        );
        assert_eq!(text(Cell::Int(-42)), "-42");
        assert_eq!(text(Cell::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(text(Cell::Float(0.1)), "0.1");
        assert_eq!(text(Cell::Bool(true)), "1");
        assert_eq!(text(Cell::Bytes(&[0, 0xab, 0x10])), "00ab10");
        assert_eq!(text(Cell::Json("{\"a\": [1, 2]}")), "{\"a\":[1,2]}");
        assert_eq!(
            text(Cell::Decimal(rust_decimal::Decimal::new(-1050, 3))),
            "-1.050"
        );
        assert_eq!(text(Cell::Null), "<null>");
    }

    #[test]
    fn json_forms() {
        let mut out = Vec::new();
        for c in [
            Cell::Null,
            Cell::Bool(false),
            Cell::Float(f64::NAN),
            Cell::Text("a\"\n"),
            Cell::Json("{\"a\":\n1}"),
            Cell::Decimal(rust_decimal::Decimal::new(150, 2)),
        ] {
            c.write_json(&mut out, &mut Vec::new());
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "null false null \"a\\\"\\n\" {\"a\":1} \"1.50\" "
        );
    }
}
