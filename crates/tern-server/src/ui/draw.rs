//! The UI's drawings, built as HTML/SVG text in one pass because they grow with DAG size: the
//! grid (tasks × runs, each cell coloured by state and linking to its task instance), the
//! graph (an SVG laid out left to right by longest path from the roots) and the Gantt chart
//! of a run.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use tern_core::DagSpec;
use tern_store::overview::GridCell;
use tern_store::DagRun;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_esc(&mut out, s);
    out
}

fn push_esc(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Percent-encodes a path segment (ids may hold `:`, `+`, spaces).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The grid: one row per task (DAG order), one column per run (oldest left). Cells are bare
/// `<td class="c s-STATE">` (a 10,000-task grid stays small); the page script turns a click on
/// one into its task instance's URL from the row's task and the column's run.
pub fn grid(spec: &DagSpec, runs: &[DagRun], cells: &[GridCell]) -> String {
    let mut by: HashMap<(i64, &str), &GridCell> = HashMap::with_capacity(cells.len());
    for c in cells {
        by.insert((c.run_pk, c.task_id.as_str()), c);
    }
    let dag = seg(&spec.dag_id);
    let mut out = String::with_capacity(64 + spec.tasks.len() * (40 + runs.len() * 28));
    let _ = write!(
        out,
        "<table class=\"grid\" data-dag=\"{dag}\"><thead><tr><th class=\"task\">task</th>"
    );
    for r in runs {
        let _ = write!(
            out,
            "<th data-r=\"{}\"><a class=\"run s-{}\" href=\"/dags/{dag}/runs/{}\" title=\"",
            seg(&r.run_id),
            r.state.as_str(),
            seg(&r.run_id)
        );
        push_esc(&mut out, &r.run_id);
        let _ = write!(out, " ({})\"></a></th>", r.state.as_str());
    }
    out.push_str("</tr></thead><tbody>");
    for t in &spec.tasks {
        let _ = write!(
            out,
            "<tr data-t=\"{}\"><td class=\"task\">",
            seg(&t.task_id)
        );
        push_esc(&mut out, &t.task_id);
        out.push_str("</td>");
        for r in runs {
            match by.get(&(r.pk, t.task_id.as_str())) {
                Some(c) => {
                    let _ = write!(out, "<td class=\"c s-{}\"></td>", c.state.as_str());
                }
                None => out.push_str("<td></td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Layers by longest path from a root; tasks come in topological order.
fn layers(spec: &DagSpec) -> (HashMap<&str, usize>, Vec<Vec<&str>>) {
    let mut layer: HashMap<&str, usize> = HashMap::with_capacity(spec.tasks.len());
    for t in &spec.tasks {
        let l = t
            .upstream
            .iter()
            .filter_map(|u| layer.get(u.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        layer.insert(&t.task_id, l);
    }
    let depth = layer.values().max().map(|m| m + 1).unwrap_or(0);
    let mut cols: Vec<Vec<&str>> = vec![Vec::new(); depth];
    for t in &spec.tasks {
        cols[layer[t.task_id.as_str()]].push(&t.task_id);
    }
    (layer, cols)
}

const NODE_W: usize = 170;
const NODE_H: usize = 30;
const GAP_X: usize = 60;
const GAP_Y: usize = 14;

/// The graph as SVG, nodes coloured by `states` (of one run) when given.
pub fn graph(spec: &DagSpec, states: &HashMap<String, String>) -> String {
    let (_, cols) = layers(spec);
    let mut pos: HashMap<&str, (usize, usize)> = HashMap::new();
    for (x, col) in cols.iter().enumerate() {
        for (y, id) in col.iter().enumerate() {
            pos.insert(id, (x * (NODE_W + GAP_X) + 10, y * (NODE_H + GAP_Y) + 10));
        }
    }
    let width = cols.len() * (NODE_W + GAP_X) + 20;
    let height = cols.iter().map(Vec::len).max().unwrap_or(0) * (NODE_H + GAP_Y) + 20;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\">\
         <path class=\"arrow\" d=\"M0,0 L8,4 L0,8 z\"/></marker></defs>"
    );
    for t in &spec.tasks {
        let (x2, y2) = pos[t.task_id.as_str()];
        for u in &t.upstream {
            if let Some(&(x1, y1)) = pos.get(u.as_str()) {
                let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
                let mid = (sx + ex) / 2;
                let _ = write!(
                    out,
                    "<path class=\"edge\" marker-end=\"url(#arrow)\" d=\"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}\"/>"
                );
            }
        }
    }
    for t in &spec.tasks {
        let (x, y) = pos[t.task_id.as_str()];
        let st = states.get(&t.task_id).map(String::as_str).unwrap_or("none");
        let _ = write!(
            out,
            "<g class=\"node s-{st}\" data-task=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"5\"/><text x=\"{}\" y=\"{}\">",
            esc(&t.task_id),
            x + 8,
            y + 19
        );
        let label: String = t.task_id.chars().take(22).collect();
        push_esc(&mut out, &label);
        out.push_str("</text><title>");
        push_esc(&mut out, &format!("{} ({st})", t.task_id));
        out.push_str("</title></g>");
    }
    out.push_str("</svg>");
    out
}

/// One bar of the Gantt chart.
pub struct Bar<'a> {
    pub task_id: &'a str,
    pub state: &'a str,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// The Gantt chart of a run: one row per task, bars from start to end (to now while running).
pub fn gantt(bars: &[Bar<'_>], now: DateTime<Utc>) -> String {
    let starts: Vec<DateTime<Utc>> = bars.iter().filter_map(|b| b.start).collect();
    let Some(t0) = starts.iter().min().copied() else {
        return "<p class=\"muted\">No task has started yet.</p>".into();
    };
    let t1 = bars
        .iter()
        .filter_map(|b| b.start.map(|_| b.end.unwrap_or(now)))
        .max()
        .unwrap_or(now)
        .max(t0 + chrono::Duration::milliseconds(1));
    let span = (t1 - t0).num_milliseconds().max(1) as f64;
    let (label_w, chart_w, row_h) = (180.0, 640.0, 18usize);
    let height = bars.len() * row_h + 24;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"gantt\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\">",
        label_w + chart_w + 10.0
    );
    for (i, b) in bars.iter().enumerate() {
        let y = i * row_h + 4;
        let _ = write!(out, "<text x=\"0\" y=\"{}\">", y + 12);
        push_esc(&mut out, &b.task_id.chars().take(24).collect::<String>());
        out.push_str("</text>");
        if let Some(s) = b.start {
            let e = b.end.unwrap_or(now);
            let x = label_w + (s - t0).num_milliseconds() as f64 / span * chart_w;
            let w = ((e - s).num_milliseconds() as f64 / span * chart_w).max(2.0);
            let _ = write!(
                out,
                "<rect class=\"s-{}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\"><title>",
                b.state,
                row_h - 4
            );
            push_esc(
                &mut out,
                &format!(
                    "{}: {} ({})",
                    b.task_id,
                    tern_core::format_duration((e - s).to_std().unwrap_or_default()),
                    b.state
                ),
            );
            out.push_str("</title></rect>");
        }
    }
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"{label_w}\" y=\"{}\">0</text><text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        height - 4,
        label_w + chart_w,
        height - 4,
        tern_core::format_duration((t1 - t0).to_std().unwrap_or_default())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_segments_encoded() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            seg("manual__2026-11-21T10:00:00+00:00"),
            "manual__2026-11-21T10%3A00%3A00%2B00%3A00"
        );
    }

    #[test]
    fn graph_lays_out_by_longest_path() {
        let spec = tern_testkit_free_dag();
        let (layer, cols) = layers(&spec);
        assert_eq!(layer["a"], 0);
        assert_eq!(layer["b"], 1);
        assert_eq!(
            layer["c"], 2,
            "c waits for b, so it sits after b even though a feeds it too"
        );
        assert_eq!(cols.len(), 3);
        let svg = graph(
            &spec,
            &HashMap::from([("b".to_string(), "failed".to_string())]),
        );
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 3);
        assert_eq!(
            svg.matches("marker-end=\"url(#arrow)\"").count(),
            3,
            "each edge has an arrowhead"
        );
        assert!(svg.contains("node s-failed\" data-task=\"b\""));
        assert!(svg.contains("&lt;x&gt;"), "task ids are escaped");
    }

    fn tern_testkit_free_dag() -> DagSpec {
        let mut d: DagSpec = serde_json::from_value(serde_json::json!({
            "dag_id": "d", "file": "d.star", "line": 1, "schedule": "none", "timezone": "UTC",
            "start_date": null, "end_date": null, "catchup": false, "max_active_runs": 1,
            "max_active_tasks": 1, "tasks": []
        }))
        .expect("a minimal spec");
        for (id, up) in [
            ("a", vec![]),
            ("b", vec!["a"]),
            ("c", vec!["a", "b"]),
            ("<x>", vec![]),
        ] {
            let mut t = tern_core::TaskSpec::new(id, tern_core::TaskKind::Empty);
            t.upstream = up.into_iter().map(String::from).collect();
            d.tasks.push(t);
        }
        d
    }
}
