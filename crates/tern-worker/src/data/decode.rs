//! Reading result values of the three databases: the [`Kind`] of each column, decided once per
//! query from the driver's column type, then each value decoded straight from the row's bytes
//! by that kind (no type lookup, no allocation per value).

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use sqlx::decode::Decode;
use sqlx::mysql::{MySql, MySqlRow};
use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{Column as _, Row, TypeInfo, ValueRef};

use super::cells::{Cell, Column, Kind};

fn err(i: usize, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: e.to_string().into(),
    }
}

/// Decodes a raw value without the driver's type check (the kind was chosen from the type).
fn dec<'r, T: Decode<'r, DB>, DB: sqlx::Database>(
    i: usize,
    raw: <DB as sqlx::Database>::ValueRef<'r>,
) -> Result<T, sqlx::Error> {
    T::decode(raw).map_err(|e| err(i, e))
}

fn column(name: &str, kind: Kind, db_type: &str) -> Column {
    Column {
        name: name.to_string(),
        kind,
        unsigned: db_type.ends_with("UNSIGNED") || db_type == "OID",
        db_type: db_type.to_string(),
    }
}

/// A binary integer of 1 to 8 bytes in the given byte order, sign-extended unless `unsigned`.
fn int_bytes(
    i: usize,
    b: &[u8],
    big_endian: bool,
    unsigned: bool,
) -> Result<Cell<'static>, sqlx::Error> {
    if b.is_empty() || b.len() > 8 {
        return Err(err(i, format!("an integer of {} bytes", b.len())));
    }
    let mut v: u64 = 0;
    for k in 0..b.len() {
        let byte = if big_endian { b[k] } else { b[b.len() - 1 - k] };
        v = (v << 8) | byte as u64;
    }
    if unsigned {
        return Ok(Cell::UInt(v));
    }
    let shift = 64 - 8 * b.len() as u32;
    Ok(Cell::Int(((v << shift) as i64) >> shift))
}

/// The kind of a MySQL / MariaDB column, by the driver's type name.
pub fn mysql_kind(type_name: &str) -> Kind {
    match type_name {
        "BOOLEAN" => Kind::Bool,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "YEAR" | "TINYINT UNSIGNED"
        | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" => Kind::Int32,
        "BIGINT" | "INT UNSIGNED" => Kind::Int64,
        "BIGINT UNSIGNED" => Kind::UInt64,
        "FLOAT" | "DOUBLE" => Kind::Float64,
        // The driver does not expose the scale of a DECIMAL column: kept as its exact text.
        "DECIMAL" => Kind::DecimalText,
        "DATETIME" => Kind::DateTime,
        "TIMESTAMP" => Kind::TimestampUtc,
        "DATE" => Kind::Date,
        "TIME" => Kind::Time,
        "JSON" => Kind::Json,
        "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BINARY" | "VARBINARY" | "BIT"
        | "GEOMETRY" => Kind::Bytes,
        _ => Kind::Text,
    }
}

/// The columns of a MySQL / MariaDB result.
pub fn mysql_columns(cols: &[sqlx::mysql::MySqlColumn]) -> Vec<Column> {
    cols.iter()
        .map(|c| {
            let t = c.type_info().name();
            column(c.name(), mysql_kind(t), t)
        })
        .collect()
}

/// Reads column `i` of a MySQL / MariaDB row (queries use the binary protocol).
pub fn mysql_cell<'r>(row: &'r MySqlRow, i: usize, col: &Column) -> Result<Cell<'r>, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    Ok(match col.kind {
        Kind::Bool => Cell::Bool(dec::<bool, MySql>(i, raw)?),
        Kind::Int32 | Kind::Int64 | Kind::UInt64 => {
            int_bytes(i, dec::<&[u8], MySql>(i, raw)?, false, col.unsigned)?
        }
        Kind::Float64 => Cell::Float(dec::<f64, MySql>(i, raw)?),
        Kind::DateTime => Cell::DateTime(dec::<NaiveDateTime, MySql>(i, raw)?),
        Kind::TimestampUtc => {
            Cell::DateTime(dec::<chrono::DateTime<chrono::Utc>, MySql>(i, raw)?.naive_utc())
        }
        Kind::Date => Cell::Date(dec::<NaiveDate, MySql>(i, raw)?),
        Kind::Time => Cell::Time(dec::<NaiveTime, MySql>(i, raw)?),
        Kind::Bytes => Cell::Bytes(dec::<&[u8], MySql>(i, raw)?),
        Kind::Json => Cell::Json(dec::<&str, MySql>(i, raw)?),
        // Text (and DECIMAL, sent as text): bytes that are not UTF-8 are kept as bytes.
        _ => {
            let b = dec::<&[u8], MySql>(i, raw)?;
            match std::str::from_utf8(b) {
                Ok(s) => Cell::Text(s),
                Err(_) => Cell::Bytes(b),
            }
        }
    })
}

