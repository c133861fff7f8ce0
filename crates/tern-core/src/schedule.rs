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

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// When a DAG runs by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Only manual triggers and backfills.
    None,
    /// A 5-field cron expression or a preset, kept as written (`"@daily"`, `"0 2 * * *"`): a run
    /// per *data interval* between two fire times, created once the interval has ended, its
    /// logical date the interval's start (Airflow's `CronDataIntervalTimetable`).
    Cron(String),
    /// A run *at* each fire time of a cron, its logical date that time; its data interval the
    /// `interval_ms` before it, or empty (Airflow's `CronTriggerTimetable`).
    CronTrigger {
        cron: String,
        interval_ms: Option<u64>,
    },
    /// Every `period_ms`, aligned to `start_date`: with `data_interval`, a run per period once
    /// it has ended (Airflow's `DeltaDataIntervalTimetable`); without, a run at each tick.
    Every { period_ms: u64, data_interval: bool },
    /// A run at each of these times, sorted (Airflow's `EventsTimetable`).
    At(Vec<DateTime<Utc>>),
    /// A run at every fire time of any of these `CronTrigger` schedules (Airflow's
    /// `MultipleCronTriggerTimetable`); a time two of them share makes one run.
    AnyOf(Vec<Schedule>),
}

/// One scheduled run: when it may be created, its logical date and its data interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextRun {
    pub logical_date: DateTime<Utc>,
    pub data_interval: DataInterval,
    /// The run is created once this time has passed.
    pub run_after: DateTime<Utc>,
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
    /// Parses what a DAG file writes for `schedule` as text: a cron expression, a preset, or
    /// `none`.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("none") || t == "@none" {
            return Ok(Schedule::None);
        }
        let s = Schedule::Cron(t.to_string());
        s.check()?;
        Ok(s)
    }

    /// Checks every cron expression the schedule holds.
    pub fn check(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Cron(c) | Schedule::CronTrigger { cron: c, .. } => parse_cron(c).map(|_| ()),
            Schedule::AnyOf(all) => all.iter().try_for_each(Schedule::check),
            _ => Ok(()),
        }
    }

    /// How listings show it: the cron as written, `none`, or the DAG-file call that makes it.
    pub fn describe(&self) -> String {
        let dur = |ms: u64| crate::format_duration(std::time::Duration::from_millis(ms));
        match self {
            Schedule::None => "none".into(),
            Schedule::Cron(t) => t.clone(),
            Schedule::CronTrigger { cron, interval_ms } => match interval_ms {
                Some(ms) => format!("cron({cron:?}, interval = {:?})", dur(*ms)),
                None => format!("cron({cron:?})"),
            },
            Schedule::Every {
                period_ms,
                data_interval,
            } => {
                if *data_interval {
                    format!("every({:?})", dur(*period_ms))
                } else {
                    format!("every({:?}, data_interval = False)", dur(*period_ms))
                }
            }
            Schedule::At(times) => match times.as_slice() {
                [one] => format!("at([{:?}])", one.to_rfc3339_opts(SecondsFormat::Secs, true)),
                _ => format!("at({} times)", times.len()),
            },
            Schedule::AnyOf(all) => format!(
                "any_of({})",
                all.iter()
                    .map(Schedule::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Whether a run is made per data interval, created once the interval has ended (a
    /// plain cron, `every` with a data interval); otherwise runs are made at their ticks.
    fn per_interval(&self) -> bool {
        matches!(
            self,
            Schedule::Cron(_)
                | Schedule::Every {
                    data_interval: true,
                    ..
                }
        )
    }

    /// The first tick after `t` (or at `t` with `inclusive`).
    fn tick_after(
        &self,
        b: &ScheduleBounds,
        t: DateTime<Utc>,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::None => None,
            Schedule::Cron(c) | Schedule::CronTrigger { cron: c, .. } => {
                parse_cron(c).ok()?.after(b.tz, t, inclusive)
            }
            Schedule::Every { period_ms, .. } => {
                let (anchor, p) = (b.start_date?, (*period_ms).max(1) as i64);
                let since = (t - anchor).num_milliseconds();
                if since < 0 {
                    return Some(anchor);
                }
                let mut k = since.div_euclid(p);
                if !(inclusive && since % p == 0) {
                    k += 1;
                }
                anchor.checked_add_signed(chrono::Duration::milliseconds(k.checked_mul(p)?))
            }
            Schedule::At(times) => {
                times
                    .iter()
                    .copied()
                    .find(|x| if inclusive { *x >= t } else { *x > t })
            }
            Schedule::AnyOf(all) => all
                .iter()
                .filter_map(|s| s.tick_after(b, t, inclusive))
                .min(),
        }
    }

    /// The last tick before `t` (or at `t` with `inclusive`).
    fn tick_before(
        &self,
        b: &ScheduleBounds,
        t: DateTime<Utc>,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::None => None,
            Schedule::Cron(c) | Schedule::CronTrigger { cron: c, .. } => {
                parse_cron(c).ok()?.before(b.tz, t, inclusive)
            }
            Schedule::Every { period_ms, .. } => {
                let (anchor, p) = (b.start_date?, (*period_ms).max(1) as i64);
                let since = (t - anchor).num_milliseconds();
                if since < 0 || (since == 0 && !inclusive) {
                    return None;
                }
                let mut k = since.div_euclid(p);
                if !inclusive && since % p == 0 {
                    k -= 1;
                }
                anchor.checked_add_signed(chrono::Duration::milliseconds(k.checked_mul(p)?))
            }
            Schedule::At(times) => {
                times
                    .iter()
                    .rev()
                    .copied()
                    .find(|x| if inclusive { *x <= t } else { *x < t })
            }
            Schedule::AnyOf(all) => all
                .iter()
                .filter_map(|s| s.tick_before(b, t, inclusive))
                .max(),
        }
    }

    /// The data interval before a tick of a run-at-tick schedule.
    fn interval_before(&self, b: &ScheduleBounds, tick: DateTime<Utc>) -> Option<u64> {
        match self {
            Schedule::CronTrigger { interval_ms, .. } => *interval_ms,
            Schedule::AnyOf(all) => all
                .iter()
                .find(|s| s.tick_after(b, tick, true) == Some(tick))
                .and_then(|s| s.interval_before(b, tick)),
            _ => None,
        }
    }

    /// The run of the tick or interval starting at `tick`.
    fn run_at(&self, b: &ScheduleBounds, tick: DateTime<Utc>) -> Option<NextRun> {
        if self.per_interval() {
            let end = self.tick_after(b, tick, false)?;
            let data_interval = DataInterval { start: tick, end };
            return Some(NextRun {
                logical_date: tick,
                data_interval,
                run_after: end,
            });
        }
        let before = self
            .interval_before(b, tick)
            .map(|ms| chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64))
            .unwrap_or_default();
        Some(NextRun {
            logical_date: tick,
            data_interval: DataInterval {
                start: tick.checked_sub_signed(before).unwrap_or(tick),
                end: tick,
            },
            run_after: tick,
        })
    }

    /// The start of the latest run that may be created by `now`.
    fn latest_due(&self, b: &ScheduleBounds, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last_tick = self.tick_before(b, now, true)?;
        if self.per_interval() {
            self.tick_before(b, last_tick, false)
        } else {
            Some(last_tick)
        }
    }

    /// The next run the scheduler should create, given the data-interval end of the last
    /// scheduled run. It may lie in the future: create it once `run_after <= now`. `None` when
    /// the schedule is `none`, has no more ticks, or `end_date` has passed.
    pub fn next_run(
        &self,
        b: &ScheduleBounds,
        last_end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<NextRun> {
        // A list of times starts at its first one (catchup runs them all, as Airflow's
        // `EventsTimetable`); anything else at the first tick on or after `start_date`.
        let earliest = match (b.start_date, self) {
            (Some(s), _) => self.tick_after(b, s, true),
            (None, Schedule::At(times)) => times.first().copied(),
            (None, _) => None,
        };
        // Where the run after the last one starts: for runs per interval, at the latest tick at
        // or before the last interval's end (it is that end unless the schedule changed); for
        // runs at ticks, at the first tick after the last one.
        let after_last = last_end.and_then(|l| {
            if self.per_interval() {
                Some(self.tick_before(b, l, true).unwrap_or(l))
            } else {
                self.tick_after(b, l, false)
            }
        });
        if last_end.is_some() && after_last.is_none() {
            return None;
        }
        let start = if b.catchup {
            match (after_last, earliest) {
                (Some(l), Some(e)) => l.max(e),
                (Some(l), None) => l,
                (None, Some(e)) => e,
                (None, None) => self
                    .latest_due(b, now)
                    .or_else(|| self.tick_after(b, now, true))?,
            }
        } else {
            [self.latest_due(b, now), earliest, after_last]
                .into_iter()
                .flatten()
                .max()
                .or_else(|| self.tick_after(b, now, true))?
        };
        if b.end_date.is_some_and(|e| start > e) {
            return None;
        }
        self.run_at(b, start)
    }

    /// The next `n` runs the scheduler would create after the last one, ignoring `now` for all
    /// but the first (what `tern dags next` prints).
    pub fn upcoming(
        &self,
        b: &ScheduleBounds,
        last_end: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        n: usize,
    ) -> Vec<NextRun> {
        let mut out: Vec<NextRun> = Vec::with_capacity(n);
        let mut last = last_end;
        let catchup = ScheduleBounds {
            catchup: true,
            ..*b
        };
        while out.len() < n {
            let bounds = if out.is_empty() { b } else { &catchup };
            let Some(r) = self.next_run(bounds, last, now) else {
                break;
            };
            if out.last().is_some_and(|p| r.logical_date <= p.logical_date) {
                break;
            }
            last = Some(r.data_interval.end);
            out.push(r);
        }
        out
    }

    /// The data interval of a run triggered by hand for `now`: the latest complete interval for
    /// a schedule of runs per interval, the interval before `now` for `cron(..., interval =)`,
    /// `[now, now]` otherwise.
    pub fn manual_interval(&self, b: &ScheduleBounds, now: DateTime<Utc>) -> DataInterval {
        let empty = DataInterval {
            start: now,
            end: now,
        };
        if self.per_interval() {
            return self
                .latest_due(b, now)
                .and_then(|start| self.run_at(b, start))
                .map(|r| r.data_interval)
                .unwrap_or(empty);
        }
        let before = match self {
            Schedule::CronTrigger { interval_ms, .. } => *interval_ms,
            Schedule::AnyOf(all) => all.iter().find_map(|s| s.interval_before(b, now)),
            _ => None,
        };
        match before {
            Some(ms) => DataInterval {
                start: now - chrono::Duration::milliseconds(ms.min(i64::MAX as u64 / 2) as i64),
                end: now,
            },
            None => empty,
        }
    }

    /// Every run whose logical date lies in `[from, to]`, for a backfill. For `none`, one run
    /// at `from` with an empty interval.
    pub fn runs_between(
        &self,
        b: &ScheduleBounds,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<NextRun> {
        if *self == Schedule::None {
            return vec![NextRun {
                logical_date: from,
                data_interval: DataInterval {
                    start: from,
                    end: from,
                },
                run_after: from,
            }];
        }
        let mut out = Vec::new();
        let mut tick = self.tick_after(b, from, true);
        while let Some(t) = tick.filter(|t| *t <= to) {
            let Some(r) = self.run_at(b, t) else {
                break;
            };
            out.push(r);
            tick = self.tick_after(b, t, false);
        }
        out
    }

    /// The data intervals of [`Schedule::runs_between`].
    #[cfg(test)]
    pub(crate) fn intervals_between(
        &self,
        b: &ScheduleBounds,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DataInterval> {
        self.runs_between(b, from, to)
            .into_iter()
            .map(|r| r.data_interval)
            .collect()
    }
}

/// The parsed form of a cron expression, kept per thread for the expressions seen last: the
/// scheduler and a backfill ask for thousands of ticks of the same few expressions.
fn parse_cron(text: &str) -> Result<std::rc::Rc<Ticks>, ScheduleError> {
    thread_local! {
        static PARSED: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<Ticks>>> =
            Default::default();
    }
    if let Some(t) = PARSED.with(|p| p.borrow().get(text).cloned()) {
        return Ok(t);
    }
    let ticks = std::rc::Rc::new(parse_cron_uncached(text)?);
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= 256 {
            p.clear();
        }
        p.insert(text.to_string(), ticks.clone());
    });
    Ok(ticks)
}

fn parse_cron_uncached(text: &str) -> Result<Ticks, ScheduleError> {
    let expr = preset(text).unwrap_or(text);
    let bad = |reason: String| ScheduleError::InvalidCron {
        text: text.to_string(),
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
        .map(Ticks::new)
        .map_err(|e| bad(e.to_string()))
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

/// The stored form: a data-interval cron and `none` as the text they were written as (so
/// specs stored before the other kinds existed still load), every other kind as an object.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Text(String),
    Rich(Rich),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Rich {
    CronTrigger {
        cron: String,
        #[serde(default)]
        interval_ms: Option<u64>,
    },
    Every {
        period_ms: u64,
        data_interval: bool,
    },
    At {
        times: Vec<DateTime<Utc>>,
    },
    AnyOf {
        schedules: Vec<Schedule>,
    },
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let stored = match self.clone() {
            Schedule::None => Stored::Text("none".into()),
            Schedule::Cron(t) => Stored::Text(t),
            Schedule::CronTrigger { cron, interval_ms } => {
                Stored::Rich(Rich::CronTrigger { cron, interval_ms })
            }
            Schedule::Every {
                period_ms,
                data_interval,
            } => Stored::Rich(Rich::Every {
                period_ms,
                data_interval,
            }),
            Schedule::At(times) => Stored::Rich(Rich::At { times }),
            Schedule::AnyOf(schedules) => Stored::Rich(Rich::AnyOf { schedules }),
        };
        stored.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let schedule = match Stored::deserialize(d)? {
            Stored::Text(text) => return Schedule::parse(&text).map_err(serde::de::Error::custom),
            Stored::Rich(Rich::CronTrigger { cron, interval_ms }) => {
                Schedule::CronTrigger { cron, interval_ms }
            }
            Stored::Rich(Rich::Every {
                period_ms,
                data_interval,
            }) => Schedule::Every {
                period_ms,
                data_interval,
            },
            Stored::Rich(Rich::At { times }) => Schedule::At(times),
            Stored::Rich(Rich::AnyOf { schedules }) => Schedule::AnyOf(schedules),
        };
        schedule.check().map_err(serde::de::Error::custom)?;
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn iv(
        s: &Schedule,
        b: &ScheduleBounds,
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DataInterval> {
        s.next_run(b, last, now).map(|r| r.data_interval)
    }

    fn tzb(tz: Tz) -> ScheduleBounds {
        ScheduleBounds {
            tz,
            start_date: None,
            end_date: None,
            catchup: true,
        }
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
        let i1 = iv(&s, &b, None, now).unwrap();
        assert_eq!(i1.start, utc("2026-01-01T00:00:00Z"));
        assert_eq!(i1.end, utc("2026-01-02T00:00:00Z"));
        let i2 = iv(&s, &b, Some(i1.end), now).unwrap();
        assert_eq!(i2.start, utc("2026-01-02T00:00:00Z"));
        let i3 = iv(&s, &b, Some(i2.end), now).unwrap();
        assert_eq!(i3.end, utc("2026-01-04T00:00:00Z"));
        assert!(i3.end > now, "the third interval is not complete yet");
    }

    #[test]
    fn no_catchup_takes_only_the_latest_complete_interval() {
        let s = Schedule::parse("@daily").unwrap();
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), false);
        let now = utc("2026-03-10T12:00:00Z");
        let i = iv(&s, &b, None, now).unwrap();
        assert_eq!(i.start, utc("2026-03-09T00:00:00Z"));
        assert_eq!(i.end, utc("2026-03-10T00:00:00Z"));
        let next = iv(&s, &b, Some(i.end), now).unwrap();
        assert_eq!(next.start, utc("2026-03-10T00:00:00Z"));
        assert!(next.end > now);
    }

    #[test]
    fn start_date_is_aligned_to_the_schedule() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let b = bounds("UTC", Some("2026-01-01T05:00:00Z"), true);
        let i = iv(&s, &b, None, utc("2026-02-01T00:00:00Z")).unwrap();
        assert_eq!(i.start, utc("2026-01-02T02:00:00Z"));
    }

    #[test]
    fn end_date_stops_scheduling() {
        let s = Schedule::parse("@daily").unwrap();
        let mut b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        b.end_date = Some(utc("2026-01-02T00:00:00Z"));
        let now = utc("2026-02-01T00:00:00Z");
        let i2 = iv(&s, &b, Some(utc("2026-01-02T00:00:00Z")), now).unwrap();
        assert_eq!(i2.start, utc("2026-01-02T00:00:00Z"));
        assert!(iv(&s, &b, Some(i2.end), now).is_none());
    }

    #[test]
    fn local_time_holds_across_dst_in_madrid() {
        // Spring forward on 2026-03-29 (CET -> CEST) and back on 2026-10-25.
        let s = Schedule::parse("0 6 * * *").unwrap();
        let tz = parse_timezone("Europe/Madrid").unwrap();
        let spring = s.intervals_between(
            &tzb(tz),
            utc("2026-03-28T00:00:00Z"),
            utc("2026-03-29T23:00:00Z"),
        );
        assert_eq!(spring[0].start, utc("2026-03-28T05:00:00Z"), "06:00 CET");
        assert_eq!(spring[1].start, utc("2026-03-29T04:00:00Z"), "06:00 CEST");
        assert_eq!((spring[0].end - spring[0].start).num_hours(), 23);
        let autumn = s.intervals_between(
            &tzb(tz),
            utc("2026-10-24T00:00:00Z"),
            utc("2026-10-25T23:00:00Z"),
        );
        assert_eq!((autumn[0].end - autumn[0].start).num_hours(), 25);
    }

    #[test]
    fn manual_interval_is_the_latest_complete_one() {
        let s = Schedule::parse("@hourly").unwrap();
        let i = s.manual_interval(&tzb(chrono_tz::UTC), utc("2026-05-01T10:30:00Z"));
        assert_eq!(i.start, utc("2026-05-01T09:00:00Z"));
        assert_eq!(i.end, utc("2026-05-01T10:00:00Z"));
        let n = Schedule::None.manual_interval(&tzb(chrono_tz::UTC), utc("2026-05-01T10:30:00Z"));
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
        let iv = s.intervals_between(&tzb(parse_timezone(tz).unwrap()), utc(from), utc(to));
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
        let iv = s.intervals_between(
            &tzb(ny),
            utc("2026-10-31T00:00:00Z"),
            utc("2026-11-02T00:00:00Z"),
        );
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
            &tzb(madrid),
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
                    &tzb(tz),
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
            let i = iv(&s, &b, Some(utc("2026-01-09T05:00:00Z")), now).unwrap();
            assert_eq!(i.start, utc("2026-01-09T02:00:00Z"), "catchup = {catchup}");
            assert_eq!(i.end, utc("2026-01-10T02:00:00Z"));
        }
        // An aligned end is its own latest tick: nothing changes.
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        let i = iv(&s, &b, Some(utc("2026-01-03T02:00:00Z")), now).unwrap();
        assert_eq!(i.start, utc("2026-01-03T02:00:00Z"));
    }

    fn run(logical: &str, start: &str, end: &str, after: &str) -> NextRun {
        NextRun {
            logical_date: utc(logical),
            data_interval: DataInterval {
                start: utc(start),
                end: utc(end),
            },
            run_after: utc(after),
        }
    }

    #[test]
    fn a_trigger_cron_runs_at_each_tick_with_an_optional_interval_before_it() {
        let with = Schedule::CronTrigger {
            cron: "0 2 * * *".into(),
            interval_ms: Some(86_400_000),
        };
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        let now = utc("2026-01-03T12:00:00Z");
        let r1 = with.next_run(&b, None, now).unwrap();
        let t1 = "2026-01-01T02:00:00Z";
        assert_eq!(r1, run(t1, "2025-12-31T02:00:00Z", t1, t1));
        let r2 = with.next_run(&b, Some(r1.data_interval.end), now).unwrap();
        assert_eq!(r2.logical_date, utc("2026-01-02T02:00:00Z"));
        let without = Schedule::CronTrigger {
            cron: "0 2 * * *".into(),
            interval_ms: None,
        };
        assert_eq!(
            without.next_run(&b, None, now).unwrap(),
            run(t1, t1, t1, t1)
        );
        // Without catchup: the latest tick that has passed.
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), false);
        let t = "2026-01-03T02:00:00Z";
        assert_eq!(without.next_run(&b, None, now).unwrap(), run(t, t, t, t));
        // A trigger cron keeps local time across DST (06:00 in Madrid, CET then CEST).
        let madrid = Schedule::CronTrigger {
            cron: "0 6 * * *".into(),
            interval_ms: None,
        };
        let b = bounds("Europe/Madrid", None, true);
        let r = madrid.runs_between(&b, utc("2026-03-28T00:00:00Z"), utc("2026-03-29T23:00:00Z"));
        let ticks: Vec<_> = r.iter().map(|r| r.logical_date).collect();
        assert_eq!(
            ticks,
            [utc("2026-03-28T05:00:00Z"), utc("2026-03-29T04:00:00Z")]
        );
        assert_eq!(
            madrid
                .manual_interval(&b, utc("2026-05-01T10:00:00Z"))
                .start,
            utc("2026-05-01T10:00:00Z")
        );
        assert_eq!(
            with.manual_interval(&b, utc("2026-05-01T10:00:00Z")).start,
            utc("2026-04-30T10:00:00Z")
        );
    }

    #[test]
    fn every_is_aligned_to_start_date_with_or_without_a_data_interval() {
        let b = bounds("UTC", Some("2026-01-01T00:10:00Z"), true);
        let now = utc("2026-01-01T01:00:00Z");
        let per = Schedule::Every {
            period_ms: 30 * 60_000,
            data_interval: true,
        };
        let r = per.next_run(&b, None, now).unwrap();
        assert_eq!(
            r,
            run(
                "2026-01-01T00:10:00Z",
                "2026-01-01T00:10:00Z",
                "2026-01-01T00:40:00Z",
                "2026-01-01T00:40:00Z"
            )
        );
        let r = per.next_run(&b, Some(r.data_interval.end), now).unwrap();
        assert_eq!(r.run_after, utc("2026-01-01T01:10:00Z"), "not due yet");
        let at_ticks = Schedule::Every {
            period_ms: 30 * 60_000,
            data_interval: false,
        };
        let t = "2026-01-01T00:10:00Z";
        assert_eq!(at_ticks.next_run(&b, None, now).unwrap(), run(t, t, t, t));
        // Without catchup: the latest period that has ended, or the latest tick.
        let nb = bounds("UTC", Some("2026-01-01T00:10:00Z"), false);
        let now = utc("2026-01-02T00:00:00Z");
        assert_eq!(
            per.next_run(&nb, None, now).unwrap().logical_date,
            utc("2026-01-01T23:10:00Z")
        );
        assert_eq!(
            at_ticks.next_run(&nb, None, now).unwrap().logical_date,
            utc("2026-01-01T23:40:00Z")
        );
        // No start date: nothing to align to, no runs.
        assert!(per
            .next_run(&bounds("UTC", None, true), None, now)
            .is_none());
    }

    #[test]
    fn at_runs_once_at_each_listed_time_then_stops() {
        let s = Schedule::At(vec![
            utc("2026-03-01T06:00:00Z"),
            utc("2026-04-01T06:00:00Z"),
        ]);
        let b = bounds("UTC", None, true);
        let now = utc("2026-05-01T00:00:00Z");
        let r1 = s.next_run(&b, None, now).unwrap();
        assert_eq!(r1.logical_date, utc("2026-03-01T06:00:00Z"));
        let r2 = s.next_run(&b, Some(r1.data_interval.end), now).unwrap();
        assert_eq!(r2.logical_date, utc("2026-04-01T06:00:00Z"));
        assert!(s.next_run(&b, Some(r2.data_interval.end), now).is_none());
        // Without catchup only the latest past time runs; a future one waits.
        let nb = bounds("UTC", None, false);
        let r = s.next_run(&nb, None, utc("2026-03-15T00:00:00Z")).unwrap();
        assert_eq!(r.logical_date, utc("2026-03-01T06:00:00Z"));
        let r = s.next_run(&nb, None, utc("2026-01-15T00:00:00Z")).unwrap();
        assert_eq!(r.logical_date, utc("2026-03-01T06:00:00Z"));
        assert!(r.run_after > utc("2026-01-15T00:00:00Z"));
    }

    #[test]
    fn any_of_runs_at_every_tick_of_its_crons_once() {
        let s = Schedule::AnyOf(vec![
            Schedule::CronTrigger {
                cron: "0 6 * * *".into(),
                interval_ms: Some(3_600_000),
            },
            Schedule::CronTrigger {
                cron: "0 6,18 * * *".into(),
                interval_ms: None,
            },
        ]);
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), true);
        let runs = s.upcoming(&b, None, utc("2026-01-01T00:00:00Z"), 4);
        let ticks: Vec<_> = runs.iter().map(|r| r.logical_date).collect();
        assert_eq!(
            ticks,
            [
                utc("2026-01-01T06:00:00Z"),
                utc("2026-01-01T18:00:00Z"),
                utc("2026-01-02T06:00:00Z"),
                utc("2026-01-02T18:00:00Z")
            ],
            "06:00 is in both crons and runs once"
        );
        assert_eq!(
            runs[0].data_interval.start,
            utc("2026-01-01T05:00:00Z"),
            "the first cron's interval"
        );
        assert_eq!(runs[1].data_interval.start, runs[1].data_interval.end);
    }

    #[test]
    fn upcoming_lists_the_next_runs_of_a_data_interval_cron() {
        let s = Schedule::parse("@daily").unwrap();
        let b = bounds("UTC", Some("2026-01-01T00:00:00Z"), false);
        let runs = s.upcoming(&b, None, utc("2026-03-10T12:00:00Z"), 3);
        let starts: Vec<_> = runs.iter().map(|r| r.logical_date).collect();
        assert_eq!(
            starts,
            [
                utc("2026-03-09T00:00:00Z"),
                utc("2026-03-10T00:00:00Z"),
                utc("2026-03-11T00:00:00Z")
            ]
        );
        assert!(Schedule::None
            .upcoming(&b, None, utc("2026-03-10T12:00:00Z"), 3)
            .is_empty());
    }

    #[test]
    fn schedules_are_stored_as_text_or_objects_and_old_specs_still_load() {
        let all = [
            Schedule::None,
            Schedule::parse("0 2 * * *").unwrap(),
            Schedule::CronTrigger {
                cron: "@hourly".into(),
                interval_ms: Some(60_000),
            },
            Schedule::Every {
                period_ms: 1_800_000,
                data_interval: false,
            },
            Schedule::At(vec![utc("2026-03-01T06:00:00Z")]),
            Schedule::AnyOf(vec![Schedule::CronTrigger {
                cron: "0 6 * * *".into(),
                interval_ms: None,
            }]),
        ];
        for s in &all {
            let json = serde_json::to_string(s).unwrap();
            let back: Schedule = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, s, "{json}");
        }
        assert_eq!(serde_json::to_string(&all[1]).unwrap(), "\"0 2 * * *\"");
        let bad =
            serde_json::from_str::<Schedule>(r#"{"type": "cron_trigger", "cron": "61 * * * *"}"#);
        assert!(bad.is_err());
        assert_eq!(all[2].describe(), "cron(\"@hourly\", interval = \"1m\")");
    }
}
