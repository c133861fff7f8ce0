//! Parquet through Arrow: one builder per column collects a batch of up to [`BATCH_ROWS`] rows (or
//! about [`BATCH_BYTES`] of values), which the Arrow writer encodes into the row group in
//! progress; it closes a row group at [`GROUP_ROWS`] rows or about [`GROUP_BYTES`] encoded. Memory
//! stays bounded by one batch of values and one encoded row group whatever the row count. The schema comes from the columns' kinds (see
//! [`arrow_type`]); every column is nullable.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int32Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{Datelike, NaiveDate, Timelike};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tern_core::ParquetCompression;

use super::super::cells::{Cell, Column, Kind};
use super::super::db::RowSink;
use super::super::error::DataError;
use super::{io, RowWriter};

/// Most rows in one row group.
pub const GROUP_ROWS: usize = 64 * 1024;
/// A row group is also closed once it would take about this much encoded.
pub const GROUP_BYTES: usize = 16 * 1024 * 1024;
/// Most rows collected before they are encoded.
pub const BATCH_ROWS: usize = 8 * 1024;
/// A batch is also encoded once its values take about this much memory.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The Arrow type that holds a column of `kind`.
pub fn arrow_type(kind: Kind) -> DataType {
    match kind {
        Kind::Bool => DataType::Boolean,
        Kind::Int32 => DataType::Int32,
        Kind::Int64 => DataType::Int64,
        Kind::UInt64 => DataType::UInt64,
        Kind::Float64 => DataType::Float64,
        Kind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        Kind::Bytes => DataType::Binary,
        Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
        Kind::TimestampUtc => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::Date => DataType::Date32,
        Kind::Time => DataType::Time64(TimeUnit::Microsecond),
        Kind::DecimalText | Kind::Text | Kind::Json | Kind::Uuid | Kind::Other => DataType::Utf8,
    }
}

/// The builder of one column.
enum Builder {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Builder {
        match kind {
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Int32 => Builder::Int32(Int32Builder::new()),
            Kind::Int64 => Builder::Int64(Int64Builder::new()),
            Kind::UInt64 => Builder::UInt64(UInt64Builder::new()),
            Kind::Float64 => Builder::Float64(Float64Builder::new()),
            Kind::Decimal { precision, scale } => Builder::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(precision, scale)
                    .unwrap_or_default(),
                scale,
            ),
            Kind::Bytes => Builder::Binary(BinaryBuilder::new()),
            Kind::DateTime => Builder::Timestamp(TimestampMicrosecondBuilder::new()),
            Kind::TimestampUtc => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            Kind::Date => Builder::Date(Date32Builder::new()),
            Kind::Time => Builder::Time(Time64MicrosecondBuilder::new()),
            Kind::DecimalText | Kind::Text | Kind::Json | Kind::Uuid | Kind::Other => {
                Builder::Text(StringBuilder::new())
            }
        }
    }

    fn as_dyn(&mut self) -> &mut dyn ArrayBuilder {
        match self {
            Builder::Bool(b) => b,
            Builder::Int32(b) => b,
            Builder::Int64(b) => b,
            Builder::UInt64(b) => b,
            Builder::Float64(b) => b,
            Builder::Decimal(b, _) => b,
            Builder::Text(b) => b,
            Builder::Binary(b) => b,
            Builder::Date(b) => b,
            Builder::Timestamp(b) => b,
            Builder::Time(b) => b,
        }
    }

    /// Appends `cell`; returns the bytes it takes, or `None` when the cell does not fit the
    /// column's type.
    fn append(&mut self, cell: Cell<'_>, scratch: &mut Vec<u8>) -> Option<usize> {
        if let Cell::Null = cell {
            match self {
                Builder::Bool(b) => b.append_null(),
                Builder::Int32(b) => b.append_null(),
                Builder::Int64(b) => b.append_null(),
                Builder::UInt64(b) => b.append_null(),
                Builder::Float64(b) => b.append_null(),
                Builder::Decimal(b, _) => b.append_null(),
                Builder::Text(b) => b.append_null(),
                Builder::Binary(b) => b.append_null(),
                Builder::Date(b) => b.append_null(),
                Builder::Timestamp(b) => b.append_null(),
                Builder::Time(b) => b.append_null(),
            }
            return Some(1);
        }
        match self {
            Builder::Bool(b) => b.append_value(match cell {
                Cell::Bool(v) => v,
                Cell::Int(i) => i != 0,
                Cell::UInt(u) => u != 0,
                _ => return None,
            }),
            Builder::Int32(b) => b.append_value(match cell {
                Cell::Int(i) => i32::try_from(i).ok()?,
                Cell::UInt(u) => i32::try_from(u).ok()?,
                Cell::Bool(v) => v as i32,
                _ => return None,
            }),
            Builder::Int64(b) => b.append_value(match cell {
                Cell::Int(i) => i,
                Cell::UInt(u) => i64::try_from(u).ok()?,
                Cell::Bool(v) => v as i64,
                _ => return None,
            }),
            Builder::UInt64(b) => b.append_value(match cell {
                Cell::UInt(u) => u,
                Cell::Int(i) => u64::try_from(i).ok()?,
                _ => return None,
            }),
            Builder::Float64(b) => b.append_value(match cell {
                Cell::Float(f) => f,
                Cell::Int(i) => i as f64,
                Cell::UInt(u) => u as f64,
                _ => return None,
            }),
            Builder::Decimal(b, scale) => b.append_value(match cell {
                Cell::Decimal(d) => decimal_at_scale(d, *scale)?,
                Cell::Int(i) => (i as i128).checked_mul(10i128.checked_pow(*scale as u32)?)?,
                Cell::Text(t) => decimal_at_scale(t.parse().ok()?, *scale)?,
                _ => return None,
            }),
            Builder::Text(b) => {
                let text = match &cell {
                    Cell::Text(t) => t,
                    other => std::str::from_utf8(other.text(scratch)?).ok()?,
                };
                b.append_value(text);
                return Some(text.len() + 4);
            }
            Builder::Binary(b) => {
                let bytes = match cell {
                    Cell::Bytes(v) => v,
                    Cell::Text(t) => t.as_bytes(),
                    _ => return None,
                };
                b.append_value(bytes);
                return Some(bytes.len() + 4);
            }
            Builder::Date(b) => b.append_value(match cell {
                Cell::Date(d) => days_since_epoch(&d),
                Cell::DateTime(t) => days_since_epoch(&t.date()),
                _ => return None,
            }),
            Builder::Timestamp(b) => b.append_value(match cell {
                Cell::DateTime(t) => t.and_utc().timestamp_micros(),
                Cell::Date(d) => d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros(),
                _ => return None,
            }),
            Builder::Time(b) => b.append_value(match cell {
                Cell::Time(t) => {
                    t.num_seconds_from_midnight() as i64 * 1_000_000
                        + (t.nanosecond() / 1000) as i64
                }
                _ => return None,
            }),
        }
        Some(8)
    }
}

