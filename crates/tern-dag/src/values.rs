//! The Starlark values DAG code holds: `task` (returned by `shell`/`python`/`empty`, supports
//! `>>`, `<<`, `set_upstream`, `set_downstream`, `.task_id`, `.dag_id`), `group` (returned by
//! `group(...)`, linked like a task: as an upstream it stands for its leaves, as a downstream
//! for its roots, both taken when the link is made, as in Airflow) and `dag` (returned by
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
use starlark::values::none::{NoneOr, NoneType};
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

/// A declared task group.
#[derive(ProvidesStaticType, NoSerialize, Allocative, StarlarkPagablePanic)]
pub(crate) struct GroupRef {
    #[allocative(skip)]
    pub state: Shared,
    pub dag: usize,
    pub idx: usize,
    pub group_id: String,
    pub dag_id: String,
}
starlark_simple_value!(GroupRef);

impl fmt::Debug for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupRef({}.{})", self.dag_id, self.group_id)
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<group {}.{}>", self.dag_id, self.group_id)
    }
}

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

/// One end of a dependency: a task or a group.
#[derive(Clone, Copy)]
pub(crate) enum Node<'v> {
    Task(&'v TaskRef),
    Group(&'v GroupRef),
}

impl Node<'_> {
    fn state(&self) -> &Shared {
        match self {
            Node::Task(t) => &t.state,
            Node::Group(g) => &g.state,
        }
    }

    fn dag(&self) -> usize {
        match self {
            Node::Task(t) => t.dag,
            Node::Group(g) => g.dag,
        }
    }
}

impl fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Task(t) => t.fmt(f),
            Node::Group(g) => g.fmt(f),
        }
    }
}

/// A task or group value as a [`Node`].
pub(crate) fn as_node(v: Value<'_>) -> Option<Node<'_>> {
    if let Some(t) = v.downcast_ref::<TaskRef>() {
        return Some(Node::Task(t));
    }
    v.downcast_ref::<GroupRef>().map(Node::Group)
}

/// The tasks and groups a `>>`/`<<` operand or `set_upstream` argument names: one, or a
/// list/tuple of them.
fn operand_nodes<'v>(v: Value<'v>) -> anyhow::Result<Vec<Node<'v>>> {
    let bad = |what: &str| {
        anyhow::anyhow!(
            "dependencies link tasks: expected a task, a group or a list of them, got {what}; \
             note that `[a, b] >> c` is not supported, write `c << [a, b]`"
        )
    };
    if let Some(n) = as_node(v) {
        return Ok(vec![n]);
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
        .map(|x| as_node(x).ok_or_else(|| bad(x.get_type())))
        .collect()
}

/// The task indices a node stands for: itself, or a group's leaves (`as_upstream`) or roots.
pub(crate) fn node_tasks(
    st: &crate::draft::FileState,
    n: &Node,
    as_upstream: bool,
) -> anyhow::Result<Vec<usize>> {
    match n {
        Node::Task(t) => Ok(vec![t.idx]),
        Node::Group(g) => {
            let dag = &st.dags[g.dag];
            let tasks = if as_upstream {
                dag.group_leaves(g.idx)
            } else {
                dag.group_roots(g.idx)
            };
            if tasks.is_empty() {
                anyhow::bail!(
                    "group `{}` has no tasks yet: declare its tasks before linking it",
                    g.group_id
                );
            }
            Ok(tasks)
        }
    }
}

/// Makes every task in `ups` an upstream of every task in `downs`.
fn link(ups: &[Node], downs: &[Node]) -> anyhow::Result<()> {
    for (u, d) in ups.iter().flat_map(|u| downs.iter().map(move |d| (u, d))) {
        if !u.state().same(d.state()) {
            anyhow::bail!(
                "cannot link {u} and {d}: they were declared while evaluating different files"
            );
        }
        if u.dag() != d.dag() {
            anyhow::bail!(
                "cannot link {u} and {d}: tasks of different DAGs cannot depend on each other"
            );
        }
    }
    if let Some(first) = ups.first().or(downs.first()) {
        let mut st = first.state().lock();
        let mut up_tasks = Vec::new();
        for u in ups {
            up_tasks.extend(node_tasks(&st, u, true)?);
        }
        let mut down_tasks = Vec::new();
        for d in downs {
            down_tasks.extend(node_tasks(&st, d, false)?.into_iter().map(|i| (d.dag(), i)));
        }
        for (dag, d) in down_tasks {
            let task = &mut st.dags[dag].tasks[d];
            task.upstream
                .extend(up_tasks.iter().map(|&u| Upstream::Task(u)));
        }
    }
    Ok(())
}

starlark::methods_static!(TASK_METHODS = task_methods);
starlark::methods_static!(DAG_METHODS = dag_methods);
starlark::methods_static!(GROUP_METHODS = group_methods);

#[starlark_value(type = "task")]
impl<'v> StarlarkValue<'v> for TaskRef {
    /// `a >> b`: `b` runs after `a`; evaluates to `b` so chains work.
    fn right_shift(&self, other: Value<'v>, _heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let downs = operand_nodes(other).map_err(starlark::Error::new_other)?;
        link(&[Node::Task(self)], &downs).map_err(starlark::Error::new_other)?;
        Ok(other)
    }

