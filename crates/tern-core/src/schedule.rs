//! Schedules and data intervals, as Airflow defines them.
//!
//! A cron schedule cuts time into *data intervals* between consecutive fire times, read in the
//! DAG's time zone (so `0 2 * * *` in `Europe/Madrid` stays at 02:00 local across DST). The run
//! for an interval is created once the interval has ended; its *logical date* is the start of the
//! interval. With `catchup` every interval since `start_date` gets a run; without it only the
//! latest complete one does. After an interval that does not end on a fire time (the schedule
//! changed), the next one starts at the latest fire at or before that end. Across DST, a cron
//! with a fixed time of day stays at that local time and one that fires several times a day
//! steps in absolute time (see `Ticks`), as Airflow's cron timetables do. Manual runs get the latest complete interval before the trigger
//! time, and the trigger time as logical date.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// When a DAG runs by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Only manual triggers and backfills.
    None,
    /// A 5-field cron expression or a preset, kept as written (`"@daily"`, `"0 2 * * *"`).
    Cron(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule {text:?}: {reason}; use 5 cron fields (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), @hourly, @daily, @weekly, @monthly, @yearly or none")]
    InvalidCron { text: String, reason: String },
    #[error("unknown time zone {0:?}; use an IANA name such as \"UTC\" or \"Europe/Madrid\"")]
    InvalidTimezone(String),
    #[error("invalid date {text:?}; use \"YYYY-MM-DD\" or \"YYYY-MM-DDTHH:MM[:SS]\" (local to the DAG's time zone)")]
    InvalidDate { text: String },
}

/// `[start, end)` of the data a run processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

fn preset(text: &str) -> Option<&'static str> {
    Some(match text {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        _ => return None,
    })
}

