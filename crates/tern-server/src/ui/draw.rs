//! The UI's drawings, built as HTML/SVG text in one pass because they grow with DAG size: the
//! grid (tasks × runs, each cell coloured by state and linking to its task instance), the
//! graph (an SVG laid out left to right by longest path from the roots) and the Gantt chart
//! of a run.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use tern_core::{DagSpec, TaskState};
use tern_store::overview::GridCell;
use tern_store::DagRun;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_esc(&mut out, s);
    out
}

pub(super) fn push_esc(out: &mut String, s: &str) {
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
///
/// Task groups get a header row (`tr.grp`, its cells the group's summary state with counts in
/// the title) followed by their tasks and inner groups; every row names the groups it sits in
/// (`data-in`), so the page script can collapse and expand them.
///
/// A mapped task's cell stands for all its instances: the summary state (as a group's), the
/// number of instances as its text and the counts by state in its title (`class="c mapped"`); a
/// click opens the task page, which lists the instances.
/// One page of the grid's rows: a range of [`grid_rows`] and the tasks in it.
pub struct GridPage {
    rows: std::ops::Range<usize>,
    /// The ids of the tasks on the page (their cells are all the page needs; a group on the
    /// page is never split, so its summary sees every task in it).
    pub task_ids: Vec<String>,
}

/// The grid's rows cut into pages of about `tasks_per_page` task rows, breaking only before
/// a row outside every group.
pub fn grid_pages(spec: &DagSpec, tasks_per_page: usize) -> Vec<GridPage> {
    let rows = grid_rows(spec);
    let mut pages = Vec::new();
    let (mut start, mut tasks) = (0, Vec::new());
    for (i, row) in rows.iter().enumerate() {
        let top = match row {
            GridRow::Task { groups, .. } | GridRow::Group { groups, .. } => groups.is_empty(),
        };
        if top && tasks.len() >= tasks_per_page.max(1) {
            pages.push(GridPage {
                rows: start..i,
                task_ids: std::mem::take(&mut tasks),
            });
            start = i;
        }
        if let GridRow::Task { idx, .. } = row {
            tasks.push(spec.tasks[*idx].task_id.clone());
        }
    }
    pages.push(GridPage {
        rows: start..rows.len(),
        task_ids: tasks,
    });
    pages
}

/// The whole grid (every row) of `spec`; see [`grid_page`].
pub fn grid(spec: &DagSpec, runs: &[DagRun], cells: &[GridCell]) -> String {
    let all = GridPage {
        rows: 0..usize::MAX,
        task_ids: Vec::new(),
    };
    grid_page(spec, runs, cells, &all)
}

/// The grid of `spec`'s rows on `page` (tasks × runs, oldest run left), each run's header a
/// bar as tall as it took.
pub fn grid_page(spec: &DagSpec, runs: &[DagRun], cells: &[GridCell], page: &GridPage) -> String {
    let mut by: HashMap<(i64, &str), Vec<&GridCell>> = HashMap::with_capacity(cells.len());
    for c in cells {
        by.entry((c.run_pk, c.task_id.as_str()))
            .or_default()
            .push(c);
    }
    let dag = seg(&spec.dag_id);
    let mut out = String::with_capacity(64 + spec.tasks.len() * (40 + runs.len() * 28));
    let _ = write!(
        out,
        "<table class=\"grid\" data-dag=\"{dag}\"><thead><tr><th class=\"task\">task</th>"
    );
    // Each run's header is a bar whose height is its duration against the longest shown
    // (Airflow's run bars above the grid): ten heights, as classes (the CSP allows no inline
    // style).
    let now = chrono::Utc::now();
    let took = |r: &DagRun| {
        r.started_at
            .map(|s| (r.ended_at.unwrap_or(now) - s).num_milliseconds().max(0))
    };
    let longest = runs.iter().filter_map(took).max().unwrap_or(0).max(1);
    for r in runs {
        let height = took(r).map_or(0, |ms| ((ms * 10 + longest - 1) / longest).clamp(1, 10));
        let _ = write!(
            out,
            "<th data-r=\"{}\"><a class=\"run h{height} s-{}\" href=\"/dags/{dag}/runs/{}\" title=\"",
            seg(&r.run_id),
            r.state.as_str(),
            seg(&r.run_id)
        );
        push_esc(&mut out, &r.run_id);
        let _ = write!(out, " ({}", r.state.as_str());
        if let Some(ms) = took(r) {
            let _ = write!(
                out,
                ", {}",
                tern_core::human_duration(std::time::Duration::from_millis(ms as u64))
            );
        }
        out.push_str(")\"></a></th>");
    }
    out.push_str("</tr></thead><tbody>");
    let rows = grid_rows(spec);
    let end = page.rows.end.min(rows.len());
    for row in rows.into_iter().take(end).skip(page.rows.start) {
        match row {
            GridRow::Task { idx, groups } => {
                let t = &spec.tasks[idx];
                let _ = write!(out, "<tr data-t=\"{}\"", seg(&t.task_id));
                push_in(&mut out, &groups);
                let _ = write!(out, "><td class=\"task d{}\">", groups.len().min(8));
                // Inside a group the row shows the task's own name; the title has its id.
                let shown = t
                    .group
                    .as_deref()
                    .and_then(|g| t.task_id.strip_prefix(g))
                    .map(|r| r.trim_start_matches('.'))
                    .unwrap_or(&t.task_id);
                if shown.len() != t.task_id.len() {
                    out.push_str("<span title=\"");
                    push_esc(&mut out, &t.task_id);
                    out.push_str("\">");
                    push_esc(&mut out, shown);
                    out.push_str("</span>");
                } else {
                    push_esc(&mut out, &t.task_id);
                }
                out.push_str("</td>");
                for r in runs {
                    match by.get(&(r.pk, t.task_id.as_str())).map(Vec::as_slice) {
                        Some([c]) if c.map_index < 0 => {
                            let _ = write!(out, "<td class=\"c s-{}\"></td>", c.state.as_str());
                        }
                        Some(instances) if !instances.is_empty() => {
                            push_mapped_cell(&mut out, instances)
                        }
                        _ => out.push_str("<td></td>"),
                    }
                }
                out.push_str("</tr>");
            }
            GridRow::Group { group, groups } => {
                out.push_str("<tr class=\"grp\" data-grp=\"");
                push_esc(&mut out, group);
                out.push('"');
                push_in(&mut out, &groups);
                let _ = write!(out, "><td class=\"task d{}\"><button type=\"button\" class=\"grp-toggle\" aria-expanded=\"false\">", groups.len().min(8));
                let name = group.rsplit('.').next().unwrap_or(group);
                push_esc(&mut out, name);
                out.push_str("</button></td>");
                let members: Vec<&str> = spec
                    .tasks
                    .iter()
                    .filter(|t| t.in_group(group))
                    .map(|t| t.task_id.as_str())
                    .collect();
                for r in runs {
                    let states = members
                        .iter()
                        .filter_map(|m| by.get(&(r.pk, *m)))
                        .flatten()
                        .map(|c| c.state);
                    match group_state(states) {
                        Some((state, counts)) => {
                            out.push_str("<td class=\"g s-");
                            out.push_str(state.as_str());
                            out.push_str("\" title=\"");
                            push_esc(&mut out, &counts);
                            out.push_str("\"></td>");
                        }
                        None => out.push_str("<td></td>"),
                    }
                }
                out.push_str("</tr>");
            }
        }
    }
    out.push_str("</tbody></table>");
    out
}

/// The cell of a mapped task in one run: its instances' summary state, how many there are, and
/// the counts by state (instances a later expansion removed are left out).
fn push_mapped_cell(out: &mut String, instances: &[&GridCell]) {
    let live: Vec<TaskState> = instances
        .iter()
        .map(|c| c.state)
        .filter(|s| *s != TaskState::Removed)
        .collect();
    let n = live.len();
    match group_state(live.into_iter()) {
        Some((state, counts)) => {
            let _ = write!(out, "<td class=\"c mapped s-{}\" title=\"", state.as_str());
            let shown = if instances.iter().any(|c| c.map_index >= 0) {
                format!("{n} mapped: {counts}")
            } else {
                counts
            };
            push_esc(out, &shown);
            let _ = write!(out, "\"><span>{n}</span></td>");
        }
        None => out.push_str("<td></td>"),
    }
}

/// ` data-in="outer outer.inner"`: the groups a row sits in, outermost first.
fn push_in(out: &mut String, groups: &[&str]) {
    if groups.is_empty() {
        return;
    }
    out.push_str(" data-in=\"");
    push_esc(out, &groups.join(" "));
    out.push('"');
}

/// A row of the grid, with the groups it sits in (outermost first).
enum GridRow<'a> {
    Task {
        idx: usize,
        groups: Vec<&'a str>,
    },
    Group {
        group: &'a str,
        groups: Vec<&'a str>,
    },
}

