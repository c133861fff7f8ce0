//! One database value in a form every output format can write, read from a row of any of the
//! three databases by its column type.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// A value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Exact decimals keep their text.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    DateTime(NaiveDateTime),
    Date(NaiveDate),
    Time(NaiveTime),
    Json(serde_json::Value),
}

/// `YYYY-MM-DD HH:MM:SS`, with a fraction only when there is one.
pub fn datetime_text(t: &NaiveDateTime) -> String {
    if t.and_utc().timestamp_subsec_nanos() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

impl Cell {
    /// The text form used by CSV and outputs: booleans `0`/`1`, dates `YYYY-MM-DD HH:MM:SS`,
    /// bytes as hex. `None` for NULL.
    pub fn text(&self) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            Cell::Int(i) => i.to_string(),
            Cell::UInt(u) => u.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Decimal(d) | Cell::Text(d) => d.clone(),
            Cell::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            Cell::DateTime(t) => datetime_text(t),
            Cell::Date(d) => d.format("%Y-%m-%d").to_string(),
            Cell::Time(t) => t.format("%H:%M:%S").to_string(),
            Cell::Json(v) => v.to_string(),
        })
    }

    /// The JSON form used by JSON lines and outputs.
    pub fn json(&self) -> serde_json::Value {
        use serde_json::Value as V;
        match self {
            Cell::Null => V::Null,
            Cell::Bool(b) => V::Bool(*b),
            Cell::Int(i) => V::from(*i),
            Cell::UInt(u) => V::from(*u),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map(V::Number)
                .unwrap_or(V::Null),
            Cell::Json(v) => v.clone(),
            other => V::String(other.text().unwrap_or_default()),
        }
    }
}

fn err(i: usize, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: e.to_string().into(),
    }
}

/// Reads column `i` of a MySQL / MariaDB row.
pub fn mysql_cell(row: &sqlx::mysql::MySqlRow, i: usize) -> Result<Cell, sqlx::Error> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(Cell::Null);
    }
    let ty = row.column(i).type_info().name().to_ascii_uppercase();
    Ok(match ty.as_str() {
        "BOOLEAN" => Cell::Bool(row.try_get(i)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
            Cell::Int(row.try_get(i)?)
        }
        t if t.ends_with("UNSIGNED") => Cell::UInt(row.try_get(i)?),
        "FLOAT" => Cell::Float(row.try_get::<f32, _>(i)? as f64),
        "DOUBLE" => Cell::Float(row.try_get(i)?),
        "DECIMAL" => Cell::Decimal(row.try_get::<rust_decimal::Decimal, _>(i)?.to_string()),
        "DATETIME" => Cell::DateTime(row.try_get(i)?),
        "TIMESTAMP" => Cell::DateTime(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)?
                .naive_utc(),
        ),
        "DATE" => Cell::Date(row.try_get(i)?),
        "TIME" => Cell::Time(row.try_get(i)?),
        "JSON" => Cell::Json(row.try_get(i)?),
        "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BINARY" | "VARBINARY" | "BIT"
        | "GEOMETRY" => Cell::Bytes(row.try_get(i)?),
        _ => match row.try_get::<String, _>(i) {
            Ok(s) => Cell::Text(s),
            Err(_) => Cell::Bytes(row.try_get(i).map_err(|e| err(i, e))?),
        },
    })
}

/// Reads column `i` of a PostgreSQL row.
pub fn pg_cell(row: &sqlx::postgres::PgRow, i: usize) -> Result<Cell, sqlx::Error> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(Cell::Null);
    }
    let ty = row.column(i).type_info().name().to_ascii_uppercase();
    Ok(match ty.as_str() {
        "BOOL" => Cell::Bool(row.try_get(i)?),
        "INT2" => Cell::Int(row.try_get::<i16, _>(i)? as i64),
        "INT4" => Cell::Int(row.try_get::<i32, _>(i)? as i64),
        "INT8" => Cell::Int(row.try_get(i)?),
        "OID" => Cell::Int(row.try_get::<sqlx::postgres::types::Oid, _>(i)?.0 as i64),
        "FLOAT4" => Cell::Float(row.try_get::<f32, _>(i)? as f64),
        "FLOAT8" => Cell::Float(row.try_get(i)?),
        "NUMERIC" => Cell::Decimal(row.try_get::<rust_decimal::Decimal, _>(i)?.to_string()),
        "TIMESTAMP" => Cell::DateTime(row.try_get(i)?),
        "TIMESTAMPTZ" => Cell::DateTime(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)?
                .naive_utc(),
        ),
        "DATE" => Cell::Date(row.try_get(i)?),
        "TIME" => Cell::Time(row.try_get(i)?),
        "JSON" | "JSONB" => Cell::Json(row.try_get(i)?),
        "BYTEA" => Cell::Bytes(row.try_get(i)?),
        "UUID" => Cell::Text(row.try_get::<sqlx::types::Uuid, _>(i)?.to_string()),
        _ => Cell::Text(row.try_get(i).map_err(|e| {
            err(
                i,
                format!(
                    "column type {ty} cannot be exported yet; cast it to text in the query ({e})"
                ),
            )
        })?),
    })
}

/// Reads column `i` of a SQLite row (SQLite types are per value).
pub fn sqlite_cell(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<Cell, sqlx::Error> {
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let declared = row.column(i).type_info().name().to_ascii_uppercase();
    let actual = raw.type_info().name().to_ascii_uppercase();
    Ok(match (declared.as_str(), actual.as_str()) {
        ("BOOLEAN", "INTEGER") => Cell::Bool(row.try_get(i)?),
        ("DATETIME", "TEXT") => match row.try_get::<NaiveDateTime, _>(i) {
            Ok(t) => Cell::DateTime(t),
            Err(_) => Cell::Text(row.try_get(i)?),
        },
        (_, "INTEGER") => Cell::Int(row.try_get(i)?),
        (_, "REAL") => Cell::Float(row.try_get(i)?),
        (_, "BLOB") => Cell::Bytes(row.try_get(i)?),
        _ => Cell::Text(row.try_get(i)?),
    })
}
