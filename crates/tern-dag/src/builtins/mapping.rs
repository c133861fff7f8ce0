//! Dynamic task mapping in DAG files: `expand = {"table": LIST}` (every combination of several
//! keys) or `expand_zip = {...}` (element-wise) on a task, where LIST is a literal list,
//! `param("tables")` (a run parameter) or `extract.output("tables")` (an upstream task's output,
//! which also makes that task upstream). The values `param(...)` and `task.output(...)` return
//! live here.

use std::fmt;

use allocative::Allocative;
use starlark::environment::GlobalsBuilder;
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::values::{
    NoSerialize, ProvidesStaticType, StarlarkPagablePanic, StarlarkValue, Value, ValueLike,
};
use starlark_derive::starlark_value;
use tern_core::{Expand, ExpandKey, MapSource};

use super::{dict_items, list_items, to_json, type_err};
use crate::draft::{DagDraft, Shared, Upstream};

/// A list known only at run time: a run parameter or an upstream task's output.
#[derive(ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub(crate) struct LateList {
    #[allocative(skip)]
    pub source: LateSource,
}
starlark_simple_value!(LateList);

#[derive(Debug)]
pub(crate) enum LateSource {
    Param(String),
    Output {
        state: Shared,
        dag: usize,
        idx: usize,
        task_id: String,
        key: String,
    },
}

impl fmt::Debug for LateList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for LateList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            LateSource::Param(name) => write!(f, "param(\"{name}\")"),
            LateSource::Output { task_id, key, .. } => write!(f, "{task_id}.output(\"{key}\")"),
        }
    }
}

#[starlark_value(type = "late_list")]
impl<'v> StarlarkValue<'v> for LateList {}

#[starlark_module]
pub(crate) fn mapping_builtins(builder: &mut GlobalsBuilder) {
    /// The run parameter `name`, read when a mapped task expands over it:
    /// `expand = {"table": param("tables")}`.
    fn param(#[starlark(require = pos)] name: &str) -> anyhow::Result<LateList> {
        if name.trim().is_empty() {
            anyhow::bail!("param() needs the name of a DAG param, e.g. param(\"tables\")");
        }
        Ok(LateList {
            source: LateSource::Param(name.to_string()),
        })
    }
}

/// `task.output("key")`: the value task `idx` publishes as `key`, read when a mapped task
/// expands over it.
pub(crate) fn output_of(
    state: &Shared,
    dag: usize,
    idx: usize,
    task_id: &str,
    key: &str,
) -> anyhow::Result<LateList> {
    if key.trim().is_empty() {
        anyhow::bail!("output() needs the output's key, e.g. {task_id}.output(\"tables\")");
    }
    Ok(LateList {
        source: LateSource::Output {
            state: state.clone(),
            dag,
            idx,
            task_id: task_id.to_string(),
            key: key.to_string(),
        },
    })
}

/// Calls whose tasks cannot be mapped, and why.
pub(crate) fn unmappable(call: &str) -> Option<&'static str> {
    match call {
        "empty()" | "latest_only()" => Some("it does no work of its own"),
        "branch()" | "short_circuit()" => {
            Some("one decision is taken per task; map the tasks it decides about instead")
        }
        _ => None,
    }
}

/// Reads `expand` / `expand_zip` of a task declared by `call` in DAG `dag_idx`: the mapping
/// (`None` when neither is given) and the upstream tasks its outputs come from. Problems go to
/// `errs`.
pub(crate) fn read_expand<'v>(
    expand: Option<Value<'v>>,
    expand_zip: Option<Value<'v>>,
    call: &str,
    state: &Shared,
    dag: &DagDraft,
    dag_idx: usize,
    errs: &mut Vec<String>,
) -> (Option<Expand>, Vec<Upstream>) {
    let (field, value, zip) = match (expand, expand_zip) {
        (None, None) => return (None, Vec::new()),
        (Some(_), Some(_)) => {
            errs.push(
                "give `expand` (every combination) or `expand_zip` (element-wise), not both".into(),
            );
            return (None, Vec::new());
        }
        (Some(v), None) => ("expand", v, false),
        (None, Some(v)) => ("expand_zip", v, true),
    };
    if let Some(why) = unmappable(call) {
        errs.push(format!("{call} cannot be mapped with `{field}`: {why}"));
        return (None, Vec::new());
    }
    let items = match dict_items(field, value) {
        Ok(items) if !items.is_empty() => items,
        Ok(_) => {
            errs.push(format!(
                "`{field}` needs at least one key, e.g. {field} = {{\"table\": [\"a\", \"b\"]}}"
            ));
            return (None, Vec::new());
        }
        Err(_) => {
            errs.push(type_err(
                field,
                "a dict of names to lists, e.g. {\"table\": [\"a\", \"b\"]}",
                value,
            ));
            return (None, Vec::new());
        }
    };
    let mut keys = Vec::new();
    let mut upstream = Vec::new();
    for (k, v) in items {
        let Some(name) = k.unpack_str() else {
            errs.push(format!(
                "`{field}` keys must be strings, got {}",
                k.get_type()
            ));
            continue;
        };
        if let Err(e) = check_key(name) {
            errs.push(format!("`{field}` key {name:?}: {e}"));
            continue;
        }
        let what = format!("{field}[{name:?}]");
        let source = if let Some(late) = v.downcast_ref::<LateList>() {
            match &late.source {
                LateSource::Param(p) => {
                    if !dag.params.contains_key(p) {
                        errs.push(format!(
                            "{what}: dag `{}` has no param `{p}`{}; declare it in dag(params = {{...}})",
                            dag.id,
                            super::suggestion(p, dag.params.keys().map(String::as_str))
                        ));
                        continue;
                    }
                    MapSource::Param { name: p.clone() }
                }
                LateSource::Output {
                    state: s,
                    dag: d,
                    idx,
                    task_id,
                    key,
                } => {
                    if !(s.same(state) && *d == dag_idx) {
                        errs.push(format!(
                            "{what}: task `{task_id}` belongs to another DAG; a task can only map over outputs of its own DAG"
                        ));
                        continue;
                    }
                    upstream.push(Upstream::Task(*idx));
                    MapSource::Output {
                        task: task_id.clone(),
                        key: key.clone(),
                    }
                }
            }
        } else if let Ok(list) = list_items(&what, v) {
            let mut values = Vec::with_capacity(list.len());
            for x in list {
                match to_json(&format!("an element of {what}"), x) {
                    Ok(j) => values.push(j),
                    Err(e) => errs.push(e),
                }
            }
            MapSource::Values { values }
        } else {
            errs.push(type_err(
                &what,
                "a list, param(\"NAME\") or TASK.output(\"KEY\")",
                v,
            ));
            continue;
        };
        keys.push(ExpandKey {
            name: name.to_string(),
            source,
        });
    }
    if keys.is_empty() {
        return (None, upstream);
    }
    (Some(Expand { zip, keys }), upstream)
}

/// A mapping key becomes a template variable: an identifier that is not one of the run's own.
fn check_key(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident {
        return Err(
            "a key is the name templates read the element by: letters, digits and `_`, not starting with a digit"
                .into(),
        );
    }
    if tern_core::mapping::RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "`{name}` is already a template variable of every task; choose another name"
        ));
    }
    Ok(())
}