impl Schedule {
    /// Parses what a DAG file writes for `schedule`: a cron expression, a preset, or `none`.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("none") || t == "@none" {
            return Ok(Schedule::None);
        }
        let s = Schedule::Cron(t.to_string());
        s.cron()?;
        Ok(s)
    }

    /// The text as written, or `"none"`.
    pub fn as_text(&self) -> &str {
        match self {
            Schedule::None => "none",
            Schedule::Cron(t) => t,
        }
    }

    fn cron(&self) -> Result<Option<Ticks>, ScheduleError> {
        let Schedule::Cron(text) = self else {
            return Ok(None);
        };
        let expr = preset(text).unwrap_or(text);
        let bad = |reason: String| ScheduleError::InvalidCron {
            text: text.clone(),
            reason,
        };
        if expr.starts_with('@') {
            return Err(bad("unknown preset".into()));
        }
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(bad(format!("it has {fields} fields, expected 5")));
        }
        croner::Cron::from_str(expr)
            .map(|cron| Some(Ticks::new(cron)))
            .map_err(|e| bad(e.to_string()))
    }

    /// The next interval a scheduled run should be created for, given the end of the last
    /// scheduled interval. The result may lie in the future: create the run once `end <= now`.
    /// `None` when the schedule is `none` or `end_date` has passed.
    pub fn next_interval(
        &self,
        bounds: &ScheduleBounds,
        last_end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DataInterval> {
        let cron = self.cron().ok()??;
        let tz = bounds.tz;
        let earliest = bounds.start_date.and_then(|s| cron.after(tz, s, true));
        let start = if bounds.catchup {
            match (last_end, earliest) {
                (Some(l), _) => cron.align_back(tz, l),
                (None, Some(e)) => e,
                (None, None) => cron.latest_complete_start(tz, now)?,
            }
        } else {
            let latest = cron.latest_complete_start(tz, now)?;
            let mut s = latest;
            if let Some(e) = earliest {
                s = s.max(e);
            }
            if let Some(l) = last_end {
                s = s.max(cron.align_back(tz, l));
            }
            s
        };
        if let Some(end_date) = bounds.end_date {
            if start > end_date {
                return None;
            }
        }
        let end = cron.after(tz, start, false)?;
        Some(DataInterval { start, end })
    }

    /// The data interval of a run triggered by hand at `now`: the latest complete interval for a
    /// cron schedule, `[now, now]` otherwise.
    pub fn manual_interval(&self, tz: Tz, now: DateTime<Utc>) -> DataInterval {
        if let Ok(Some(cron)) = self.cron() {
            if let Some(start) = cron.latest_complete_start(tz, now) {
                if let Some(end) = cron.after(tz, start, false) {
                    return DataInterval { start, end };
                }
            }
        }
        DataInterval {
            start: now,
            end: now,
        }
    }

    /// Every interval whose start lies in `[from, to]`, for a backfill. For `none`, one interval
    /// at `from`.
    pub fn intervals_between(
        &self,
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DataInterval> {
        let Ok(Some(cron)) = self.cron() else {
            return vec![DataInterval {
                start: from,
                end: from,
            }];
        };
        let mut out = Vec::new();
        let mut start = match cron.after(tz, from, true) {
            Some(s) => s,
            None => return out,
        };
        while start <= to {
            let Some(end) = cron.after(tz, start, false) else {
                break;
            };
            out.push(DataInterval { start, end });
            start = end;
        }
        out
    }
}

/// A cron expression's fire times in a time zone, as Airflow computes them. A *fixed* schedule
/// (its fires share hour and minute, e.g. daily at 02:30) fires at that local time, so it
/// stays there across DST and fires once at a repeated time (the first occurrence). Any other
/// schedule (hourly, every 15 minutes, "0 0,12 * * *") steps by its local distance in absolute
/// time, so across the fall-back it walks through both occurrences of the repeated hour and
/// across the spring-forward it skips nothing that exists.
struct Ticks {
    cron: croner::Cron,
    fixed: bool,
}

impl Ticks {
    fn new(cron: croner::Cron) -> Ticks {
        // Peek at the first two fires after a fixed instant, as Airflow peeks after now.
        let from = DateTime::<Utc>::from_timestamp(978_307_200, 0).unwrap_or_default();
        let a = cron.find_next_occurrence(&from, false).ok();
        let b = a.and_then(|a| cron.find_next_occurrence(&a, false).ok());
        let fixed = match (a, b) {
            (Some(a), Some(b)) => {
                use chrono::Timelike;
                a.hour() == b.hour() && a.minute() == b.minute()
            }
            _ => true,
        };
        Ticks { cron, fixed }
    }

    /// The first fire after `t` (or at `t` with `inclusive`).
    fn after(&self, tz: Tz, t: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        if self.fixed {
            return self
                .cron
                .find_next_occurrence(&t.with_timezone(&tz), inclusive)
                .ok()
                .map(|d| d.with_timezone(&Utc));
        }
        let local = t.with_timezone(&tz).naive_local();
        let next = self
            .cron
            .find_next_occurrence(&local.and_utc(), inclusive)
            .ok()?
            .naive_utc();
        Some(t + (next - local))
    }

    /// The last fire before `t` (or at `t` with `inclusive`).
    fn before(&self, tz: Tz, t: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        if self.fixed {
            return self
                .cron
                .find_previous_occurrence(&t.with_timezone(&tz), inclusive)
                .ok()
                .map(|d| d.with_timezone(&Utc));
        }
        let local = t.with_timezone(&tz).naive_local();
        let prev = self
            .cron
            .find_previous_occurrence(&local.and_utc(), inclusive)
            .ok()?
            .naive_utc();
        Some(t - (local - prev))
    }

    /// The latest fire at or before `t`: where the interval after a previous one starts when
    /// that one does not end on a fire (the schedule changed since), as in Airflow.
    fn align_back(&self, tz: Tz, t: DateTime<Utc>) -> DateTime<Utc> {
        self.before(tz, t, true).unwrap_or(t)
    }

    /// Start of the latest interval that has completed by `now`.
    fn latest_complete_start(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last_fire = self.before(tz, now, true)?;
        self.before(tz, last_fire, false)
    }
}

/// What limits a DAG's scheduled intervals.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleBounds {
    pub tz: Tz,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub catchup: bool,
}

