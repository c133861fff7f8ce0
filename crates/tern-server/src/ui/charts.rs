//! Charts of a DAG's history, drawn as SVG in Rust like the grid: task durations and landing
//! times over its last runs (bars per run for one task or for the whole run, a line per task
//! for the slowest tasks) and the calendar of daily run states over a year.
//!
//! The numbers come from [`TaskTimes`]: per run, each task's duration (for a mapped task, its
//! first instance's start to its last instance's end) and landing time (its end after the
//! end of the run's data interval, Airflow's "landing time": how late the data landed).

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use tern_store::overview::GridCell;
use tern_store::DagRun;

use super::draw::{push_esc, seg};

/// Colours of the lines of the task-durations chart, in turn.
const PALETTE: [&str; 10] = [
    "#2463eb", "#d93636", "#2e9d4f", "#b7791f", "#7c3aed", "#0e9f9a", "#db2777", "#4b5563",
    "#ea580c", "#65a30d",
];

/// The first start and last end of a task's instances in one run.
type Span = (DateTime<Utc>, DateTime<Utc>);

/// Minimum, median and maximum.
pub type Spread = (f64, f64, f64);

/// Per run (oldest first), each task's duration and landing time in seconds.
pub struct TaskTimes {
    pub durations: HashMap<String, Vec<Option<f64>>>,
    pub landings: HashMap<String, Vec<Option<f64>>>,
}

impl TaskTimes {
    pub fn of(runs: &[DagRun], cells: &[GridCell]) -> Self {
        let column: HashMap<i64, usize> = runs.iter().enumerate().map(|(i, r)| (r.pk, i)).collect();
        // (task, run column) → (first start, last end) over the task's instances.
        let mut spans: HashMap<(&str, usize), Span> = HashMap::new();
        for c in cells {
            let (Some(i), Some(start), Some(end)) =
                (column.get(&c.run_pk), c.started_at, c.ended_at)
            else {
                continue;
            };
            let e = spans
                .entry((c.task_id.as_str(), *i))
                .or_insert((start, end));
            e.0 = e.0.min(start);
            e.1 = e.1.max(end);
        }
        let mut durations: HashMap<String, Vec<Option<f64>>> = HashMap::new();
        let mut landings: HashMap<String, Vec<Option<f64>>> = HashMap::new();
        for ((task, i), (start, end)) in spans {
            let secs = |d: Duration| d.num_milliseconds() as f64 / 1000.0;
            durations
                .entry(task.to_string())
                .or_insert_with(|| vec![None; runs.len()])[i] = Some(secs(end - start));
            landings
                .entry(task.to_string())
                .or_insert_with(|| vec![None; runs.len()])[i] =
                Some(secs(end - runs[i].data_interval.end));
        }
        TaskTimes {
            durations,
            landings,
        }
    }
}

/// Minimum, median and maximum of the values present.
pub fn spread(values: &[Option<f64>]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[0], v[v.len() / 2], v[v.len() - 1]))
}

/// Seconds as people read them (`850ms`, `2m 5s`; negative for early).
pub fn human(secs: f64) -> String {
    let d = std::time::Duration::from_millis((secs.abs() * 1000.0).round() as u64);
    let text = tern_core::human_duration(d);
    if secs < 0.0 {
        format!("-{text}")
    } else {
        text
    }
}

/// A value axis from 0 to a round number at or above `max`, with its ticks.
fn axis(max: f64) -> (f64, Vec<f64>) {
    let max = max.max(0.001);
    let step_raw = max / 4.0;
    let mag = 10f64.powf(step_raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= step_raw)
        .unwrap_or(10.0 * mag);
    let top = (max / step).ceil() * step;
    let ticks = (0..=((top / step).round() as usize))
        .map(|i| i as f64 * step)
        .collect();
    (top, ticks)
}

const LEFT: f64 = 64.0;
/// The width each run gets: the runs share at least 420 px, so that few runs still make a
/// readable chart with both end dates apart.
fn slot_of(runs: usize) -> f64 {
    (420.0 / runs.max(1) as f64).max(14.0)
}
const HEIGHT: f64 = 180.0;
const TOP: f64 = 10.0;

