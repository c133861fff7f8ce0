//! The `container` builtin: a task that runs an image with podman or docker where it is
//! routed.

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::Value;
use tern_core::{ContainerTask, Mount, TaskKind};

use super::{declare_task, required_string, to_bool, to_env, to_string, to_text_list, Kwargs};
use crate::draft::KindDraft;
use crate::values::TaskRef;

const CONTAINER_FIELDS: &[&str] = &[
    "image",
    "command",
    "args",
    "env",
    "mounts",
    "memory",
    "cpus",
    "network",
    "runtime",
    "skip_on_exit_code",
];
const RUNTIMES: &[&str] = &["podman", "docker"];

/// `"512m"`, `"2g"`, `"1048576"`: a number with an optional b/k/m/g unit.
fn to_memory(field: &str, v: Value) -> Result<String, String> {
    let s = to_string(field, v)?.to_ascii_lowercase();
    let digits = s.trim_end_matches(['b', 'k', 'm', 'g']);
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || s.len() - digits.len() > 1
    {
        return Err(format!(
            "`{field}` must be a size such as \"512m\" or \"2g\", got {s:?}"
        ));
    }
    Ok(s)
}

fn to_cpus(field: &str, v: Value) -> Result<String, String> {
    let n: f64 = match v.get_type() {
        "int" | "float" => v
            .to_str()
            .parse()
            .map_err(|_| format!("`{field}` is out of range"))?,
        other => return Err(format!("`{field}` must be a number of cores, got {other}")),
    };
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("`{field}` must be more than 0, got {n}"));
    }
    Ok(n.to_string())
}

fn to_mounts(field: &str, v: Value) -> Result<Vec<Mount>, String> {
    to_text_list(field, v)?
        .iter()
        .map(|m| Mount::parse(m).map_err(|e| format!("`{field}`: {e}")))
        .collect()
}

/// `command` as a string (one word list split on spaces) or a list.
fn to_command(field: &str, v: Value) -> Result<Vec<String>, String> {
    match v.unpack_str() {
        Some(s) => Ok(s.split_whitespace().map(str::to_string).collect()),
        None => to_text_list(field, v),
    }
}

fn container_kind(args: &Kwargs, errs: &mut Vec<String>) -> KindDraft {
    let runtime = args.field("runtime", errs, to_string);
    if let Some(r) = &runtime {
        if !RUNTIMES.contains(&r.as_str()) {
            errs.push(format!(
                "unknown runtime `{r}`: use \"podman\" or \"docker\""
            ));
        }
    }
    KindDraft::Ready(TaskKind::Container(ContainerTask {
        image: required_string(args, "image", "\"localhost/etl:1.0\"", errs),
        command: args.field("command", errs, to_command).unwrap_or_default(),
        args: args.field("args", errs, to_text_list).unwrap_or_default(),
        env: args.field("env", errs, to_env).unwrap_or_default(),
        mounts: args.field("mounts", errs, to_mounts).unwrap_or_default(),
        memory: args.field("memory", errs, to_memory),
        cpus: args.field("cpus", errs, to_cpus),
        network: args.field("network", errs, to_bool).unwrap_or(false),
        runtime,
    }))
}

#[starlark_module]
pub(super) fn container_builtins(builder: &mut GlobalsBuilder) {
    /// A task that runs an image with podman (or docker) where the task is routed.
    fn container<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task(
            "container()",
            CONTAINER_FIELDS,
            kwargs,
            eval,
            container_kind,
        )
    }
}
