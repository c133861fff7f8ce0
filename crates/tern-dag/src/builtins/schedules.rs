//! The schedule builtins a DAG's `schedule =` takes besides a cron string: `cron(expr,
//! interval =)` (a run at each tick), `every(period, data_interval =)` (a fixed period aligned
//! to `start_date`), `at([times])` (a list of datetimes) and `any_of(...)` (several crons).
//!
//! Each returns a [`ScheduleValue`]: a draft checked as far as it can be on its own (crons,
//! durations, date formats); `dag()` finishes it with the DAG's time zone and `start_date`
//! through [`ScheduleDraft::resolve`].

use std::fmt;

use allocative::Allocative;
use starlark::environment::GlobalsBuilder;
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::values::none::NoneOr;
use starlark::values::tuple::UnpackTuple;
use starlark::values::{
    NoSerialize, ProvidesStaticType, StarlarkPagablePanic, StarlarkValue, Value, ValueLike,
};
use starlark_derive::starlark_value;
use tern_core::schedule::parse_local_date;
use tern_core::Schedule;

use super::{list_items, to_duration_ms, to_string};

/// A schedule as a DAG file wrote it, before the DAG's time zone is known.
#[derive(Debug, Clone, Allocative)]
pub(crate) enum ScheduleDraft {
    Cron {
        cron: String,
        interval_ms: Option<u64>,
    },
    Every {
        period_ms: u64,
        data_interval: bool,
    },
    /// The times as written, local to the DAG's time zone unless they carry an offset.
    At(Vec<String>),
    AnyOf(Vec<ScheduleDraft>),
}