/// The unscaled value of `d` at `scale` (rounded half away from zero if it has more digits).
fn decimal_at_scale(mut d: rust_decimal::Decimal, scale: i8) -> Option<i128> {
    let scale = u32::try_from(scale).ok()?;
    if d.scale() > scale {
        d = d.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    }
    d.mantissa()
        .checked_mul(10i128.checked_pow(scale - d.scale())?)
}

fn days_since_epoch(d: &NaiveDate) -> i32 {
    // 719,163 days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
    d.num_days_from_ce() - 719_163
}

/// Writes rows as Parquet into `W` (written out at every row group and at the end).
pub struct ParquetRows<W: Write + Send> {
    out: Option<W>,
    props: Option<WriterProperties>,
    writer: Option<ArrowWriter<W>>,
    schema: SchemaRef,
    columns: Vec<Column>,
    builders: Vec<Builder>,
    /// Rows and value bytes in the current batch.
    rows: usize,
    bytes: usize,
    /// Rows written before the current batch.
    done: u64,
    scratch: Vec<u8>,
}

impl<W: Write + Send> ParquetRows<W> {
    pub fn new(out: W, compression: ParquetCompression) -> ParquetRows<W> {
        let compression = match compression {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::None => Compression::UNCOMPRESSED,
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(GROUP_ROWS))
            .set_max_row_group_bytes(Some(GROUP_BYTES))
            .set_created_by(format!("tern {}", env!("CARGO_PKG_VERSION")))
            .build();
        ParquetRows {
            out: Some(out),
            props: Some(props),
            writer: None,
            schema: Arc::new(Schema::empty()),
            columns: Vec::new(),
            builders: Vec::new(),
            rows: 0,
            bytes: 0,
            done: 0,
            scratch: Vec::new(),
        }
    }

    /// Hands the collected rows to the Arrow writer, which writes out each row group it fills.
    fn write_batch(&mut self) -> Result<(), DataError> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays = self
            .builders
            .iter_mut()
            .map(|b| b.as_dyn().finish())
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(parquet_err)?;
        let w = self.writer.as_mut().ok_or_else(not_started)?;
        w.write(&batch).map_err(parquet_err)?;
        self.done += self.rows as u64;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }
}

fn parquet_err(e: impl std::fmt::Display) -> DataError {
    DataError::permanent(format!("cannot write Parquet: {e}"))
}

fn not_started() -> DataError {
    DataError::permanent("internal error: Parquet rows before the columns")
}