fn frame(out: &mut String, id: &str, width: f64, top: f64, ticks: &[f64]) {
    let _ = write!(
        out,
        "<svg class=\"chart\" id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        width + LEFT + 10.0,
        HEIGHT + TOP + 24.0
    );
    for t in ticks {
        let y = TOP + HEIGHT - t / top * HEIGHT;
        let _ = write!(
            out,
            "<line class=\"tick\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + width,
            LEFT - 6.0,
            y + 4.0,
            if *t == 0.0 { "0".to_string() } else { human(*t) }
        );
    }
}

/// One bar per run (oldest left) of `values` (seconds), coloured by the run's state, each
/// linking to `hrefs[i]`; a run without a value has no bar. Negative values (early landings)
/// are drawn as 0 and named in the bar's title.
pub fn run_bars(id: &str, runs: &[DagRun], values: &[Option<f64>], hrefs: &[String]) -> String {
    let max = values.iter().flatten().fold(0f64, |m, v| m.max(*v));
    let (top, ticks) = axis(max);
    let slot = slot_of(runs.len());
    let width = runs.len() as f64 * slot;
    let bar = (slot - 6.0).min(36.0);
    let mut out = String::new();
    frame(&mut out, id, width, top, &ticks);
    for (i, (r, v)) in runs.iter().zip(values).enumerate() {
        let Some(v) = v else { continue };
        let h = (v.max(0.0) / top * HEIGHT).max(1.0);
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let _ = write!(
            out,
            "<a href=\"{}\"><rect class=\"bar s-{}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{h:.1}\"><title>",
            hrefs.get(i).map(String::as_str).unwrap_or("#"),
            r.state.as_str(),
            TOP + HEIGHT - h,
            bar
        );
        push_esc(&mut out, &format!("{}: {}", r.run_id, human(*v)));
        out.push_str("</title></rect></a>");
    }
    axis_label(&mut out, runs, slot);
    out.push_str("</svg>");
    out
}

/// The oldest and newest runs' dates under the x axis.
fn axis_label(out: &mut String, runs: &[DagRun], slot: f64) {
    let y = TOP + HEIGHT + 16.0;
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"{LEFT}\" y=\"{y}\">{}</text><text class=\"axis\" x=\"{:.1}\" y=\"{y}\" text-anchor=\"end\">{}</text>",
            first.logical_date.format("%Y-%m-%d %H:%M"),
            LEFT + runs.len() as f64 * slot,
            last.logical_date.format("%Y-%m-%d %H:%M")
        );
    }
}

/// One line per series (`(task, values per run)`), with a point per run that has a value, in
/// the palette's colours in turn.
pub fn task_lines(id: &str, runs: &[DagRun], series: &[(&str, &[Option<f64>])]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0f64, |m, v| m.max(*v));
    let (top, ticks) = axis(max);
    let slot = slot_of(runs.len());
    let width = runs.len() as f64 * slot;
    let mut out = String::new();
    frame(&mut out, id, width, top, &ticks);
    for (k, (task, values)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<(f64, f64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.map(|v| {
                    (
                        LEFT + i as f64 * slot + slot / 2.0,
                        TOP + HEIGHT - v.max(0.0) / top * HEIGHT,
                        v,
                    )
                })
            })
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            out,
            "<g class=\"series\" data-task=\"{}\"><polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" points=\"{}\"/>",
            seg(task),
            path.join(" ")
        );
        for (x, y, v) in &points {
            let _ = write!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.6\" fill=\"{colour}\"><title>"
            );
            push_esc(&mut out, &format!("{task}: {}", human(*v)));
            out.push_str("</title></circle>");
        }
        out.push_str("</g>");
    }
    axis_label(&mut out, runs, slot);
    out.push_str("</svg>");
    out
}

/// The colour of the `k`th line of [`task_lines`], for its legend.
pub fn line_colour(k: usize) -> &'static str {
    PALETTE[k % PALETTE.len()]
}

/// A day of the calendar: how many runs had their logical date on it, by final state.
#[derive(Default, Clone, Copy)]
pub struct Day {
    pub success: u32,
    pub failed: u32,
    pub active: u32,
}

