//! Tasks that decide which of their downstream tasks run — branches, short circuits and
//! `latest_only` — with Airflow's semantics.
//!
//! A decision names the tasks it skips; the scheduler marks them `skipped` and the trigger
//! rules carry the skip further (a join after a branch wants `none_failed_min_one_success`, as
//! in Airflow). Only tasks that have not started are skipped: one that another upstream task
//! already let run is left alone.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::{DagSpec, TaskSpec};
use crate::state::RunType;

/// The output a branch names its followed tasks in.
pub const FOLLOW_OUTPUT: &str = "follow";
/// The output a short circuit decides by.
pub const CONDITION_OUTPUT: &str = "condition";

/// What a task's successful try decides about its downstream tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Flow {
    /// Output `follow` names the direct downstream tasks to run (a task id or a list of
    /// them); every other direct downstream task is skipped (Airflow's branch operators).
    Branch,
    /// A falsy output `condition` skips every task downstream, whatever its trigger rule;
    /// with `ignore_downstream_trigger_rules = false` only the direct downstream tasks, and
    /// trigger rules decide the rest (Airflow's `ShortCircuitOperator`).
    ShortCircuit {
        ignore_downstream_trigger_rules: bool,
    },
}

/// Tasks a decision skips, and the note they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skips {
    pub tasks: Vec<String>,
    pub note: String,
}

/// Python's truthiness for an output value; the texts `False`, `None` and `false` (what a
/// Python or shell task prints) are falsy too.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(s.trim(), "" | "False" | "false" | "None" | "none" | "0"),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl DagSpec {
    /// `names` with each group id replaced by the tasks of `direct` in that group (a group with
    /// none of them stays, to be reported as not directly downstream).
    fn expand_groups(&self, names: Vec<String>, direct: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let in_group: Vec<String> = if self.groups.iter().any(|g| g.group_id == name) {
                direct
                    .iter()
                    .filter(|d| self.task(d).is_some_and(|t| t.in_group(&name)))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            if in_group.is_empty() {
                out.push(name);
            } else {
                out.extend(in_group);
            }
        }
        out.dedup();
        out
    }

    /// Every task downstream of `task_id`, direct or not, in the spec's topological order.
    pub fn descendants(&self, task_id: &str) -> Vec<String> {
        let down = self.downstream_map();
        let mut seen = BTreeSet::new();
        let mut stack = vec![task_id];
        while let Some(t) = stack.pop() {
            for d in down.get(t).into_iter().flatten() {
                if seen.insert(d.as_str()) {
                    stack.push(d);
                }
            }
        }
        self.tasks
            .iter()
            .filter(|t| seen.contains(t.task_id.as_str()))
            .map(|t| t.task_id.clone())
            .collect()
    }

    /// What a successful try of `task` with `outputs` skips. `Ok(None)` when the task decides
    /// nothing (or decided to let everything run); `Err` says why the decision is unusable
    /// (the try then fails as if its command had).
    ///
    /// A branch may name a group: it then follows the group's tasks directly downstream of it.
    pub fn flow_skips(
        &self,
        task: &TaskSpec,
        outputs: &Map<String, Value>,
    ) -> Result<Option<Skips>, String> {
        let Some(flow) = task.flow else {
            return Ok(None);
        };
        let direct: &[String] = self
            .downstream_map()
            .get(&task.task_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match flow {
            Flow::Branch => {
                let follow = self.expand_groups(branch_follow(task, outputs)?, direct);
                let unknown: Vec<&str> = follow
                    .iter()
                    .filter(|f| !direct.contains(f))
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() {
                    return Err(format!(
                        "branch `{}` chose {}, which {} not directly downstream of it; its direct downstream tasks are: {}",
                        task.task_id,
                        quote_list(&unknown),
                        if unknown.len() == 1 { "is" } else { "are" },
                        if direct.is_empty() { "none".to_string() } else { quote_list(direct) }
                    ));
                }
                let skipped: Vec<String> = direct
                    .iter()
                    .filter(|d| !follow.contains(d))
                    .cloned()
                    .collect();
                if skipped.is_empty() {
                    return Ok(None);
                }
                let chose = if follow.is_empty() {
                    "no task".to_string()
                } else {
                    quote_list(&follow)
                };
                Ok(Some(Skips {
                    tasks: skipped,
                    note: format!("skipped: branch `{}` chose {chose}", task.task_id),
                }))
            }
            Flow::ShortCircuit {
                ignore_downstream_trigger_rules,
            } => {
                let Some(condition) = outputs.get(CONDITION_OUTPUT) else {
                    return Err(format!(
                        "short_circuit `{}` wrote no `{CONDITION_OUTPUT}` output: write `condition=true` or `condition=false` to $TERN_OUTPUT",
                        task.task_id
                    ));
                };
                if truthy(condition) {
                    return Ok(None);
                }
                let tasks = if ignore_downstream_trigger_rules {
                    self.descendants(&task.task_id)
                } else {
                    direct.to_vec()
                };
                Ok((!tasks.is_empty()).then(|| Skips {
                    tasks,
                    note: format!(
                        "skipped: short_circuit `{}` found its condition false ({condition})",
                        task.task_id
                    ),
                }))
            }
        }
    }

    /// Whether a run is the one `latest_only` lets through: a manual run, a DAG without a
    /// schedule, the last run before `end_date`, or a run whose successor is not due yet
    /// (`interval_end < now <=` the next run's creation time: for a cron, the next interval's
    /// end), as Airflow's `LatestOnlyOperator`.
    pub fn is_latest_run(
        &self,
        run_type: RunType,
        interval_end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        if run_type == RunType::Manual {
            return true;
        }
        // The window of the run after this one: (this run's interval end or tick, the next
        // run's creation time].
        let bounds = crate::schedule::ScheduleBounds {
            catchup: true,
            ..self.schedule_bounds()
        };
        match self.schedule.next_run(&bounds, Some(interval_end), now) {
            None => true,
            Some(next) if next.run_after <= interval_end => true,
            Some(next) => interval_end < now && now <= next.run_after,
        }
    }

    /// What a `latest_only` task skips in a run that is not the latest: its direct downstream
    /// tasks.
    pub fn latest_only_skips(&self, task_id: &str) -> Skips {
        Skips {
            tasks: self
                .downstream_map()
                .get(task_id)
                .cloned()
                .unwrap_or_default(),
            note: format!("skipped: not the latest run (latest_only `{task_id}`)"),
        }
    }
}