impl<W: Write + Send> RowSink for ParquetRows<W> {
    fn start(&mut self, columns: &[Column]) -> Result<(), DataError> {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, arrow_type(c.kind), true))
            .collect();
        self.schema = Arc::new(Schema::new(fields));
        self.columns = columns.to_vec();
        self.builders = columns.iter().map(|c| Builder::new(c.kind)).collect();
        let out = self.out.take().ok_or_else(not_started)?;
        // The file (and its schema) exists from here on, even for an empty result.
        self.writer = Some(
            ArrowWriter::try_new(out, self.schema.clone(), self.props.take())
                .map_err(parquet_err)?,
        );
        Ok(())
    }

    fn value(&mut self, i: usize, cell: Cell<'_>) -> Result<(), DataError> {
        let b = self.builders.get_mut(i).ok_or_else(not_started)?;
        match b.append(cell, &mut self.scratch) {
            Some(n) => {
                self.bytes += n;
                Ok(())
            }
            None => {
                let c = &self.columns[i];
                Err(DataError::permanent(format!(
                    "column {:?} ({}) is written as Parquet {}, and row {} holds a value that does not fit it ({}); cast the column in the query",
                    c.name,
                    c.db_type,
                    arrow_type(c.kind),
                    self.done + self.rows as u64 + 1,
                    cell_type(&cell)
                )))
            }
        }
    }

    fn end_row(&mut self) -> Result<(), DataError> {
        self.rows += 1;
        if self.rows >= BATCH_ROWS || self.bytes >= BATCH_BYTES {
            self.write_batch()?;
        }
        Ok(())
    }
}

/// What a value is, for messages (never the value itself).
fn cell_type(c: &Cell<'_>) -> &'static str {
    match c {
        Cell::Null => "NULL",
        Cell::Bool(_) => "a boolean",
        Cell::Int(_) | Cell::UInt(_) => "an integer",
        Cell::Float(_) => "a float",
        Cell::Decimal(_) => "a decimal",
        Cell::Text(_) => "text",
        Cell::Bytes(_) => "bytes",
        Cell::DateTime(_) => "a date and time",
        Cell::Date(_) => "a date",
        Cell::Time(_) => "a time",
        Cell::Uuid(_) => "a UUID",
        Cell::Json(_) => "JSON",
    }
}

impl<W: Write + Send> RowWriter for ParquetRows<W> {
    fn finish(&mut self) -> Result<(), DataError> {
        self.write_batch()?;
        let w = self.writer.take().ok_or_else(not_started)?;
        // Writes the footer and hands back the file.
        w.into_inner().map_err(parquet_err)?.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::feed;
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int32Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn col(name: &str, kind: Kind) -> Column {
        Column {
            name: name.into(),
            kind,
            unsigned: false,
            db_type: "T".into(),
        }
    }

    #[test]
    fn writes_types_nulls_and_row_groups() {
        let cols = vec![
            col("id", Kind::Int32),
            col("name", Kind::Text),
            col(
                "amount",
                Kind::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            col("at", Kind::TimestampUtc),
        ];
        let t = NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        let rows: Vec<Vec<Cell>> = (0..GROUP_ROWS as i64 + 10)
            .map(|i| {
                vec![
                    Cell::Int(i),
                    if i % 2 == 0 {
                        Cell::Text("Łódź, \"x\"")
                    } else {
                        Cell::Null
                    },
                    Cell::Decimal(rust_decimal::Decimal::new(i * 10 + 5, 1)),
                    Cell::DateTime(t),
                ]
            })
            .collect();
        let mut file = Vec::new();
        {
            let mut w = ParquetRows::new(&mut file, ParquetCompression::Snappy);
            feed(&mut w, &cols, &rows);
        }
        let r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file)).unwrap();
        assert_eq!(r.metadata().num_row_groups(), 2);
        let schema = r.schema().clone();
        assert_eq!(schema.field(2).data_type(), &DataType::Decimal128(10, 2));
        assert_eq!(
            schema.field(3).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let batch = r.build().unwrap().next().unwrap().unwrap();
        assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(3), 3);
        let names = batch.column(1).as_string::<i32>();
        assert_eq!(names.value(0), "Łódź, \"x\"");
        assert!(names.is_null(1));
        // 0.5 → 0.50 at scale 2.
        assert_eq!(
            batch.column(2).as_primitive::<Decimal128Type>().value(0),
            50
        );
        assert_eq!(
            batch
                .column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            t.and_utc().timestamp_micros()
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_the_column() {
        let mut w = ParquetRows::new(Vec::new(), ParquetCompression::None);
        w.start(&[col("n", Kind::Int64)]).unwrap();
        let e = w.value(0, Cell::Text("abc")).unwrap_err().to_string();
        assert!(e.contains("column \"n\"") && e.contains("Int64"), "{e}");
        assert!(!e.contains("abc"), "no row contents in messages: {e}");
    }
}
