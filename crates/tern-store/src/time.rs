//! Conversion between `DateTime<Utc>` and the epoch milliseconds stored in the database.

use chrono::{DateTime, TimeZone, Utc};

pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn now_ms() -> i64 {
    to_ms(Utc::now())
}