impl ScheduleDraft {
    /// The schedule for a DAG in time zone `tz` with this `start_date`.
    pub(crate) fn resolve(
        &self,
        tz: chrono_tz::Tz,
        start_date: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Schedule, String> {
        Ok(match self {
            ScheduleDraft::Cron { cron, interval_ms } => Schedule::CronTrigger {
                cron: cron.clone(),
                interval_ms: *interval_ms,
            },
            ScheduleDraft::Every {
                period_ms,
                data_interval,
            } => {
                if start_date.is_none() {
                    return Err(
                        "every() counts its periods from `start_date`; set start_date, e.g. start_date = \"2026-01-01\""
                            .into(),
                    );
                }
                Schedule::Every {
                    period_ms: *period_ms,
                    data_interval: *data_interval,
                }
            }
            ScheduleDraft::At(texts) => {
                let mut times = texts
                    .iter()
                    .map(|t| parse_local_date(t, tz).map_err(|e| format!("at(): {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                times.sort();
                times.dedup();
                Schedule::At(times)
            }
            ScheduleDraft::AnyOf(all) => Schedule::AnyOf(
                all.iter()
                    .map(|s| s.resolve(tz, start_date))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

/// What `cron()`, `every()`, `at()` and `any_of()` return.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub(crate) struct ScheduleValue(pub ScheduleDraft);
starlark_simple_value!(ScheduleValue);

impl fmt::Display for ScheduleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ScheduleDraft::Cron { cron, .. } => write!(f, "<schedule cron({cron:?})>"),
            ScheduleDraft::Every { period_ms, .. } => write!(
                f,
                "<schedule every({:?})>",
                tern_core::format_duration(std::time::Duration::from_millis(*period_ms))
            ),
            ScheduleDraft::At(t) => write!(f, "<schedule at({} times)>", t.len()),
            ScheduleDraft::AnyOf(a) => write!(f, "<schedule any_of({} crons)>", a.len()),
        }
    }
}

#[starlark_value(type = "schedule")]
impl<'v> StarlarkValue<'v> for ScheduleValue {}

fn check_cron(fun: &str, expr: &str) -> anyhow::Result<()> {
    Schedule::Cron(expr.to_string())
        .check()
        .map_err(|e| anyhow::anyhow!("{fun}: {e}"))
}

#[starlark_module]
pub(super) fn schedule_builtins(builder: &mut GlobalsBuilder) {
    /// A run at every tick of a cron expression, its logical date the tick; its data interval
    /// the `interval` before the tick, or empty without one (Airflow's `CronTriggerTimetable`).
    fn cron<'v>(
        #[starlark(require = pos)] expr: &str,
        #[starlark(require = named, default = NoneOr::None)] interval: NoneOr<Value<'v>>,
    ) -> anyhow::Result<ScheduleValue> {
        check_cron("cron()", expr)?;
        let interval_ms = match interval.into_option() {
            None => None,
            Some(v) => {
                let ms =
                    to_duration_ms("interval", v).map_err(|e| anyhow::anyhow!("cron(): {e}"))?;
                (ms > 0).then_some(ms)
            }
        };
        Ok(ScheduleValue(ScheduleDraft::Cron {
            cron: expr.trim().to_string(),
            interval_ms,
        }))
    }

    /// A run every `period` counted from the DAG's `start_date`: with `data_interval` (the
    /// default) a run per period once it has ended, its logical date the period's start
    /// (Airflow's `DeltaDataIntervalTimetable`); without, a run at each tick.
    fn every<'v>(
        #[starlark(require = pos)] period: Value<'v>,
        #[starlark(require = named, default = true)] data_interval: bool,
    ) -> anyhow::Result<ScheduleValue> {
        let period_ms =
            to_duration_ms("period", period).map_err(|e| anyhow::anyhow!("every(): {e}"))?;
        if period_ms < 1000 {
            anyhow::bail!("every(): the period must be at least 1s, got {period}");
        }
        Ok(ScheduleValue(ScheduleDraft::Every {
            period_ms,
            data_interval,
        }))
    }

    /// A run at each of these datetimes (local to the DAG's time zone unless they carry an
    /// offset), as Airflow's `EventsTimetable`.
    fn at<'v>(#[starlark(require = pos)] times: Value<'v>) -> anyhow::Result<ScheduleValue> {
        let items = list_items("times", times).map_err(|e| anyhow::anyhow!("at(): {e}"))?;
        if items.is_empty() {
            anyhow::bail!("at(): give at least one datetime, e.g. at([\"2026-03-01T06:00\"])");
        }
        let mut texts = Vec::with_capacity(items.len());
        for v in items {
            let t = to_string("times[]", v).map_err(|e| anyhow::anyhow!("at(): {e}"))?;
            // The format is checked now; the instant is fixed once the DAG's zone is known.
            parse_local_date(&t, chrono_tz::UTC).map_err(|e| anyhow::anyhow!("at(): {e}"))?;
            texts.push(t);
        }
        Ok(ScheduleValue(ScheduleDraft::At(texts)))
    }

    /// A run at every tick of any of these crons (each `cron(...)` or a cron string); a time
    /// two of them share makes one run (Airflow's `MultipleCronTriggerTimetable`).
    fn any_of<'v>(
        #[starlark(args)] schedules: UnpackTuple<Value<'v>>,
    ) -> anyhow::Result<ScheduleValue> {
        let schedules = schedules.items;
        if schedules.len() < 2 {
            anyhow::bail!("any_of(): give two or more crons, e.g. any_of(cron(\"0 6 * * 1-5\"), cron(\"0 9 * * 0,6\"))");
        }
        let mut all = Vec::with_capacity(schedules.len());
        for (i, v) in schedules.into_iter().enumerate() {
            if let Some(expr) = v.unpack_str() {
                check_cron("any_of()", expr)?;
                all.push(ScheduleDraft::Cron {
                    cron: expr.trim().to_string(),
                    interval_ms: None,
                });
                continue;
            }
            match v.downcast_ref::<ScheduleValue>().map(|s| &s.0) {
                Some(c @ ScheduleDraft::Cron { .. }) => all.push(c.clone()),
                _ => anyhow::bail!(
                    "any_of(): argument {} must be cron(...) or a cron string, got {v}",
                    i + 1
                ),
            }
        }
        Ok(ScheduleValue(ScheduleDraft::AnyOf(all)))
    }
}

/// Whether `v` is what `cron()`, `every()`, `at()` or `any_of()` returned.
pub(super) fn is_schedule_value(v: Value) -> bool {
    v.downcast_ref::<ScheduleValue>().is_some()
}

/// A schedule value for a DAG in time zone `tz` with this `start_date`.
pub(super) fn resolve_value(
    v: Value,
    tz: chrono_tz::Tz,
    start_date: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Schedule, String> {
    match v.downcast_ref::<ScheduleValue>() {
        Some(s) => s.0.resolve(tz, start_date),
        None => Err(format!("`schedule` is not a schedule value: {v}")),
    }
}

/// The `schedule` field of `dag()` written as text: a cron string or `"none"`.
pub(super) fn to_cron_schedule(field: &str, v: Value) -> Result<Schedule, String> {
    let text = to_string(field, v).map_err(|_| {
        format!(
            "`{field}` must be a cron string, \"none\", cron(...), every(...), at([...]) or any_of(...), got {}",
            v.get_type()
        )
    })?;
    Schedule::parse(&text).map_err(|e| e.to_string())
}