/// The grid's rows: tasks in DAG order, each group's header where its first task would be,
/// followed by everything inside it.
fn grid_rows(spec: &DagSpec) -> Vec<GridRow<'_>> {
    if spec.groups.is_empty() {
        return (0..spec.tasks.len())
            .map(|idx| GridRow::Task {
                idx,
                groups: Vec::new(),
            })
            .collect();
    }
    // What each group (or the top, `None`) holds, in order of first appearance.
    #[derive(Clone, Copy)]
    enum Item<'a> {
        Task(usize),
        Group(&'a str),
    }
    let mut children: HashMap<Option<&str>, Vec<Item>> = HashMap::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let chain = |t: &tern_core::TaskSpec| -> Vec<&str> {
        let mut c: Vec<&str> = spec
            .groups
            .iter()
            .map(|g| g.group_id.as_str())
            .filter(|g| t.in_group(g))
            .collect();
        c.sort_by_key(|g| g.len());
        c
    };
    for (idx, t) in spec.tasks.iter().enumerate() {
        let groups = chain(t);
        let mut parent: Option<&str> = None;
        for g in &groups {
            if seen.insert(g) {
                children.entry(parent).or_default().push(Item::Group(g));
            }
            parent = Some(g);
        }
        children.entry(parent).or_default().push(Item::Task(idx));
    }
    let mut rows = Vec::with_capacity(spec.tasks.len() + seen.len());
    let mut stack: Vec<(Option<&str>, usize, Vec<&str>)> = vec![(None, 0, Vec::new())];
    while let Some((at, pos, groups)) = stack.pop() {
        let Some(item) = children.get(&at).and_then(|c| c.get(pos)).copied() else {
            continue;
        };
        stack.push((at, pos + 1, groups.clone()));
        match item {
            Item::Task(idx) => rows.push(GridRow::Task { idx, groups }),
            Item::Group(g) => {
                rows.push(GridRow::Group {
                    group: g,
                    groups: groups.clone(),
                });
                let mut inner = groups;
                inner.push(g);
                stack.push((Some(g), 0, inner));
            }
        }
    }
    rows
}