/// Parses an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::InvalidTimezone(name.to_string()))
}

/// Parses a DAG file date (`2026-01-01`, `2026-01-01T06:00`, `2026-01-01 06:00:00`, or RFC 3339
/// with an offset) in time zone `tz`.
pub fn parse_local_date(text: &str, tz: Tz) -> Result<DateTime<Utc>, ScheduleError> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    let naive = if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
    } else {
        [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    };
    let naive = naive.ok_or_else(|| ScheduleError::InvalidDate {
        text: t.to_string(),
    })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| ScheduleError::InvalidDate {
            text: t.to_string(),
        })
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_text())
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn bounds(tz: &str, start: Option<&str>, catchup: bool) -> ScheduleBounds {
        ScheduleBounds {
            tz: parse_timezone(tz).unwrap(),
            start_date: start.map(utc),
            end_date: None,
            catchup,
        }
    }

    #[test]
    fn parses_presets_and_rejects_bad_cron() {
        assert_eq!(Schedule::parse("none").unwrap(), Schedule::None);
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("0 2 * * *").is_ok());
        assert!(Schedule::parse("*/15 9-17 * * MON-FRI").is_ok());
        for bad in [
            "61 * * * *",
            "* * *",
            "@sometimes",
            "0 0 * * * *",
            "a b c d e",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn catchup_walks_every_interval_from_start_date() {
        let s = Schedule::parse("@daily").unwrap();
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        let now = utc("2026-01-03T12:00:00Z");
        let i1 = s.next_interval(&b, None, now).unwrap();
        assert_eq!(i1.start, utc("2026-01-01T00:00:00Z"));
        assert_eq!(i1.end, utc("2026-01-02T00:00:00Z"));
        let i2 = s.next_interval(&b, Some(i1.end), now).unwrap();
        assert_eq!(i2.start, utc("2026-01-02T00:00:00Z"));
        let i3 = s.next_interval(&b, Some(i2.end), now).unwrap();
        assert_eq!(i3.end, utc("2026-01-04T00:00:00Z"));
        assert!(i3.end > now, "the third interval is not complete yet");
    }

    #[test]
    fn no_catchup_takes_only_the_latest_complete_interval() {
        let s = Schedule::parse("@daily").unwrap();
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), false);
        let now = utc("2026-03-10T12:00:00Z");
        let i = s.next_interval(&b, None, now).unwrap();
        assert_eq!(i.start, utc("2026-03-09T00:00:00Z"));
        assert_eq!(i.end, utc("2026-03-10T00:00:00Z"));
        let next = s.next_interval(&b, Some(i.end), now).unwrap();
        assert_eq!(next.start, utc("2026-03-10T00:00:00Z"));
        assert!(next.end > now);
    }

    #[test]
    fn start_date_is_aligned_to_the_schedule() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let b = bounds("UTC", Some("2026-01-01T05:00:00Z"), true);
        let i = s
            .next_interval(&b, None, utc("2026-02-01T00:00:00Z"))
            .unwrap();
        assert_eq!(i.start, utc("2026-01-02T02:00:00Z"));
    }

    #[test]
    fn end_date_stops_scheduling() {
        let s = Schedule::parse("@daily").unwrap();
        let mut b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        b.end_date = Some(utc("2026-01-02T00:00:00Z"));
        let now = utc("2026-02-01T00:00:00Z");
        let i2 = s
            .next_interval(&b, Some(utc("2026-01-02T00:00:00Z")), now)
            .unwrap();
        assert_eq!(i2.start, utc("2026-01-02T00:00:00Z"));
        assert!(s.next_interval(&b, Some(i2.end), now).is_none());
    }

    #[test]
    fn local_time_holds_across_dst_in_madrid() {
        // Spring forward on 2026-03-29 (CET -> CEST) and back on 2026-10-25.
        let s = Schedule::parse("0 6 * * *").unwrap();
        let tz = parse_timezone("Europe/Madrid").unwrap();
        let spring =
            s.intervals_between(tz, utc("2026-03-28T00:00:00Z"), utc("2026-03-29T23:00:00Z"));
        assert_eq!(spring[0].start, utc("2026-03-28T05:00:00Z"), "06:00 CET");
        assert_eq!(spring[1].start, utc("2026-03-29T04:00:00Z"), "06:00 CEST");
        assert_eq!((spring[0].end - spring[0].start).num_hours(), 23);
        let autumn =
            s.intervals_between(tz, utc("2026-10-24T00:00:00Z"), utc("2026-10-25T23:00:00Z"));
        assert_eq!((autumn[0].end - autumn[0].start).num_hours(), 25);
    }

    #[test]
    fn manual_interval_is_the_latest_complete_one() {
        let s = Schedule::parse("@hourly").unwrap();
        let i = s.manual_interval(chrono_tz::UTC, utc("2026-05-01T10:30:00Z"));
        assert_eq!(i.start, utc("2026-05-01T09:00:00Z"));
        assert_eq!(i.end, utc("2026-05-01T10:00:00Z"));
        let n = Schedule::None.manual_interval(chrono_tz::UTC, utc("2026-05-01T10:30:00Z"));
        assert_eq!(n.start, n.end);
    }

    #[test]
    fn dates_are_read_in_the_dag_time_zone() {
        let tz = parse_timezone("Europe/Madrid").unwrap();
        assert_eq!(
            parse_local_date("2026-01-01", tz).unwrap(),
            utc("2025-12-31T23:00:00Z")
        );
        assert_eq!(
            parse_local_date("2026-07-01T06:30", tz).unwrap(),
            utc("2026-07-01T04:30:00Z")
        );
        assert!(parse_local_date("01/02/2026", tz).is_err());
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    /// Every interval of `cron` in `tz` whose start lies in `[from, to]`, checked to be
    /// contiguous and each of `minutes` length.
    fn walk(cron: &str, tz: &str, from: &str, to: &str, minutes: i64) -> Vec<DataInterval> {
        let s = Schedule::parse(cron).unwrap();
        let iv = s.intervals_between(parse_timezone(tz).unwrap(), utc(from), utc(to));
        for w in iv.windows(2) {
            assert_eq!(w[0].end, w[1].start, "{cron} in {tz}: contiguous");
        }
        for i in &iv {
            assert_eq!(
                (i.end - i.start).num_minutes(),
                minutes,
                "{cron} in {tz}: {} -> {}",
                i.start,
                i.end
            );
        }
        iv
    }

    #[test]
    fn sub_hourly_and_hourly_crons_walk_both_occurrences_of_a_repeated_hour() {
        // Madrid falls back at 03:00 CEST (01:00 UTC) on 2026-10-25; New York at 02:00 EDT
        // (06:00 UTC) on 2026-11-01. Three hours of UTC time hold three hours of intervals.
        let iv = walk(
            "*/15 * * * *",
            "Europe/Madrid",
            "2026-10-24T23:30:00Z",
            "2026-10-25T02:15:00Z",
            15,
        );
        assert_eq!(iv.len(), 12);
        assert!(
            iv.iter().any(|i| i.start == utc("2026-10-25T01:00:00Z")),
            "02:00 CET, the second 02:00"
        );
        let iv = walk(
            "0 * * * *",
            "Europe/Madrid",
            "2026-10-24T23:00:00Z",
            "2026-10-25T02:00:00Z",
            60,
        );
        assert_eq!(iv.len(), 4);
        let iv = walk(
            "*/30 * * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            "2026-11-01T07:30:00Z",
            30,
        );
        assert_eq!(iv.len(), 8);
        // And spring forward skips only the hour that does not exist.
        walk(
            "*/15 * * * *",
            "Europe/Madrid",
            "2026-03-29T00:00:00Z",
            "2026-03-29T02:00:00Z",
            15,
        );
        walk(
            "*/20 * * * *",
            "America/New_York",
            "2026-03-08T06:00:00Z",
            "2026-03-08T08:00:00Z",
            20,
        );
        walk(
            "0 * * * *",
            "America/New_York",
            "2026-03-08T05:00:00Z",
            "2026-03-08T09:00:00Z",
            60,
        );
    }

    #[test]
    fn a_daily_cron_at_a_repeated_local_time_fires_once_at_its_first_occurrence() {
        let s = Schedule::parse("30 1 * * *").unwrap();
        let ny = parse_timezone("America/New_York").unwrap();
        // 01:30 happens twice on 2026-11-01 in New York: 05:30 UTC (EDT) and 06:30 (EST).
        let iv = s.intervals_between(ny, utc("2026-10-31T00:00:00Z"), utc("2026-11-02T00:00:00Z"));
        let starts: Vec<_> = iv.iter().map(|i| i.start).collect();
        assert_eq!(
            starts,
            [utc("2026-10-31T05:30:00Z"), utc("2026-11-01T05:30:00Z")],
            "once a day, at the first 01:30"
        );
        assert_eq!((iv[1].end - iv[1].start).num_hours(), 25);
        assert_eq!(
            iv[1].end,
            utc("2026-11-02T06:30:00Z"),
            "01:30 EST the next day"
        );
        let madrid = parse_timezone("Europe/Madrid").unwrap();
        let s = Schedule::parse("30 2 * * *").unwrap();
        let iv = s.intervals_between(
            madrid,
            utc("2026-10-25T00:00:00Z"),
            utc("2026-10-25T12:00:00Z"),
        );
        assert_eq!(iv.len(), 1);
        assert_eq!(iv[0].start, utc("2026-10-25T00:30:00Z"), "02:30 CEST");
    }

    #[test]
    fn no_interval_ends_before_it_starts_across_a_year_of_dst_changes() {
        for tz in ["Europe/Madrid", "America/New_York", "Australia/Sydney"] {
            let tz = parse_timezone(tz).unwrap();
            for cron in [
                "*/15 * * * *",
                "0 * * * *",
                "30 2 * * *",
                "0 0,12 * * *",
                "45 1 * * 0",
            ] {
                let s = Schedule::parse(cron).unwrap();
                let iv = s.intervals_between(
                    tz,
                    utc("2026-01-01T00:00:00Z"),
                    utc("2026-12-31T00:00:00Z"),
                );
                assert!(!iv.is_empty());
                for w in iv.windows(2) {
                    assert_eq!(w[0].end, w[1].start, "{cron}: contiguous");
                }
                assert!(iv.iter().all(|i| i.end > i.start), "{cron} in {tz}");
            }
        }
    }

    #[test]
    fn after_an_unaligned_interval_the_next_starts_at_the_latest_tick_before_its_end() {
        // The previous run's interval ended at 05:00 (the schedule was "0 5 * * *" then); with
        // "0 2 * * *" the next interval starts at 02:00 that day, not at 05:00.
        let s = Schedule::parse("0 2 * * *").unwrap();
        let now = utc("2026-01-10T00:00:00Z");
        for catchup in [true, false] {
            let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), catchup);
            let i = s
                .next_interval(&b, Some(utc("2026-01-09T05:00:00Z")), now)
                .unwrap();
            assert_eq!(i.start, utc("2026-01-09T02:00:00Z"), "catchup = {catchup}");
            assert_eq!(i.end, utc("2026-01-10T02:00:00Z"));
        }
        // An aligned end is its own latest tick: nothing changes.
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        let i = s
            .next_interval(&b, Some(utc("2026-01-03T02:00:00Z")), now)
            .unwrap();
        assert_eq!(i.start, utc("2026-01-03T02:00:00Z"));
    }
}
