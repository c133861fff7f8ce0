//! `group(id, ...)`: a task group, Airflow's `TaskGroup`. Starlark has no `with`, so tasks join
//! a group with `group = g`, or by being declared inside a function passed as `build` (called at
//! once, like the body of Airflow's `@task_group`). Ids are prefixed with the group's
//! (`extract.orders`), groups nest (`group = outer`), and a group's `default_args` apply to its
//! tasks before the DAG's.

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::Value;

use super::{
    call_loc, check_id, ctx_state, parse_default_args, placement, to_string, GroupRef, Kwargs,
};
use crate::draft::GroupDraft;

const GROUP_FIELDS: &[&str] = &["group", "dag", "default_args", "tooltip", "build"];

#[starlark_module]
pub(super) fn group_builtins(builder: &mut GlobalsBuilder) {
    /// Declares a task group of the current DAG (or of `dag`, or inside `group`).
    fn group<'v>(
        id: &str,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<GroupRef> {
        let (g, build) = declare_group(id, kwargs, eval).map_err(starlark::Error::new_other)?;
        if let Some(f) = build {
            // Tasks declared while `f` runs (without `group =`) go into this group.
            g.state.lock().dags[g.dag].building.push(g.idx);
            let r = eval.eval_function(f, &[], &[]);
            g.state.lock().dags[g.dag].building.pop();
            r?;
        }
        Ok(g)
    }
}

/// Records the group; returns it with its `build` function when that is to be called.
fn declare_group<'v>(
    local_id: &str,
    kwargs: SmallMap<String, Value<'v>>,
    eval: &mut Evaluator<'v, '_, '_>,
) -> anyhow::Result<(GroupRef, Option<Value<'v>>)> {
    let state = ctx_state(eval)?;
    let main_file = state.lock().main_file.clone();
    let (loc, main_line) = call_loc(eval, &main_file);
    let args = Kwargs { map: kwargs };
    let mut errs = Vec::new();
    if let Err(e) = check_id(local_id) {
        errs.push(e);
    }
    args.unknown("group()", &[GROUP_FIELDS], &mut errs);

    let (dag_idx, parent) = placement(&args, &state, &format!("group `{local_id}`"))?;
    let mut defaults = match args.get("default_args") {
        Some(v) => parse_default_args(v, &mut errs),
        None => Default::default(),
    };
    let tooltip = args.field("tooltip", &mut errs, to_string);
    let build = args.get("build");
    if let Some(b) = build {
        if !matches!(b.get_type(), "function" | "partial") {
            errs.push(format!(
                "`build` must be a function that declares the group's tasks, got {}",
                b.get_type()
            ));
        }
    }

    let mut st = state.lock();
    let dag = &mut st.dags[dag_idx];
    let dag_id = dag.id.clone();
    let id = match parent {
        Some(p) => {
            defaults.fill_from(&dag.groups[p].defaults);
            format!("{}.{local_id}", dag.groups[p].id)
        }
        None => local_id.to_string(),
    };
    let idx = dag.groups.len();
    if dag.group_ids.contains_key(&id) {
        errs.push(format!(
            "duplicate group id in dag `{dag_id}`; group ids must be unique"
        ));
    } else if dag.by_id.contains_key(&id) {
        errs.push(format!(
            "`{id}` is already the id of a task in dag `{dag_id}`; task and group ids must differ"
        ));
    } else {
        dag.group_ids.insert(id.clone(), idx);
    }
    dag.groups.push(GroupDraft {
        id: id.clone(),
        parent,
        defaults,
        tooltip,
    });
    let failed = !errs.is_empty();
    for e in errs {
        st.problem(&loc, main_line, Some(dag_idx), format!("group `{id}`: {e}"));
    }
    drop(st);
    let g = GroupRef {
        state,
        dag: dag_idx,
        idx,
        group_id: id,
        dag_id,
    };
    Ok((g, build.filter(|_| !failed)))
}