    /// `a << b`: `a` runs after `b`; evaluates to `b`.
    fn left_shift(&self, other: Value<'v>, _heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let ups = operand_nodes(other).map_err(starlark::Error::new_other)?;
        link(&ups, &[Node::Task(self)]).map_err(starlark::Error::new_other)?;
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

#[starlark_value(type = "group")]
impl<'v> StarlarkValue<'v> for GroupRef {
    /// `g >> b`: `b` runs after the group's leaves; evaluates to `b`.
    fn right_shift(&self, other: Value<'v>, _heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let downs = operand_nodes(other).map_err(starlark::Error::new_other)?;
        link(&[Node::Group(self)], &downs).map_err(starlark::Error::new_other)?;
        Ok(other)
    }

    /// `g << b`: the group's roots run after `b`; evaluates to `b`.
    fn left_shift(&self, other: Value<'v>, _heap: Heap<'v>) -> starlark::Result<Value<'v>> {
        let ups = operand_nodes(other).map_err(starlark::Error::new_other)?;
        link(&ups, &[Node::Group(self)]).map_err(starlark::Error::new_other)?;
        Ok(other)
    }

    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other
            .downcast_ref::<GroupRef>()
            .is_some_and(|o| o.state.same(&self.state) && o.dag == self.dag && o.idx == self.idx))
    }

    fn get_methods() -> Option<&'static Methods> {
        Some(GROUP_METHODS.methods())
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

    /// `t.output("key")`: the value the task publishes as `key`, for a mapped task's
    /// `expand` (read at run time; makes the task upstream of the mapped one).
    fn output(
        this: &TaskRef,
        #[starlark(require = pos)] key: &str,
    ) -> anyhow::Result<crate::builtins::mapping::LateList> {
        crate::builtins::mapping::output_of(&this.state, this.dag, this.idx, &this.task_id, key)
    }

    /// `a.set_upstream(b)` is `a << b`.
    fn set_upstream<'v>(this: &TaskRef, other: Value<'v>) -> anyhow::Result<NoneType> {
        let ups = operand_nodes(other)?;
        link(&ups, &[Node::Task(this)])?;
        Ok(NoneType)
    }

    /// `a.set_downstream(b)` is `a >> b`.
    fn set_downstream<'v>(this: &TaskRef, other: Value<'v>) -> anyhow::Result<NoneType> {
        let downs = operand_nodes(other)?;
        link(&[Node::Task(this)], &downs)?;
        Ok(NoneType)
    }

    /// Makes the task a teardown of `setups` (a task or a list; each becomes a setup task and
    /// runs before it); evaluates to the task, as Airflow's `as_teardown`.
    fn as_teardown<'v>(
        this: Value<'v>,
        #[starlark(require = named, default = NoneOr::None)] setups: NoneOr<Value<'v>>,
        #[starlark(require = named, default = false)] on_failure_fail_dagrun: bool,
    ) -> anyhow::Result<Value<'v>> {
        let me = this
            .downcast_ref::<TaskRef>()
            .ok_or_else(|| anyhow::anyhow!("as_teardown() is a method of tasks"))?;
        let setups = match setups.into_option() {
            Some(v) => operand_nodes(v)?,
            None => Vec::new(),
        };
        {
            let mut st = me.state.lock();
            let t = &st.dags[me.dag].tasks[me.idx];
            let own_rule = t
                .explicit_trigger_rule
                .then_some(t.common.trigger_rule)
                .flatten();
            let errs = crate::builtins::setup_teardown::check(
                t.setup,
                true,
                on_failure_fail_dagrun,
                own_rule,
            );
            if let Some(e) = errs.into_iter().next() {
                anyhow::bail!("task `{}`: {e}", me.task_id);
            }
            let t = &mut st.dags[me.dag].tasks[me.idx];
            t.teardown = true;
            t.on_failure_fail_dagrun |= on_failure_fail_dagrun;
            for s in &setups {
                let Node::Task(s) = s else {
                    anyhow::bail!("as_teardown(setups = ...) takes tasks, got {s}");
                };
                if s.state.same(&me.state) && s.dag == me.dag {
                    let task = &mut st.dags[s.dag].tasks[s.idx];
                    if task.teardown {
                        anyhow::bail!("{s} is a teardown; it cannot also be a setup");
                    }
                    task.setup = true;
                }
            }
        }
        link(&setups, &[Node::Task(me)])?;
        Ok(this)
    }
}

#[starlark_module]
fn group_methods(builder: &mut MethodsBuilder) {
    /// The group's id (`outer.inner` for a nested group).
    #[starlark(attribute)]
    fn group_id(this: &GroupRef) -> anyhow::Result<String> {
        Ok(this.group_id.clone())
    }

    /// The id of the DAG the group belongs to.
    #[starlark(attribute)]
    fn dag_id(this: &GroupRef) -> anyhow::Result<String> {
        Ok(this.dag_id.clone())
    }

    /// `g.set_upstream(b)` is `g << b`.
    fn set_upstream<'v>(this: &GroupRef, other: Value<'v>) -> anyhow::Result<NoneType> {
        let ups = operand_nodes(other)?;
        link(&ups, &[Node::Group(this)])?;
        Ok(NoneType)
    }

    /// `g.set_downstream(b)` is `g >> b`.
    fn set_downstream<'v>(this: &GroupRef, other: Value<'v>) -> anyhow::Result<NoneType> {
        let downs = operand_nodes(other)?;
        link(&[Node::Group(this)], &downs)?;
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
