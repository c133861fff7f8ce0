//! The state one DAG-file evaluation builds up: the DAGs and tasks declared so far, the edges
//! between tasks, and the problems found along the way.
//!
//! The builtins (`dag`, `shell`, ...) and the Starlark task values (`a >> b`) write here; after
//! evaluation the loader turns each [`DagDraft`] into a validated `DagSpec` (see `validate`).
//! One [`FileState`] exists per evaluated file and is shared through an `Arc<Mutex<_>>` because
//! the `>>` operator has no access to the evaluator, only to its operands.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tern_core::{ParamSpec, Schedule, TriggerRule};

/// A place in a DAG file: path relative to the DAG folder and 1-based line (0 if unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub file: String,
    pub line: u32,
}

impl Loc {
    /// `line 4` when `other_file` is the same file, else `helpers.star:4`.
    pub fn describe_from(&self, other_file: &str) -> String {
        if self.file == other_file {
            format!("line {}", self.line)
        } else {
            format!("{}:{}", self.file, self.line)
        }
    }
}

/// The task fields every kind shares; `None` means "not set here" (default_args or the built-in
/// default applies).
#[derive(Debug, Clone, Default)]
pub(crate) struct CommonFields {
    pub trigger_rule: Option<TriggerRule>,
    pub retries: Option<u32>,
    pub retry_delay_ms: Option<u64>,
    pub retry_exponential_backoff: Option<bool>,
    pub max_retry_delay_ms: Option<u64>,
    pub execution_timeout_ms: Option<u64>,
    pub queue: Option<String>,
    pub pool: Option<String>,
    pub priority_weight: Option<i64>,
    pub depends_on_past: Option<bool>,
    pub wait_for_downstream: Option<bool>,
    pub max_active_tis_per_dag: Option<u32>,
}

impl CommonFields {
    /// Sets every field not set here to `other`'s value.
    pub fn fill_from(&mut self, other: &CommonFields) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = other.$f.clone(); } )* };
        }
        fill!(
            trigger_rule,
            retries,
            retry_delay_ms,
            retry_exponential_backoff,
            max_retry_delay_ms,
            execution_timeout_ms,
            queue,
            pool,
            priority_weight,
            depends_on_past,
            wait_for_downstream,
            max_active_tis_per_dag
        );
    }
}

/// What a declared task does, before the loader has read script files.
#[derive(Debug, Clone)]
pub(crate) enum KindDraft {
    Shell {
        cmd: String,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        sandbox: Option<tern_core::Sandbox>,
    },
    Python {
        /// Inline code, or (after the loader ran) the content of `script`.
        code: Option<String>,
        /// The script path as written in the DAG file; after the loader ran, relative to the
        /// DAG folder.
        script: Option<String>,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        sandbox: Option<tern_core::Sandbox>,
        /// As written plus (after the loader ran) those of `requirements_file`.
        requirements: Vec<String>,
        /// A requirements file relative to the DAG file, read by the loader.
        requirements_file: Option<String>,
        python_version: Option<String>,
    },
    Empty,
    LatestOnly,
    /// A kind the loader has nothing more to do for (sql, sql_to_lake).
    Ready(tern_core::TaskKind),
}

/// An upstream reference: a task value (already resolved to its index) or a task id to look up
/// once the whole file has run.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    Task(usize),
    Name(String),
}

#[derive(Debug, Clone)]
pub(crate) struct TaskDraft {
    pub id: String,
    /// Where the builtin was called (may be inside a loaded helper file).
    pub loc: Loc,
    /// Line in the DAG file being evaluated that led to the declaration.
    pub main_line: u32,
    pub kind: KindDraft,
    pub common: CommonFields,
    pub upstream: Vec<Upstream>,
    /// As written; `None` takes the kind's default (`[99]` for shell and python).
    pub skip_on_exit_code: Option<Vec<i32>>,
    /// Set by `branch()` and `short_circuit()`.
    pub flow: Option<tern_core::Flow>,
    /// The innermost group (an index into the DAG's `groups`).
    pub group: Option<usize>,
    /// Whether the call itself set `trigger_rule` (not `default_args`).
    pub explicit_trigger_rule: bool,
    pub setup: bool,
    pub teardown: bool,
    pub on_failure_fail_dagrun: bool,
    /// `expand` / `expand_zip`: a mapped task.
    pub expand: Option<tern_core::Expand>,
}