/// The kind of a PostgreSQL column, by type name and (for `NUMERIC`) its type modifier.
pub fn pg_kind(type_name: &str, typmod: Option<i32>) -> Kind {
    match type_name {
        "BOOL" => Kind::Bool,
        "INT2" | "INT4" => Kind::Int32,
        "INT8" | "OID" => Kind::Int64,
        "FLOAT4" | "FLOAT8" => Kind::Float64,
        "NUMERIC" => match typmod.and_then(numeric_precision_scale) {
            Some((precision, scale)) => Kind::Decimal { precision, scale },
            None => Kind::DecimalText,
        },
        "TIMESTAMP" => Kind::DateTime,
        "TIMESTAMPTZ" => Kind::TimestampUtc,
        "DATE" => Kind::Date,
        "TIME" => Kind::Time,
        "JSON" | "JSONB" => Kind::Json,
        "BYTEA" => Kind::Bytes,
        "UUID" => Kind::Uuid,
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" | "CITEXT" => Kind::Text,
        _ => Kind::Other,
    }
}

/// Precision and scale of `NUMERIC(p, s)` from its type modifier (`((p << 16) | s) + 4`), when
/// they fit a 128-bit decimal.
fn numeric_precision_scale(typmod: i32) -> Option<(u8, i8)> {
    if typmod < 4 {
        return None;
    }
    let m = typmod - 4;
    let precision = (m >> 16) & 0xffff;
    let scale = m & 0xffff;
    (1..=38)
        .contains(&precision)
        .then_some((precision as u8, scale.min(precision) as i8))
}

/// The columns of a PostgreSQL result; `typmod` gives the type modifier of a column (known for
/// columns read straight from a table).
pub fn pg_columns(
    cols: &[sqlx::postgres::PgColumn],
    typmod: impl Fn(usize) -> Option<i32>,
) -> Vec<Column> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| {
            let t = c.type_info().name();
            let kind = pg_kind(t, if t == "NUMERIC" { typmod(i) } else { None });
            column(c.name(), kind, t)
        })
        .collect()
}

/// Reads column `i` of a PostgreSQL row (results come in the binary format).
pub fn pg_cell<'r>(row: &'r PgRow, i: usize, col: &Column) -> Result<Cell<'r>, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    Ok(match col.kind {
        Kind::Bool => Cell::Bool(dec::<bool, Postgres>(i, raw)?),
        Kind::Int32 | Kind::Int64 | Kind::UInt64 => {
            let b = dec::<&[u8], Postgres>(i, raw)?;
            match int_bytes(i, b, true, col.unsigned)? {
                // An OID is a 32-bit unsigned number: Int64 holds it.
                Cell::UInt(u) => Cell::Int(u as i64),
                c => c,
            }
        }
        Kind::Float64 => {
            let b = dec::<&[u8], Postgres>(i, raw)?;
            Cell::Float(match <[u8; 4]>::try_from(b) {
                Ok(b4) => f32::from_be_bytes(b4) as f64,
                Err(_) => {
                    f64::from_be_bytes(b.try_into().map_err(|_| err(i, "a float of odd size"))?)
                }
            })
        }
        Kind::Decimal { .. } | Kind::DecimalText => {
            Cell::Decimal(dec::<rust_decimal::Decimal, Postgres>(i, raw)?)
        }
        Kind::DateTime => Cell::DateTime(dec::<NaiveDateTime, Postgres>(i, raw)?),
        Kind::TimestampUtc => {
            Cell::DateTime(dec::<chrono::DateTime<chrono::Utc>, Postgres>(i, raw)?.naive_utc())
        }
        Kind::Date => Cell::Date(dec::<NaiveDate, Postgres>(i, raw)?),
        Kind::Time => Cell::Time(dec::<NaiveTime, Postgres>(i, raw)?),
        Kind::Json => {
            let b = dec::<&[u8], Postgres>(i, raw)?;
            // JSONB comes with a version byte (1) before the text (JSON text never starts so).
            let b = b.strip_prefix(&[1u8]).unwrap_or(b);
            Cell::Json(std::str::from_utf8(b).map_err(|e| err(i, e))?)
        }
        Kind::Bytes => Cell::Bytes(dec::<&[u8], Postgres>(i, raw)?),
        Kind::Uuid => Cell::Uuid(dec::<sqlx::types::Uuid, Postgres>(i, raw)?),
        Kind::Text => Cell::Text(dec::<&str, Postgres>(i, raw)?),
        _ => Cell::Text(row.try_get::<&str, _>(i).map_err(|e| {
            err(
                i,
                format!(
                    "column type {} cannot be exported yet; cast it to text in the query ({e})",
                    col.db_type
                ),
            )
        })?),
    })
}