impl Day {
    /// The state the day's square shows: failed if any run failed, then running while any
    /// runs, success when all succeeded.
    fn state(&self) -> &'static str {
        if self.failed > 0 {
            "failed"
        } else if self.active > 0 {
            "running"
        } else if self.success > 0 {
            "success"
        } else {
            "none"
        }
    }
}

/// A year of days (weeks as columns, Monday on top) ending with `today`, each square coloured
/// by its runs and linking to them on the Browse page.
pub fn calendar(dag_id: &str, days: &HashMap<NaiveDate, Day>, today: NaiveDate) -> String {
    let cell = 13.0;
    let first = today - Duration::days(364);
    // Start on the Monday of the first day's week.
    let start = first - Duration::days(first.weekday().num_days_from_monday() as i64);
    let weeks = ((today - start).num_days() / 7 + 1) as usize;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"calendar\" id=\"calendar\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">",
        30.0 + weeks as f64 * cell + 10.0,
        20.0 + 7.0 * cell + 4.0
    );
    for (row, name) in [(0, "Mon"), (2, "Wed"), (4, "Fri")] {
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"0\" y=\"{:.1}\">{name}</text>",
            20.0 + row as f64 * cell + 10.0
        );
    }
    let mut month_shown = None;
    for w in 0..weeks {
        for d in 0..7 {
            let date = start + Duration::days((w * 7 + d) as i64);
            if date < first || date > today {
                continue;
            }
            let x = 30.0 + w as f64 * cell;
            // A month's name over the week holding its first days.
            if (d == 0 || date == first) && month_shown != Some(date.month()) && date.day() <= 7 {
                let _ = write!(
                    out,
                    "<text class=\"axis\" x=\"{x:.1}\" y=\"12\">{}</text>",
                    date.format("%b")
                );
                month_shown = Some(date.month());
            }
            let day = days.get(&date).copied().unwrap_or_default();
            let y = 20.0 + d as f64 * cell;
            let runs = day.success + day.failed + day.active;
            let title = if runs == 0 {
                format!("{date}: no runs")
            } else {
                format!(
                    "{date}: {runs} run{} ({} success, {} failed, {} running)",
                    if runs == 1 { "" } else { "s" },
                    day.success,
                    day.failed,
                    day.active
                )
            };
            let square = format!(
                "<rect class=\"day s-{}\" data-date=\"{date}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{}\" height=\"{}\" rx=\"2\"><title>{title}</title></rect>",
                day.state(),
                cell - 2.0,
                cell - 2.0
            );
            if runs > 0 {
                let _ = write!(
                    out,
                    "<a href=\"/browse?what=runs&amp;state=any&amp;dag={}&amp;since={date}&amp;until={date}\">{square}</a>",
                    seg(dag_id)
                );
            } else {
                out.push_str(&square);
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_a_round_number_at_or_above_the_largest_value() {
        assert_eq!(axis(7.3).0, 8.0);
        assert!((axis(0.42).0 - 0.6).abs() < 1e-9);
        assert_eq!(axis(3600.0).0, 4000.0);
        let (top, ticks) = axis(95.0);
        assert_eq!(top, 100.0);
        assert_eq!(ticks, [0.0, 25.0, 50.0, 75.0, 100.0]);
    }

    #[test]
    fn spread_is_over_the_values_present() {
        assert_eq!(
            spread(&[None, Some(3.0), Some(1.0), Some(2.0)]),
            Some((1.0, 2.0, 3.0))
        );
        assert_eq!(spread(&[None]), None);
        assert_eq!(human(-90.0), "-1m 30s");
    }

    #[test]
    fn a_day_with_any_failed_run_is_failed() {
        let day = |success, failed, active| Day {
            success,
            failed,
            active,
        };
        assert_eq!(day(3, 1, 0).state(), "failed");
        assert_eq!(day(3, 0, 1).state(), "running");
        assert_eq!(day(3, 0, 0).state(), "success");
        assert_eq!(day(0, 0, 0).state(), "none");
        let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let mut days = HashMap::new();
        days.insert(today, day(0, 1, 0));
        let svg = calendar("d", &days, today);
        assert_eq!(svg.matches("<rect").count(), 365);
        assert!(svg.contains("class=\"day s-failed\" data-date=\"2026-12-06\""));
        assert!(svg.contains("since=2026-12-06&amp;until=2026-12-06"));
    }
}