/// A group's state in one run from its tasks' (Airflow's order: a failure shows first, then
/// work in progress, then waiting; all skipped is skipped, otherwise done is success), with
/// the counts by state for the cell's title.
fn group_state(states: impl Iterator<Item = TaskState>) -> Option<(TaskState, String)> {
    let mut counts: Vec<(TaskState, usize)> = Vec::new();
    for s in states {
        match counts.iter_mut().find(|(c, _)| *c == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    let state = tern_core::state::summary_state(counts.iter().map(|(s, _)| *s))?;
    counts.sort_by_key(|(s, _)| s.as_str());
    let text = counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some((state, text))
}

const NODE_W: usize = 170;
const NODE_H: usize = 30;
const GAP_X: usize = 60;
const GAP_Y: usize = 14;

/// A node of the drawn graph: a task, or a closed task group standing for all its tasks.
struct GraphNode<'a> {
    id: &'a str,
    /// `Some` for a closed group: its tasks' summary state and counts.
    group: Option<(TaskState, String)>,
    state: &'a str,
}

/// The graph as SVG, nodes coloured by `states` (of one run) when given. Task groups not in
/// `open` are drawn as one node (a link that opens it; the page lists open groups to close),
/// with edges to and from their tasks merged.
pub fn graph(
    spec: &DagSpec,
    states: &HashMap<String, String>,
    open: &std::collections::HashSet<String>,
    link: &dyn Fn(&str) -> String,
) -> String {
    // The node each task is drawn as: itself, or the outermost closed group it is in.
    let closed: Vec<&str> = {
        let mut g: Vec<&str> = spec
            .groups
            .iter()
            .map(|g| g.group_id.as_str())
            .filter(|g| !open.contains(*g))
            .collect();
        g.sort_by_key(|g| g.len());
        g
    };
    let node_of = |t: &'_ tern_core::TaskSpec| -> usize {
        closed
            .iter()
            .position(|g| t.in_group(g))
            .map(|i| spec.tasks.len() + i)
            .unwrap_or(usize::MAX)
    };
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut nodes: Vec<GraphNode> = Vec::new();
    let mut task_node: Vec<usize> = Vec::with_capacity(spec.tasks.len());
    for (i, t) in spec.tasks.iter().enumerate() {
        let key = match node_of(t) {
            usize::MAX => i,
            k => k,
        };
        let n = *index.entry(key).or_insert_with(|| {
            nodes.push(match key.checked_sub(spec.tasks.len()) {
                None => GraphNode {
                    id: &t.task_id,
                    group: None,
                    state: states.get(&t.task_id).map(String::as_str).unwrap_or("none"),
                },
                Some(g) => {
                    let g = closed[g];
                    let members = spec.tasks.iter().filter(|m| m.in_group(g)).map(|m| {
                        states
                            .get(&m.task_id)
                            .and_then(|s| s.parse::<TaskState>().ok())
                            .unwrap_or(TaskState::None)
                    });
                    let summary = group_state(members).unwrap_or((TaskState::None, String::new()));
                    GraphNode {
                        id: g,
                        group: Some(summary),
                        state: "none",
                    }
                }
            });
            nodes.len() - 1
        });
        task_node.push(n);
    }
    let pos_of: HashMap<&str, usize> = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.task_id.as_str(), i))
        .collect();
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (i, t) in spec.tasks.iter().enumerate() {
        for u in &t.upstream {
            if let Some(&j) = pos_of.get(u.as_str()) {
                let e = (task_node[j], task_node[i]);
                if e.0 != e.1 && !edges.contains(&e) {
                    edges.push(e);
                }
            }
        }
    }
    // Layers by longest path; nodes come in first-task order, which is topological unless
    // closing a group made a cycle (then a node goes one past the layers known so far).
    let mut layer = vec![0usize; nodes.len()];
    let mut forward: Vec<(usize, usize)> = edges.iter().copied().filter(|(a, b)| a < b).collect();
    forward.sort_by_key(|&(_, b)| b);
    for (a, b) in forward {
        layer[b] = layer[b].max(layer[a] + 1);
    }
    let depth = layer.iter().max().map(|m| m + 1).unwrap_or(0);
    let mut cols: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (n, l) in layer.iter().enumerate() {
        cols[*l].push(n);
    }
    let mut pos: Vec<(usize, usize)> = vec![(0, 0); nodes.len()];
    for (x, col) in cols.iter().enumerate() {
        for (y, &n) in col.iter().enumerate() {
            pos[n] = (x * (NODE_W + GAP_X) + 10, y * (NODE_H + GAP_Y) + 10);
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
    for &(a, b) in &edges {
        let ((x1, y1), (x2, y2)) = (pos[a], pos[b]);
        let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
        let mid = (sx + ex) / 2;
        let _ = write!(
            out,
            "<path class=\"edge\" marker-end=\"url(#arrow)\" d=\"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}\"/>"
        );
    }
    for (n, node) in nodes.iter().enumerate() {
        let (x, y) = pos[n];
        match &node.group {
            None => {
                let st = node.state;
                let _ = write!(
                    out,
                    "<g class=\"node s-{st}\" data-task=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"5\"/><text x=\"{}\" y=\"{}\">",
                    esc(node.id),
                    x + 8,
                    y + 19
                );
                let label: String = node.id.chars().take(22).collect();
                push_esc(&mut out, &label);
                out.push_str("</text><title>");
                push_esc(&mut out, &format!("{} ({st})", node.id));
                out.push_str("</title></g>");
            }
            Some((st, counts)) => {
                out.push_str("<a href=\"");
                push_esc(&mut out, &link(node.id));
                let _ = write!(
                    out,
                    "\"><g class=\"node group s-{}\" data-group=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"12\"/><text x=\"{}\" y=\"{}\">",
                    st.as_str(),
                    esc(node.id),
                    x + 8,
                    y + 19
                );
                let label: String = format!("▸ {}", node.id).chars().take(22).collect();
                push_esc(&mut out, &label);
                out.push_str("</text><title>");
                push_esc(
                    &mut out,
                    &format!("group {} ({counts}); click to open", node.id),
                );
                out.push_str("</title></g></a>");
            }
        }
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
                    tern_core::human_duration((e - s).to_std().unwrap_or_default()),
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
        tern_core::human_duration((t1 - t0).to_std().unwrap_or_default())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_grid_is_paged_without_splitting_a_group() {
        use tern_testkit::{dag, task};
        let plain = dag("p", (0..5).map(|i| task(&format!("t{i}"), &[])).collect());
        let pages: Vec<Vec<String>> = grid_pages(&plain, 2)
            .into_iter()
            .map(|p| p.task_ids)
            .collect();
        assert_eq!(pages, [vec!["t0", "t1"], vec!["t2", "t3"], vec!["t4"]]);

        let mut grouped = dag(
            "g",
            vec![
                task("t0", &[]),
                task("g.a", &[]),
                task("g.b", &[]),
                task("g.c", &[]),
                task("t4", &[]),
            ],
        );
        for t in &mut grouped.tasks[1..4] {
            t.group = Some("g".into());
        }
        grouped.groups.push(tern_core::GroupSpec {
            group_id: "g".into(),
            tooltip: None,
        });
        let pages = grid_pages(&grouped, 2);
        let ids: Vec<Vec<String>> = pages.iter().map(|p| p.task_ids.clone()).collect();
        assert_eq!(ids, [vec!["t0", "g.a", "g.b", "g.c"], vec!["t4"]]);
        // The second page shows t4's row only; the first, the group's header and members.
        let html = grid_page(&grouped, &[], &[], &pages[1]);
        assert!(
            html.contains("data-t=\"t4\"") && !html.contains("data-t=\"t0\""),
            "{html}"
        );
        let html = grid_page(&grouped, &[], &[], &pages[0]);
        assert!(
            html.contains("data-grp=\"g\"") && html.contains("data-t=\"g.c\""),
            "{html}"
        );
        assert!(!html.contains("data-t=\"t4\""), "{html}");
    }

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

    /// The x of node `attr` (`data-task="c"` or `data-group="g"`) in an SVG graph.
    fn x_of(svg: &str, attr: &str) -> usize {
        let at = svg.find(attr).unwrap_or_else(|| panic!("{attr} in {svg}"));
        let rest = &svg[at..];
        let x = &rest[rest.find("x=\"").unwrap() + 3..];
        x[..x.find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn graph_lays_out_by_longest_path() {
        let spec = tern_testkit_free_dag();
        let svg = graph(
            &spec,
            &HashMap::from([("b".to_string(), "failed".to_string())]),
            &Default::default(),
            &|g| format!("?open={g}"),
        );
        let (a, b, c) = (
            x_of(&svg, "data-task=\"a\""),
            x_of(&svg, "data-task=\"b\""),
            x_of(&svg, "data-task=\"c\""),
        );
        assert!(
            a < b && b < c,
            "c waits for b, so it sits after b even though a feeds it too: {a} {b} {c}"
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

    #[test]
    fn a_closed_group_is_one_node_with_merged_edges_and_its_tasks_summary() {
        let mut spec = tern_testkit_free_dag();
        spec.tasks.clear();
        for (id, up, group) in [
            ("a", vec![], None),
            ("g.x", vec!["a"], Some("g")),
            ("g.y", vec!["a"], Some("g")),
            ("g.in.z", vec!["g.x", "g.y"], Some("g.in")),
            ("b", vec!["g.in.z", "g.y"], None),
        ] {
            let mut t = tern_core::TaskSpec::new(id, tern_core::TaskKind::Empty);
            t.upstream = up.into_iter().map(String::from).collect();
            t.group = group.map(String::from);
            spec.tasks.push(t);
        }
        spec.groups = ["g", "g.in"]
            .map(|g| tern_core::GroupSpec {
                group_id: g.into(),
                tooltip: None,
            })
            .to_vec();
        let states = HashMap::from([
            ("g.x".to_string(), "success".to_string()),
            ("g.y".to_string(), "failed".to_string()),
        ]);
        let link = |g: &str| format!("?tab=graph&open={g}");
        let closed = graph(&spec, &states, &Default::default(), &link);
        assert_eq!(closed.matches("<g class=\"node").count(), 3, "{closed}");
        assert_eq!(
            closed.matches("<path class=\"edge\"").count(),
            2,
            "a -> g -> b: {closed}"
        );
        assert!(closed.contains("<a href=\"?tab=graph&amp;open=g\"><g class=\"node group s-failed\" data-group=\"g\""), "{closed}");
        assert!(closed.contains("1 failed, 1 none, 1 success"), "{closed}");
        assert!(x_of(&closed, "data-task=\"a\"") < x_of(&closed, "data-group=\"g\""));
        assert!(x_of(&closed, "data-group=\"g\"") < x_of(&closed, "data-task=\"b\""));
        // Opening the outer group shows its tasks and the inner group closed.
        let open = std::collections::HashSet::from(["g".to_string()]);
        let svg = graph(&spec, &states, &open, &link);
        assert!(
            svg.contains("data-task=\"g.x\"") && svg.contains("data-group=\"g.in\""),
            "{svg}"
        );
        assert!(!svg.contains("data-task=\"g.in.z\""));
        assert_eq!(svg.matches("<path class=\"edge\"").count(), 6, "{svg}");
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