/// A `group(...)`: its full id (`outer.inner`), the group it is in, and the task defaults it
/// gives its tasks (merged with its parent's).
#[derive(Debug, Clone)]
pub(crate) struct GroupDraft {
    pub id: String,
    pub parent: Option<usize>,
    pub defaults: CommonFields,
    pub tooltip: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct DagDraft {
    pub id: String,
    pub loc: Loc,
    pub main_line: u32,
    pub schedule: Schedule,
    pub timezone: String,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub catchup: bool,
    pub params: BTreeMap<String, ParamSpec>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub max_active_runs: u32,
    pub max_active_tasks: u32,
    /// Connection names notified per event (`on_failure`, `on_success`, `on_retry`).
    pub on_failure: Vec<String>,
    pub on_success: Vec<String>,
    pub on_retry: Vec<String>,
    pub dagrun_timeout_ms: Option<u64>,
    pub max_consecutive_failed_dag_runs: u32,
    pub defaults: CommonFields,
    /// Every declared task, duplicates included (a duplicate is the one `by_id` does not point
    /// at; it is reported and skipped).
    pub tasks: Vec<TaskDraft>,
    pub by_id: HashMap<String, usize>,
    pub groups: Vec<GroupDraft>,
    pub group_ids: HashMap<String, usize>,
    /// The groups `group(..., build = f)` calls are filling, innermost last: tasks declared
    /// meanwhile without `group =` go into the last one.
    pub building: Vec<usize>,
}

impl DagDraft {
    /// Whether task `idx` is the first (kept) declaration of its id.
    pub fn is_kept(&self, idx: usize) -> bool {
        self.by_id.get(&self.tasks[idx].id) == Some(&idx)
    }

    /// Whether task `idx` is in group `g`, directly or through groups inside it.
    pub fn in_group(&self, idx: usize, g: usize) -> bool {
        let mut cur = self.tasks[idx].group;
        while let Some(c) = cur {
            if c == g {
                return true;
            }
            cur = self.groups[c].parent;
        }
        false
    }

    /// The kept tasks of group `g` with no upstream task inside it (Airflow's roots), in
    /// declaration order.
    pub fn group_roots(&self, g: usize) -> Vec<usize> {
        let members: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.is_kept(i) && self.in_group(i, g))
            .collect();
        members
            .iter()
            .copied()
            .filter(|&i| {
                !self.tasks[i].upstream.iter().any(|u| match u {
                    Upstream::Task(j) => members.contains(j),
                    Upstream::Name(n) => self.by_id.get(n).is_some_and(|j| members.contains(j)),
                })
            })
            .collect()
    }

    /// The kept tasks of group `g` no task inside it depends on (Airflow's leaves).
    pub fn group_leaves(&self, g: usize) -> Vec<usize> {
        let members: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.is_kept(i) && self.in_group(i, g))
            .collect();
        let mut has_down = vec![false; self.tasks.len()];
        for &i in &members {
            for u in &self.tasks[i].upstream {
                let j = match u {
                    Upstream::Task(j) => Some(*j),
                    Upstream::Name(n) => self.by_id.get(n).copied(),
                };
                if let Some(j) = j {
                    has_down[j] = true;
                }
            }
        }
        members.into_iter().filter(|&i| !has_down[i]).collect()
    }

    /// The task defaults that apply to a task in group `g`: the group's, then its parents'.
    pub fn group_defaults(&self, g: Option<usize>) -> CommonFields {
        g.map(|g| self.groups[g].defaults.clone())
            .unwrap_or_default()
    }
}

/// A problem found while evaluating or validating, tied to a DAG when it concerns one (that DAG
/// is then not loaded).
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub loc: Loc,
    /// Line of the evaluated file that led to `loc` (differs when `loc` is in a loaded file).
    pub main_line: u32,
    pub message: String,
    pub dag: Option<usize>,
}

/// Everything one evaluation of a DAG file (or of a helper file being loaded) declares.
#[derive(Debug, Default)]
pub(crate) struct FileState {
    /// The file being evaluated, relative to the DAG folder.
    pub main_file: String,
    pub dags: Vec<DagDraft>,
    /// The DAG tasks attach to when they name none: the latest `dag(...)`.
    pub current: Option<usize>,
    pub problems: Vec<Problem>,
    pub dag_ids: HashMap<String, usize>,
}

impl FileState {
    pub fn problem(
        &mut self,
        loc: &Loc,
        main_line: u32,
        dag: Option<usize>,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            loc: loc.clone(),
            main_line,
            message: message.into(),
            dag,
        });
    }
}

/// Shared handle on a [`FileState`]; task and DAG values hold one.
#[derive(Debug, Clone)]
pub(crate) struct Shared(pub Arc<Mutex<FileState>>);

impl Shared {
    pub fn new(main_file: &str) -> Shared {
        Shared(Arc::new(Mutex::new(FileState {
            main_file: main_file.to_string(),
            ..FileState::default()
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, FileState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn same(&self, other: &Shared) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn take(&self) -> FileState {
        std::mem::take(&mut *self.lock())
    }
}
