//! The difference between two versions of a DAG, as the Versions tab shows it: which tasks
//! were added, removed or changed, which DAG settings changed, and the line diff of the two
//! specs (pretty JSON, without source line numbers, so moving code around is no change).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};
use similar::{ChangeTag, TextDiff};
use tern_core::DagSpec;

use super::draw::push_esc;

/// `value` without the `line` keys DAG specs carry for error messages.
fn without_lines(value: &Value) -> Value {
    match value {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| k.as_str() != "line")
                .map(|(k, v)| (k.clone(), without_lines(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_lines).collect()),
        other => other.clone(),
    }
}

fn tasks_of(spec: &Value) -> BTreeMap<String, Value> {
    spec["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| {
                    (
                        t["task_id"].as_str().unwrap_or_default().to_string(),
                        t.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What changed from `old` to `new`: `{tasks_added, tasks_removed, tasks_changed,
/// settings_changed, diff_html, same}`.
pub fn compare(old: &DagSpec, new: &DagSpec) -> Value {
    let old_v = without_lines(&serde_json::to_value(old).unwrap_or_default());
    let new_v = without_lines(&serde_json::to_value(new).unwrap_or_default());
    let (old_tasks, new_tasks) = (tasks_of(&old_v), tasks_of(&new_v));
    let added: Vec<&String> = new_tasks
        .keys()
        .filter(|t| !old_tasks.contains_key(*t))
        .collect();
    let removed: Vec<&String> = old_tasks
        .keys()
        .filter(|t| !new_tasks.contains_key(*t))
        .collect();
    let changed: Vec<&String> = new_tasks
        .iter()
        .filter(|(t, v)| old_tasks.get(*t).is_some_and(|o| o != *v))
        .map(|(t, _)| t)
        .collect();
    let mut settings: Vec<&String> = Vec::new();
    if let (Some(o), Some(n)) = (old_v.as_object(), new_v.as_object()) {
        for k in o.keys().chain(n.keys().filter(|k| !o.contains_key(*k))) {
            if k != "tasks" && o.get(k) != n.get(k) {
                settings.push(k);
            }
        }
    }
    let old_text = serde_json::to_string_pretty(&old_v).unwrap_or_default();
    let new_text = serde_json::to_string_pretty(&new_v).unwrap_or_default();
    json!({
        "tasks_added": added, "tasks_removed": removed, "tasks_changed": changed,
        "settings_changed": settings,
        "same": old_text == new_text,
        "diff_html": diff_html(&old_text, &new_text),
    })
}

/// The changed lines with three lines of context, hunk by hunk, as HTML rows (`del`, `add`
/// or `ctx`, each with its old and new line number).
fn diff_html(old: &str, new: &str) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push_str("<tr class=\"gap\"><td></td><td></td><td>⋯</td></tr>");
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let class = match change.tag() {
                    ChangeTag::Delete => "del",
                    ChangeTag::Insert => "add",
                    ChangeTag::Equal => "ctx",
                };
                let num = |n: Option<usize>| n.map(|n| (n + 1).to_string()).unwrap_or_default();
                let sign = match change.tag() {
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                    ChangeTag::Equal => ' ',
                };
                let _ = write!(
                    out,
                    "<tr class=\"{class}\"><td class=\"ln\">{}</td><td class=\"ln\">{}</td><td>{sign} ",
                    num(change.old_index()),
                    num(change.new_index())
                );
                push_esc(&mut out, change.value().trim_end_matches('\n'));
                out.push_str("</td></tr>");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_testkit::{dag, task};

    #[test]
    fn a_diff_names_added_removed_and_changed_tasks_and_ignores_moved_lines() {
        let old = dag(
            "d",
            vec![task("a", &[]), task("b", &["a"]), task("gone", &[])],
        );
        let mut new = dag(
            "d",
            vec![task("a", &[]), task("b", &["a"]), task("fresh", &["b"])],
        );
        new.tasks[1].retries = 5;
        // Moving a task in its file changes its line number only.
        new.tasks[0].line += 10;
        new.max_active_runs = old.max_active_runs + 1;
        let d = compare(&old, &new);
        assert_eq!(d["tasks_added"], json!(["fresh"]));
        assert_eq!(d["tasks_removed"], json!(["gone"]));
        assert_eq!(d["tasks_changed"], json!(["b"]));
        assert_eq!(d["settings_changed"], json!(["max_active_runs"]));
        assert_eq!(d["same"], false);
        let html = d["diff_html"].as_str().unwrap();
        assert!(html.contains("<tr class=\"add\">"), "{html}");
        assert!(html.contains("<tr class=\"del\">"), "{html}");
        assert!(
            html.contains("&quot;retries&quot;: 5") || html.contains("\"retries\": 5"),
            "{html}"
        );

        let mut moved = old.clone();
        moved.tasks[2].line += 3;
        let d = compare(&old, &moved);
        assert_eq!(d["same"], true);
        assert_eq!(d["diff_html"], "");
    }
}