/// The task ids a branch's `follow` output names: a string, a list of strings, or null/empty
/// for none.
fn branch_follow(task: &TaskSpec, outputs: &Map<String, Value>) -> Result<Vec<String>, String> {
    let bad = |v: &Value| {
        format!(
            "branch `{}`: output `{FOLLOW_OUTPUT}` must be a task id or a list of task ids, got {v}",
            task.task_id
        )
    };
    match outputs.get(FOLLOW_OUTPUT) {
        None => Err(format!(
            "branch `{}` wrote no `{FOLLOW_OUTPUT}` output: write `follow=TASK_ID` (or a JSON list of ids, or `follow=[]` to skip all) to $TERN_OUTPUT",
            task.task_id
        )),
        Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.trim().to_string()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_string()).ok_or_else(|| bad(i)))
            .collect(),
        Some(v) => Err(bad(v)),
    }
}

fn quote_list<S: AsRef<str>>(ids: &[S]) -> String {
    ids.iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskKind;
    use crate::Schedule;
    use serde_json::json;

    fn spec(edges: &[(&str, &[&str])]) -> DagSpec {
        let mut tasks = Vec::new();
        for (id, up) in edges {
            let mut t = TaskSpec::new(*id, TaskKind::Empty);
            t.upstream = up.iter().map(|s| s.to_string()).collect();
            tasks.push(t);
        }
        DagSpec {
            dag_id: "d".into(),
            file: "d.star".into(),
            line: 1,
            schedule: Schedule::parse("@daily").unwrap(),
            timezone: "UTC".into(),
            start_date: None,
            end_date: None,
            catchup: false,
            params: Default::default(),
            tags: vec![],
            description: None,
            max_active_runs: 1,
            max_active_tasks: 1,
            on_failure: vec![],
            on_success: vec![],
            on_retry: vec![],
            dagrun_timeout_ms: None,
            max_consecutive_failed_dag_runs: 0,
            tasks,
            groups: Vec::new(),
            index: Default::default(),
        }
    }

    fn outputs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// b branches to c or d; e joins; f is after c.
    fn branching(flow: Flow) -> DagSpec {
        let mut s = spec(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &["b"]),
            ("f", &["c"]),
            ("e", &["f", "d"]),
        ]);
        s.tasks[1].flow = Some(flow);
        s
    }

    #[test]
    fn a_branch_that_names_a_group_follows_its_tasks_directly_downstream() {
        let mut s = spec(&[
            ("a", &[]),
            ("b", &["a"]),
            ("load.x", &["b"]),
            ("load.y", &["b"]),
            ("load.inner.z", &["b"]),
            ("load.after", &["load.x"]),
            ("other", &["b"]),
        ]);
        s.tasks[1].flow = Some(Flow::Branch);
        for (t, g) in [(2, "load"), (3, "load"), (4, "load.inner"), (5, "load")] {
            s.tasks[t].group = Some(g.into());
        }
        s.groups = ["load", "load.inner", "empty"]
            .map(|g| crate::GroupSpec {
                group_id: g.into(),
                tooltip: None,
            })
            .to_vec();
        let b = s.task("b").unwrap().clone();
        let got = s
            .flow_skips(&b, &outputs(json!({"follow": "load"})))
            .unwrap();
        assert_eq!(got.unwrap().tasks, vec!["other"]);
        let got = s
            .flow_skips(&b, &outputs(json!({"follow": "load.inner"})))
            .unwrap();
        assert_eq!(got.unwrap().tasks, vec!["load.x", "load.y", "other"]);
        let e = s
            .flow_skips(&b, &outputs(json!({"follow": "empty"})))
            .unwrap_err();
        assert!(
            e.contains("`empty`, which is not directly downstream"),
            "{e}"
        );
    }

    #[test]
    fn a_branch_skips_the_direct_downstream_tasks_it_did_not_choose() {
        let s = branching(Flow::Branch);
        let b = s.task("b").unwrap();
        let got = s.flow_skips(b, &outputs(json!({"follow": "c"}))).unwrap();
        assert_eq!(got.unwrap().tasks, vec!["d"]);
        let got = s.flow_skips(b, &outputs(json!({"follow": ["c", "d"]})));
        assert_eq!(got.unwrap(), None);
        for none in [
            json!({"follow": []}),
            json!({"follow": null}),
            json!({"follow": ""}),
        ] {
            let got = s.flow_skips(b, &outputs(none)).unwrap().unwrap();
            assert_eq!(got.tasks, vec!["c", "d"]);
            assert!(got.note.contains("chose no task"), "{}", got.note);
        }
    }

    #[test]
    fn a_branch_that_names_no_direct_downstream_task_is_an_error_naming_the_choices() {
        let s = branching(Flow::Branch);
        let b = s.task("b").unwrap();
        let e = s
            .flow_skips(b, &outputs(json!({"follow": "f"})))
            .unwrap_err();
        assert!(e.contains("`f`") && e.contains("`c`, `d`"), "{e}");
        let e = s.flow_skips(b, &outputs(json!({}))).unwrap_err();
        assert!(e.contains("wrote no `follow` output"), "{e}");
        let e = s.flow_skips(b, &outputs(json!({"follow": 3}))).unwrap_err();
        assert!(e.contains("must be a task id"), "{e}");
    }

    #[test]
    fn a_false_short_circuit_skips_everything_downstream_or_only_the_direct_tasks() {
        let all = branching(Flow::ShortCircuit {
            ignore_downstream_trigger_rules: true,
        });
        let b = all.task("b").unwrap();
        let got = all.flow_skips(b, &outputs(json!({"condition": false})));
        assert_eq!(got.unwrap().unwrap().tasks, vec!["c", "d", "f", "e"]);
        assert_eq!(
            all.flow_skips(b, &outputs(json!({"condition": "yes"}))),
            Ok(None)
        );
        let direct = branching(Flow::ShortCircuit {
            ignore_downstream_trigger_rules: false,
        });
        let b = direct.task("b").unwrap();
        let got = direct.flow_skips(b, &outputs(json!({"condition": "False"})));
        assert_eq!(got.unwrap().unwrap().tasks, vec!["c", "d"]);
        assert!(direct.flow_skips(b, &outputs(json!({}))).is_err());
    }

    #[test]
    fn truthiness_is_pythons() {
        for f in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
            json!("False"),
            json!("None"),
        ] {
            assert!(!truthy(&f), "{f}");
        }
        for t in [
            json!(true),
            json!(1),
            json!("x"),
            json!([0]),
            json!({"a": 1}),
            json!("True"),
        ] {
            assert!(truthy(&t), "{t}");
        }
    }

    #[test]
    fn only_the_run_whose_next_interval_holds_now_is_the_latest() {
        let s = spec(&[("a", &[])]);
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let end = at("2026-05-02T00:00:00Z");
        // The run for May 1 ends at May 2 00:00; it is the latest during May 2.
        assert!(s.is_latest_run(RunType::Scheduled, end, at("2026-05-02T10:00:00Z")));
        assert!(s.is_latest_run(RunType::Scheduled, end, at("2026-05-03T00:00:00Z")));
        assert!(!s.is_latest_run(RunType::Scheduled, end, at("2026-05-03T00:00:01Z")));
        assert!(!s.is_latest_run(RunType::Backfill, end, at("2026-06-01T00:00:00Z")));
        assert!(!s.is_latest_run(RunType::Scheduled, end, end));
        assert!(s.is_latest_run(RunType::Manual, end, at("2027-01-01T00:00:00Z")));
        let mut none = s.clone();
        none.schedule = Schedule::None;
        assert!(none.is_latest_run(RunType::Backfill, end, at("2027-01-01T00:00:00Z")));
        let mut ended = s.clone();
        ended.end_date = Some(at("2026-05-01T00:00:00Z"));
        assert!(ended.is_latest_run(RunType::Scheduled, end, at("2027-01-01T00:00:00Z")));
    }

    #[test]
    fn skip_on_exit_code_never_skips_a_success() {
        let mut t = TaskSpec::new("t", TaskKind::Empty);
        t.skip_on_exit_code = vec![0, 99];
        assert!(t.skips_on_exit(99));
        assert!(!t.skips_on_exit(0));
        assert!(!t.skips_on_exit(1));
    }
}