/// The kind of a SQLite column, by its declared type (values may still differ per row).
pub fn sqlite_kind(type_name: &str) -> Kind {
    match type_name {
        "BOOLEAN" => Kind::Bool,
        "INTEGER" => Kind::Int64,
        "REAL" | "NUMERIC" => Kind::Float64,
        "BLOB" => Kind::Bytes,
        "DATETIME" => Kind::DateTime,
        "DATE" => Kind::Date,
        "TIME" => Kind::Time,
        // TEXT, and NULL (an expression whose type is not known): text holds any value.
        _ => Kind::Text,
    }
}

/// The columns of a SQLite result.
pub fn sqlite_columns(cols: &[sqlx::sqlite::SqliteColumn]) -> Vec<Column> {
    cols.iter()
        .map(|c| {
            let t = c.type_info().name();
            column(c.name(), sqlite_kind(t), t)
        })
        .collect()
}

/// Reads column `i` of a SQLite row: by the value's own storage class, with the column's kind
/// turning integers into booleans and text into dates where it parses.
pub fn sqlite_cell<'r>(
    row: &'r SqliteRow,
    i: usize,
    col: &Column,
) -> Result<Cell<'r>, sqlx::Error> {
    let raw = || row.try_get_raw(i);
    #[derive(PartialEq)]
    enum Storage {
        Null,
        Integer,
        Real,
        Blob,
        Text,
    }
    let storage = {
        let r = raw()?;
        if r.is_null() {
            Storage::Null
        } else {
            match r.type_info().name() {
                "INTEGER" | "BOOLEAN" => Storage::Integer,
                "REAL" | "NUMERIC" => Storage::Real,
                "BLOB" => Storage::Blob,
                _ => Storage::Text,
            }
        }
    };
    let text = || dec::<&str, Sqlite>(i, raw()?);
    Ok(match (col.kind, storage) {
        (_, Storage::Null) => Cell::Null,
        (Kind::Bool, Storage::Integer) => Cell::Bool(dec::<bool, Sqlite>(i, raw()?)?),
        (Kind::DateTime, Storage::Text) => match dec::<NaiveDateTime, Sqlite>(i, raw()?) {
            Ok(t) => Cell::DateTime(t),
            Err(_) => Cell::Text(text()?),
        },
        (Kind::Date, Storage::Text) => match dec::<NaiveDate, Sqlite>(i, raw()?) {
            Ok(d) => Cell::Date(d),
            Err(_) => Cell::Text(text()?),
        },
        (Kind::Time, Storage::Text) => match dec::<NaiveTime, Sqlite>(i, raw()?) {
            Ok(t) => Cell::Time(t),
            Err(_) => Cell::Text(text()?),
        },
        (_, Storage::Integer) => Cell::Int(dec::<i64, Sqlite>(i, raw()?)?),
        (_, Storage::Real) => Cell::Float(dec::<f64, Sqlite>(i, raw()?)?),
        (_, Storage::Blob) => Cell::Bytes(dec::<&[u8], Sqlite>(i, raw()?)?),
        (_, Storage::Text) => Cell::Text(text()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_type_modifiers() {
        // NUMERIC(10, 2) and NUMERIC(38, 0); a bare NUMERIC (-1) and NUMERIC(50, 5) are text.
        assert_eq!(
            pg_kind("NUMERIC", Some(((10 << 16) | 2) + 4)),
            Kind::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            pg_kind("NUMERIC", Some((38 << 16) + 4)),
            Kind::Decimal {
                precision: 38,
                scale: 0
            }
        );
        assert_eq!(pg_kind("NUMERIC", Some(-1)), Kind::DecimalText);
        assert_eq!(pg_kind("NUMERIC", None), Kind::DecimalText);
        assert_eq!(
            pg_kind("NUMERIC", Some(((50 << 16) | 5) + 4)),
            Kind::DecimalText
        );
    }
}
