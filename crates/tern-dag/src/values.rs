//! The Starlark values DAG code holds: `task` (returned by `shell`/`python`/`empty`, supports
//! `>>`, `<<`, `set_upstream`, `set_downstream`, `.task_id`, `.dag_id`) and `dag` (returned by
//! `dag(...)`, usable as a task's `dag=` argument).
//!
//! Both are handles into the evaluation's [`FileState`](crate::draft::FileState): they carry no
//! Starlark values, so they are simple (immutable, freezable) values.

use std::fmt;

use allocative::Allocative;
use starlark::environment::{Methods, MethodsBuilder};
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::values::list::ListRef;
use starlark::values::none::NoneType;
use starlark::values::tuple::TupleRef;
use starlark::values::{
    Heap, NoSerialize, ProvidesStaticType, StarlarkPagablePanic, StarlarkValue, Value, ValueLike,
};
use starlark_derive::starlark_value;

use crate::draft::{Shared, Upstream};

/// A declared task: the DAG and index it has in its evaluation's state.
#[derive(ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub(crate) struct TaskRef {
    #[allocative(skip)]
    pub state: Shared,
    pub dag: usize,
    pub idx: usize,
    pub task_id: String,
    pub dag_id: String,
}
starlark_simple_value!(TaskRef);

/// A declared DAG.
#[derive(ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub(crate) struct DagRef {
    #[allocative(skip)]
    pub state: Shared,
    pub idx: usize,
    pub dag_id: String,
}
starlark_simple_value!(DagRef);

impl fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskRef({}.{})", self.dag_id, self.task_id)
    }
}

impl fmt::Display for TaskRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<task {}.{}>", self.dag_id, self.task_id)
    }
}

impl fmt::Debug for DagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DagRef({})", self.dag_id)
    }
}

impl fmt::Display for DagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<dag {}>", self.dag_id)
    }
}

/// The tasks a `>>`/`<<` operand or `set_upstream` argument names: one task, or a list/tuple of
/// tasks.
fn operand_tasks<'v>(v: Value<'v>) -> anyhow::Result<Vec<&'v TaskRef>> {
    let bad = |what: &str| {
        anyhow::anyhow!(
            "dependencies link tasks: expected a task or a list of tasks, got {what}; \
             note that `[a, b] >> c` is not supported, write `c << [a, b]`"
        )
    };
    if let Some(t) = v.downcast_ref::<TaskRef>() {
        return Ok(vec![t]);
    }
    let items = if let Some(l) = ListRef::from_value(v) {
        l.content().to_vec()
    } else if let Some(t) = TupleRef::from_value(v) {
        t.content().to_vec()
    } else {
        return Err(bad(v.get_type()));
    };
    items
        .into_iter()
        .map(|x| x.downcast_ref::<TaskRef>().ok_or_else(|| bad(x.get_type())))
        .collect()
}

/// Makes every task in `ups` an upstream of every task in `downs`.
fn link(ups: &[&TaskRef], downs: &[&TaskRef]) -> anyhow::Result<()> {
    for (u, d) in ups.iter().flat_map(|u| downs.iter().map(move |d| (u, d))) {
        if !u.state.same(&d.state) {
            anyhow::bail!(
                "cannot link {u} and {d}: they were declared while evaluating different files"
            );
        }
        if u.dag != d.dag {
            anyhow::bail!(
                "cannot link {u} and {d}: tasks of different DAGs cannot depend on each other"
            );
        }
    }
    if let Some(first) = ups.first().or(downs.first()) {
        let mut st = first.state.lock();
        for d in downs {
            let task = &mut st.dags[d.dag].tasks[d.idx];
            task.upstream
                .extend(ups.iter().map(|u| Upstream::Task(u.idx)));
        }
    }
    Ok(())
}

starlark::methods_static!(TASK_METHODS = task_methods);
starlark::methods_static!(DAG_METHODS = dag_methods);

#[starlark_value(type = "task")]
impl<'v> StarlarkValue<'v> for TaskRef {
    /// `a >> b`: `b` runs after `a`; evaluates to `b` so chains work.
    fn right_shift(&self, other: Value<'v>, _heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let downs = operand_tasks(other).map_err(starlark::Error::new_other)?;
        link(&[self], &downs).map_err(starlark::Error::new_other)?;
        Ok(other)
    }

    /// `a << b`: `a` runs after `b`; evaluates to `b`.
    fn left_shift(&self, other: Value<'v>, _heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let ups = operand_tasks(other).map_err(starlark::Error::new_other)?;
        link(&ups, &[self]).map_err(starlark::Error::new_other)?;
        Ok(other)
    }

    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other
            .downcast_ref::<TaskRef>()
            .is_some_and(|o| o.state.same(&self.state) && o.dag == self.dag && o.idx == self.idx))
    }

    fn get_methods() -> Option<&'static Methods> {
        Some(TASK_METHODS.methods())
    }
}

#[starlark_value(type = "dag")]
impl<'v> StarlarkValue<'v> for DagRef {
    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other
            .downcast_ref::<DagRef>()
            .is_some_and(|o| o.state.same(&self.state) && o.idx == self.idx))
    }

    fn get_methods() -> Option<&'static Methods> {
        Some(DAG_METHODS.methods())
    }
}

#[starlark_module]
fn task_methods(builder: &mut MethodsBuilder) {
    /// The task's id.
    #[starlark(attribute)]
    fn task_id(this: &TaskRef) -> anyhow::Result<String> {
        Ok(this.task_id.clone())
    }

    /// The id of the DAG the task belongs to.
    #[starlark(attribute)]
    fn dag_id(this: &TaskRef) -> anyhow::Result<String> {
        Ok(this.dag_id.clone())
    }

    /// `a.set_upstream(b)` is `a << b`.
    fn set_upstream<'v>(this: &TaskRef, other: Value<'v>) -> anyhow::Result<NoneType> {
        let ups = operand_tasks(other)?;
        link(&ups, &[this])?;
        Ok(NoneType)
    }

    /// `a.set_downstream(b)` is `a >> b`.
    fn set_downstream<'v>(this: &TaskRef, other: Value<'v>) -> anyhow::Result<NoneType> {
        let downs = operand_tasks(other)?;
        link(&[this], &downs)?;
        Ok(NoneType)
    }
}

#[starlark_module]
fn dag_methods(builder: &mut MethodsBuilder) {
    /// The DAG's id.
    #[starlark(attribute)]
    fn dag_id(this: &DagRef) -> anyhow::Result<String> {
        Ok(this.dag_id.clone())
    }
}
