//! The functions DAG files call — `dag`, `shell`, `python`, `empty` — and the Starlark globals
//! they are evaluated with.
//!
//! Each builtin takes keyword arguments only, checks and converts every field, and records what
//! it declares in the evaluation's [`FileState`](crate::draft::FileState). Field problems (a bad
//! cron, an unknown trigger rule, an unknown field, ...) are recorded and evaluation goes on, so
//! one run reports them all; only problems that leave nothing sensible to return (no `id`, a
//! task declared before any DAG) stop evaluation with a Starlark error.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::anyhow;
use starlark::collections::SmallMap;
use starlark::environment::{Globals, GlobalsBuilder, LibraryExtension};
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::list::ListRef;
use starlark::values::tuple::TupleRef;
use starlark::values::{ProvidesStaticType, UnpackValue, Value, ValueLike};
use tern_core::schedule::{parse_local_date, parse_timezone};
use tern_core::{parse_duration, ParamSpec, Schedule, TriggerRule};

use crate::draft::{CommonFields, DagDraft, KindDraft, Loc, Shared, TaskDraft, Upstream};
use crate::values::{DagRef, GroupRef, TaskRef};

mod container;
mod groups;
pub(crate) mod mapping;
mod notify;
mod schedules;
mod sensors;
pub(crate) mod setup_teardown;

/// Task fields every task kind accepts and `default_args` may set.
pub(crate) const COMMON_FIELDS: &[&str] = &[
    "trigger_rule",
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "execution_timeout",
    "queue",
    "pool",
    "priority_weight",
    "depends_on_past",
    "wait_for_downstream",
    "max_active_tis_per_dag",
];

const TASK_FIELDS: &[&str] = &[
    "id",
    "upstream",
    "dag",
    "group",
    "setup",
    "teardown",
    "on_failure_fail_dagrun",
];
/// Fields of the tasks that can be mapped (see [`mapping`]).
const MAP_FIELDS: &[&str] = &["expand", "expand_zip"];
const SHELL_FIELDS: &[&str] = &["cmd", "env", "cwd", "sandbox", "skip_on_exit_code"];
const PYTHON_FIELDS: &[&str] = &[
    "code",
    "script",
    "args",
    "env",
    "cwd",
    "sandbox",
    "skip_on_exit_code",
    "requirements",
    "requirements_file",
    "python_version",
];
/// `branch()` and `short_circuit()` run a shell command (`cmd`) or Python (`code`/`script`).
const DECIDER_FIELDS: &[&str] = &[
    "cmd",
    "code",
    "script",
    "args",
    "env",
    "cwd",
    "sandbox",
    "skip_on_exit_code",
];
const SQL_FIELDS: &[&str] = &[
    "conn",
    "sql",
    "parameters",
    "transaction",
    "output_first_row",
];
const HTTP_FIELDS: &[&str] = &[
    "method",
    "url",
    "conn",
    "headers",
    "body",
    "expected_status",
    "max_body_bytes",
    "save_to_conn",
    "save_to",
];
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
const SQL_TO_LAKE_FIELDS: &[&str] = &[
    "conn",
    "sql",
    "parameters",
    "target_conn",
    "target",
    "format",
    "header",
    "delimiter",
    "quote",
    "line_ending",
    "null_text",
    "compression",
];

const DAG_FIELDS: &[&str] = &[
    "id",
    "schedule",
    "timezone",
    "start_date",
    "end_date",
    "catchup",
    "description",
    "tags",
    "max_active_runs",
    "max_active_tasks",
    "default_args",
    "params",
    "on_failure",
    "on_success",
    "on_retry",
    "dagrun_timeout",
    "max_consecutive_failed_dag_runs",
];

const PARAM_TYPES: &[&str] = &["string", "integer", "number", "boolean", "array", "object"];

/// What the evaluator's `extra` holds while a file runs.
#[derive(ProvidesStaticType)]
pub(crate) struct EvalCtx {
    pub state: Shared,
}

/// The globals DAG files see: the Starlark standard library (minus anything impure — it has no
/// file, clock or environment access), `struct`, `json`, `map`, `filter`, `partial`, `print`
/// (output discarded), and tern's builtins.
pub(crate) fn globals() -> &'static Globals {
    static GLOBALS: OnceLock<Globals> = OnceLock::new();
    GLOBALS.get_or_init(|| {
        GlobalsBuilder::extended_by(&[
            LibraryExtension::StructType,
            LibraryExtension::Json,
            LibraryExtension::Map,
            LibraryExtension::Filter,
            LibraryExtension::Partial,
            LibraryExtension::Print,
            LibraryExtension::SetType,
        ])
        .with(tern_builtins)
        .with(sensors::sensor_builtins)
        .with(container::container_builtins)
        .with(schedules::schedule_builtins)
        .with(groups::group_builtins)
        .with(mapping::mapping_builtins)
        .build()
    })
}

/// The closest of `candidates` to `word`, if close enough to be a plausible typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = word.chars().count();
    if len <= 2 {
        return None;
    }
    let limit = if len == 3 { 1 } else { len.div_ceil(2).min(3) };
    let prefix = |c: &str| word.len() >= 3 && (c.starts_with(word) || word.starts_with(c));
    candidates
        .into_iter()
        .map(|c| (tern_core::spelling::edit_distance(word, c), c))
        .filter(|(d, c)| *d <= limit || prefix(c))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` or an empty string.
pub(crate) fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// `; did you mean `x`?` when a candidate is close, else `; {list_intro}: a, b, c`.
pub(crate) fn suggest_or_list(word: &str, candidates: &[&str], list_intro: &str) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => format!("; {list_intro}: {}", candidates.join(", ")),
    }
}

/// Whether `id` is a valid DAG or task id (see [`tern_core::ids`]).
pub(crate) fn check_id(id: &str) -> Result<(), String> {
    tern_core::ids::check_id(id)
}

fn ctx_state(eval: &Evaluator) -> anyhow::Result<Shared> {
    eval.extra
        .and_then(|e| e.downcast_ref::<EvalCtx>())
        .map(|c| c.state.clone())
        .ok_or_else(|| {
            anyhow!("internal error: tern builtins called outside a DAG-file evaluation")
        })
}

fn span_line(span: &starlark::codemap::FileSpan) -> u32 {
    u32::try_from(span.resolve_span().begin.line + 1).unwrap_or(u32::MAX)
}

/// Where the current builtin was called from, and the line of the evaluated file that led there
/// (the same line unless the call happened inside a function from a loaded file).
fn call_loc(eval: &Evaluator, main_file: &str) -> (Loc, u32) {
    let loc = match eval.call_stack_top_location() {
        Some(span) => Loc {
            file: span.filename().to_string(),
            line: span_line(&span),
        },
        None => Loc {
            file: main_file.to_string(),
            line: 0,
        },
    };
    if loc.file == main_file {
        let line = loc.line;
        return (loc, line);
    }
    let main_line = (0..eval.call_stack_count())
        .rev()
        .filter_map(|n| eval.call_stack_nth_location(n))
        .find(|s| s.filename() == main_file)
        .map(|s| span_line(&s))
        .unwrap_or(loc.line);
    (loc, main_line)
}

// ----- value conversion: each returns a message (without the task/dag prefix) on error -----

/// A required string field; pushes "`name` is required" when missing.
fn required_string(args: &Kwargs, name: &str, example: &str, errs: &mut Vec<String>) -> String {
    match args.field(name, errs, to_string) {
        Some(s) if !s.trim().is_empty() => s,
        Some(_) => {
            errs.push(format!("`{name}` must not be empty"));
            String::new()
        }
        None => {
            if args.get(name).is_none() {
                errs.push(format!("`{name}` is required, e.g. {name} = {example}"));
            }
            String::new()
        }
    }
}

/// SQL parameters: a list of strings, numbers, bools or None.
fn to_parameters(field: &str, v: Value) -> Result<Vec<serde_json::Value>, String> {
    list_items(field, v)?
        .into_iter()
        .map(|x| match x.get_type() {
            "NoneType" => Ok(serde_json::Value::Null),
            "bool" => Ok(serde_json::Value::Bool(x.unpack_bool().unwrap_or_default())),
            "string" => Ok(serde_json::Value::String(
                x.unpack_str().unwrap_or_default().to_string(),
            )),
            "int" => to_int(field, x).map(serde_json::Value::from),
            "float" => x
                .to_str()
                .parse::<f64>()
                .map(serde_json::Value::from)
                .map_err(|_| format!("`{field}[]` is out of range")),
            _ => Err(type_err(
                &format!("{field}[]"),
                "a string, number, bool or None",
                x,
            )),
        })
        .collect()
}

/// One ASCII character (CSV delimiter, quote).
fn to_ascii_char(field: &str, v: Value) -> Result<char, String> {
    let s = to_string(field, v)?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii() && c != '\n' && c != '\r' => Ok(c),
        _ => Err(format!(
            "`{field}` must be one ASCII character other than a line break, got {s:?}"
        )),
    }
}

fn type_err(field: &str, want: &str, v: Value) -> String {
    format!("`{field}` must be {want}, got {}", v.get_type())
}

fn to_string(field: &str, v: Value) -> Result<String, String> {
    v.unpack_str()
        .map(str::to_string)
        .ok_or_else(|| type_err(field, "a string", v))
}

fn to_int(field: &str, v: Value) -> Result<i64, String> {
    match i64::unpack_value(v) {
        Ok(Some(i)) => Ok(i),
        Ok(None) => Err(type_err(field, "an int", v)),
        Err(_) => Err(format!("`{field}` is out of range")),
    }
}

fn to_bool(field: &str, v: Value) -> Result<bool, String> {
    v.unpack_bool().ok_or_else(|| type_err(field, "a bool", v))
}

fn to_u32_min(field: &str, v: Value, min: i64) -> Result<u32, String> {
    let i = to_int(field, v)?;
    if i < min {
        return Err(format!("`{field}` must be at least {min}, got {i}"));
    }
    u32::try_from(i).map_err(|_| format!("`{field}` is too large: {i}"))
}

/// A string, or a number converted to its text (for env values and args).
fn to_text(field: &str, v: Value) -> Result<String, String> {
    if let Some(s) = v.unpack_str() {
        return Ok(s.to_string());
    }
    match v.get_type() {
        "int" | "float" | "bool" => Ok(v.to_str()),
        _ => Err(type_err(field, "a string", v)),
    }
}

/// A duration: a string such as `"30s"` or `"1h30m"`, or a number of seconds. In milliseconds.
fn to_duration_ms(field: &str, v: Value) -> Result<u64, String> {
    let secs: f64 = match v.get_type() {
        "string" => {
            let s = v.unpack_str().unwrap_or_default();
            let d = parse_duration(s).map_err(|e| format!("`{field}`: {e}"))?;
            return u64::try_from(d.as_millis()).map_err(|_| format!("`{field}` is too large"));
        }
        "int" | "float" => v
            .to_str()
            .parse()
            .map_err(|_| format!("`{field}` is out of range"))?,
        _ => {
            return Err(type_err(
                field,
                "a duration string (e.g. \"30s\") or seconds",
                v,
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "`{field}` must be a non-negative duration, got {}",
            v.to_str()
        ));
    }
    Ok((secs * 1000.0).round() as u64)
}

fn list_items<'v>(field: &str, v: Value<'v>) -> Result<Vec<Value<'v>>, String> {
    if let Some(l) = ListRef::from_value(v) {
        Ok(l.content().to_vec())
    } else if let Some(t) = TupleRef::from_value(v) {
        Ok(t.content().to_vec())
    } else {
        Err(type_err(field, "a list", v))
    }
}

fn dict_items<'v>(field: &str, v: Value<'v>) -> Result<Vec<(Value<'v>, Value<'v>)>, String> {
    let d = DictRef::from_value(v).ok_or_else(|| type_err(field, "a dict", v))?;
    Ok(d.iter().collect())
}

/// `sandbox = True`, or a dict with `network` (bool) and `writable` (absolute paths).
fn to_sandbox(field: &str, v: Value) -> Result<Option<tern_core::Sandbox>, String> {
    if let Some(b) = v.unpack_bool() {
        return Ok(b.then(tern_core::Sandbox::default));
    }
    let mut sandbox = tern_core::Sandbox::default();
    for (k, val) in dict_items(field, v).map_err(|_| {
        type_err(
            field,
            "True, or a dict such as {\"network\": True, \"writable\": [\"/data/out\"]}",
            v,
        )
    })? {
        match k.unpack_str() {
            Some("network") => sandbox.network = to_bool("sandbox.network", val)?,
            Some("writable") => {
                sandbox.writable = to_string_list("sandbox.writable", val)?;
                if let Some(p) = sandbox.writable.iter().find(|p| !p.starts_with('/')) {
                    return Err(format!(
                        "`sandbox.writable` paths must be absolute, got {p:?}"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "unknown `sandbox` key {}: use \"network\" or \"writable\"",
                    k.to_repr()
                ))
            }
        }
    }
    Ok(Some(sandbox))
}

/// The `method` field of HTTP builtins: upper-cased, `GET` by default, one of [`HTTP_METHODS`].
fn http_method(args: &Kwargs, errs: &mut Vec<String>) -> String {
    let method = args
        .field("method", errs, to_string)
        .map(|m| m.to_ascii_uppercase())
        .unwrap_or_else(|| "GET".into());
    if !HTTP_METHODS.contains(&method.as_str()) {
        errs.push(format!(
            "unknown method `{method}`{}",
            suggest_or_list(&method, HTTP_METHODS, "use one of")
        ));
    }
    method
}

/// A list of HTTP statuses.
fn to_status_list(field: &str, v: Value) -> Result<Vec<u16>, String> {
    list_items(field, v)?
        .into_iter()
        .map(|x| match to_int(&format!("{field}[]"), x)? {
            n @ 100..=599 => Ok(n as u16),
            n => Err(format!("`{field}` holds {n}, not an HTTP status")),
        })
        .collect()
}

fn to_text_list(field: &str, v: Value) -> Result<Vec<String>, String> {
    list_items(field, v)?
        .into_iter()
        .map(|x| to_text(&format!("{field}[]"), x))
        .collect()
}

fn to_string_list(field: &str, v: Value) -> Result<Vec<String>, String> {
    list_items(field, v)?
        .into_iter()
        .map(|x| to_string(&format!("{field}[]"), x))
        .collect()
}

fn to_env(field: &str, v: Value) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, val) in dict_items(field, v)? {
        let k = to_string(&format!("{field} key"), k)?;
        let val = to_text(&format!("{field}[{k:?}]"), val)?;
        out.insert(k, val);
    }
    Ok(out)
}

/// Sets one common field from `v`; `None` when `key` is not a common field.
pub(crate) fn set_common(c: &mut CommonFields, key: &str, v: Value) -> Option<Result<(), String>> {
    let r = match key {
        "trigger_rule" => to_string(key, v).and_then(|s| {
            TriggerRule::parse(&s)
                .map(|r| c.trigger_rule = Some(r))
                .ok_or_else(|| {
                    format!(
                        "unknown trigger rule `{s}`{}",
                        suggest_or_list(&s, TriggerRule::NAMES, "use one of")
                    )
                })
        }),
        "retries" => to_u32_min(key, v, 0).map(|n| c.retries = Some(n)),
        "retry_delay" => to_duration_ms(key, v).map(|d| c.retry_delay_ms = Some(d)),
        "retry_exponential_backoff" => {
            to_bool(key, v).map(|b| c.retry_exponential_backoff = Some(b))
        }
        "max_retry_delay" => to_duration_ms(key, v).map(|d| c.max_retry_delay_ms = Some(d)),
        "execution_timeout" => to_duration_ms(key, v).map(|d| c.execution_timeout_ms = Some(d)),
        "queue" => to_string(key, v).and_then(|s| {
            if s.trim().is_empty() {
                Err("`queue` must not be empty".into())
            } else {
                c.queue = Some(s);
                Ok(())
            }
        }),
        "pool" => to_string(key, v).and_then(|s| {
            if s.trim().is_empty() {
                Err("`pool` must not be empty".into())
            } else {
                c.pool = Some(s);
                Ok(())
            }
        }),
        "priority_weight" => to_int(key, v).map(|w| c.priority_weight = Some(w)),
        "depends_on_past" => to_bool(key, v).map(|b| c.depends_on_past = Some(b)),
        "wait_for_downstream" => to_bool(key, v).map(|b| c.wait_for_downstream = Some(b)),
        "max_active_tis_per_dag" => {
            to_u32_min(key, v, 1).map(|n| c.max_active_tis_per_dag = Some(n))
        }
        _ => return None,
    };
    Some(r)
}

/// The keyword arguments of one builtin call. `None` values count as "not given".
struct Kwargs<'v> {
    map: SmallMap<String, Value<'v>>,
}

impl<'v> Kwargs<'v> {
    fn get(&self, name: &str) -> Option<Value<'v>> {
        self.map.get(name).copied().filter(|v| !v.is_none())
    }

    /// An unknown-field message for every argument not in any of `allowed` (the mapping
    /// fields are left to [`mapping::read_expand`], which says why a task cannot be mapped).
    fn unknown(&self, call: &str, allowed: &[&[&str]], errs: &mut Vec<String>) {
        let all: Vec<&str> = allowed.iter().flat_map(|a| a.iter().copied()).collect();
        for key in self.map.keys() {
            if !all.contains(&key.as_str()) && !MAP_FIELDS.contains(&key.as_str()) {
                let hint = suggest_or_list(key, &all, &format!("{call} accepts"));
                errs.push(format!("unknown field `{key}` for {call}{hint}"));
            }
        }
    }

    /// The required `id`: missing or not a string stops evaluation.
    fn id(&self, call: &str, example: &str) -> anyhow::Result<String> {
        match self.get("id") {
            None => Err(anyhow!(
                "{call} needs an `id`, e.g. {call_name}(id = \"{example}\", ...)",
                call_name = call.trim_end_matches("()")
            )),
            Some(v) => v
                .unpack_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{call}: `id` must be a string, got {}", v.get_type())),
        }
    }

    /// Converts field `name` if given, pushing the conversion error to `errs`.
    fn field<T>(
        &self,
        name: &str,
        errs: &mut Vec<String>,
        conv: impl FnOnce(&str, Value<'v>) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.get(name)?;
        match conv(name, v) {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(e);
                None
            }
        }
    }
}

fn parse_params(v: Value, errs: &mut Vec<String>) -> BTreeMap<String, ParamSpec> {
    let mut out = BTreeMap::new();
    let items = match dict_items("params", v) {
        Ok(i) => i,
        Err(e) => {
            errs.push(e);
            return out;
        }
    };
    for (k, val) in items {
        let Some(name) = k.unpack_str() else {
            errs.push(format!(
                "`params` keys must be strings, got {}",
                k.get_type()
            ));
            continue;
        };
        match parse_param(name, val) {
            Ok(p) => {
                out.insert(name.to_string(), p);
            }
            Err(e) => errs.push(e),
        }
    }
    out
}

/// Deepest nesting of lists and dicts a JSON-like value (params, conf defaults) may have:
/// deeper values are refused before they are converted (the conversion recurses), and every
/// reader of the stored value can parse it back.
pub(crate) const MAX_JSON_DEPTH: usize = 32;

/// Most values a JSON-like value may hold (shared sub-lists count once per place).
const MAX_JSON_NODES: usize = 1_000_000;

/// Whether `v` nests lists, tuples or dicts deeper than `limit`, or holds more than
/// [`MAX_JSON_NODES`] values (walked without recursion, so a cycle or a value that shares one
/// list many times ends the walk too).
fn nested_deeper_than(v: Value, limit: usize) -> bool {
    let mut stack = vec![(v, 1usize)];
    let mut visited = 0usize;
    while let Some((v, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_JSON_NODES {
            return true;
        }
        let children: Vec<Value> = if let Some(l) = ListRef::from_value(v) {
            l.iter().collect()
        } else if let Some(t) = TupleRef::from_value(v) {
            t.iter().collect()
        } else if let Some(d) = DictRef::from_value(v) {
            d.iter().map(|(_, x)| x).collect()
        } else {
            continue;
        };
        if !children.is_empty() && depth >= limit {
            return true;
        }
        stack.extend(children.into_iter().map(|c| (c, depth + 1)));
    }
    false
}

fn to_json(what: &str, v: Value) -> Result<serde_json::Value, String> {
    if nested_deeper_than(v, MAX_JSON_DEPTH) {
        return Err(format!(
            "{what} is nested deeper than {MAX_JSON_DEPTH} levels of lists and dicts (or holds over a million values); flatten it"
        ));
    }
    v.to_json_value().map_err(|e| {
        format!("{what} must be JSON-like (None, bool, int, float, string, list, dict): {e}")
    })
}

fn parse_param(name: &str, v: Value) -> Result<ParamSpec, String> {
    let spec_dict = DictRef::from_value(v).filter(|d| d.get_str("default").is_some());
    let Some(d) = spec_dict else {
        let default = to_json(&format!("param `{name}`"), v)?;
        let r#type = tern_core::params::infer_type(&default);
        return Ok(ParamSpec {
            default,
            r#type,
            description: None,
            rules: Default::default(),
        });
    };
    let mut default = serde_json::Value::Null;
    let mut r#type = None;
    let mut description = None;
    let mut rules = tern_core::ParamRules::default();
    for (k, val) in d.iter() {
        match k.unpack_str() {
            Some("default") => default = to_json(&format!("param `{name}` default"), val)?,
            Some("type") if val.is_none() => {}
            Some("type") => r#type = Some(to_string(&format!("params.{name}.type"), val)?),
            Some("description") if val.is_none() => {}
            Some("description") => {
                description = Some(to_string(&format!("params.{name}.description"), val)?)
            }
            Some("enum") if val.is_none() => {}
            Some("enum") => match to_json(&format!("params.{name}.enum"), val)? {
                serde_json::Value::Array(items) if !items.is_empty() => rules.r#enum = Some(items),
                _ => return Err(format!("param `{name}`: `enum` must be a non-empty list")),
            },
            Some("pattern") if val.is_none() => {}
            Some("pattern") => {
                let p = to_string(&format!("params.{name}.pattern"), val)?;
                rules.pattern = Some(p);
            }
            Some("max_length" | "maxLength") if val.is_none() => {}
            Some("max_length" | "maxLength") => {
                let n = to_int(&format!("params.{name}.max_length"), val)?;
                if n < 0 {
                    return Err(format!("param `{name}`: `max_length` must be 0 or more"));
                }
                rules.max_length = Some(n as u64);
            }
            other => {
                let key = other.map(str::to_string).unwrap_or_else(|| k.to_repr());
                return Err(format!(
                    "param `{name}`: unknown key `{key}`{}",
                    suggest_or_list(
                        &key,
                        &[
                            "default",
                            "type",
                            "description",
                            "enum",
                            "pattern",
                            "max_length"
                        ],
                        "a param spec has"
                    )
                ));
            }
        }
    }
    match &r#type {
        None => r#type = tern_core::params::infer_type(&default),
        Some(t) if !PARAM_TYPES.contains(&t.as_str()) => {
            return Err(format!(
                "param `{name}`: unknown type `{t}`{}",
                suggest_or_list(t, PARAM_TYPES, "use one of")
            ))
        }
        Some(t) => {
            let got = tern_core::params::infer_type(&default);
            let ok = match got.as_deref() {
                None => true,
                Some(g) => g == t || (t == "number" && g == "integer"),
            };
            if !ok {
                return Err(format!(
                    "param `{name}`: default {default} is not of type {t}"
                ));
            }
        }
    }
    // The rules must hold for the default too (a pattern that does not compile says so here).
    if !default.is_null() {
        tern_core::params::check_rules(&rules, &default)
            .map_err(|e| format!("param `{name}`: the default breaks its own rules: {e}"))?;
    } else if let Some(p) = &rules.pattern {
        tern_core::params::check_rules(&rules, &serde_json::Value::String(String::new()))
            .or_else(|e| {
                if e.contains("not a valid") {
                    Err(e)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| format!("param `{name}`: {e}; pattern {p:?}"))?;
    }
    Ok(ParamSpec {
        default,
        r#type,
        description,
        rules,
    })
}

fn parse_default_args(v: Value, errs: &mut Vec<String>) -> CommonFields {
    let mut c = CommonFields::default();
    let items = match dict_items("default_args", v) {
        Ok(i) => i,
        Err(e) => {
            errs.push(e);
            return c;
        }
    };
    for (k, val) in items {
        let Some(key) = k.unpack_str() else {
            errs.push(format!(
                "`default_args` keys must be strings, got {}",
                k.get_type()
            ));
            continue;
        };
        if val.is_none() {
            continue;
        }
        match set_common(&mut c, key, val) {
            Some(Ok(())) => {}
            Some(Err(e)) => errs.push(format!("default_args: {e}")),
            None => errs.push(format!(
                "unknown default_args key `{key}`{}",
                suggest_or_list(key, COMMON_FIELDS, "default_args may set")
            )),
        }
    }
    c
}

fn declare_dag<'v>(
    kwargs: SmallMap<String, Value<'v>>,
    eval: &mut Evaluator<'v, '_, '_>,
) -> anyhow::Result<DagRef> {
    let state = ctx_state(eval)?;
    let main_file = state.lock().main_file.clone();
    let (loc, main_line) = call_loc(eval, &main_file);
    let args = Kwargs { map: kwargs };
    let id = args.id("dag()", "etl")?;
    let mut errs = Vec::new();
    if let Err(e) = tern_core::ids::check_dag_id(&id) {
        errs.push(e);
    }
    args.unknown("dag()", &[DAG_FIELDS], &mut errs);

    // A cron string is checked here (its errors come first, as written); a schedule value
    // once the time zone and start date are known.
    let mut schedule = Schedule::None;
    let mut schedule_value = None;
    match args.get("schedule") {
        Some(v) if schedules::is_schedule_value(v) => schedule_value = Some(v),
        Some(_) => {
            if let Some(s) = args.field("schedule", &mut errs, schedules::to_cron_schedule) {
                schedule = s;
            }
        }
        None => {}
    }
    let timezone = args
        .field("timezone", &mut errs, to_string)
        .unwrap_or_else(|| "UTC".to_string());
    let tz = match parse_timezone(&timezone) {
        Ok(tz) => tz,
        Err(e) => {
            let hint = if timezone.eq_ignore_ascii_case("utc") {
                "; did you mean `UTC`?".to_string()
            } else {
                String::new()
            };
            errs.push(format!("{e}{hint}"));
            chrono_tz::UTC
        }
    };
    let date = |f: &str, v: Value| {
        to_string(f, v).and_then(|s| parse_local_date(&s, tz).map_err(|e| format!("`{f}`: {e}")))
    };
    let start_date = args.field("start_date", &mut errs, date);
    let end_date = args.field("end_date", &mut errs, date);
    if let (Some(s), Some(e)) = (start_date, end_date) {
        if e < s {
            errs.push("`end_date` is before `start_date`".into());
        }
    }
    if let Some(v) = schedule_value {
        match schedules::resolve_value(v, tz, start_date) {
            Ok(s) => schedule = s,
            Err(e) => errs.push(e),
        }
    }
    let catchup = args.field("catchup", &mut errs, to_bool).unwrap_or(false);
    let description = args.field("description", &mut errs, to_string);
    let tags = args
        .field("tags", &mut errs, to_string_list)
        .unwrap_or_default();
    let max_active_runs = args
        .field("max_active_runs", &mut errs, |f, v| to_u32_min(f, v, 1))
        .unwrap_or(16);
    let max_active_tasks = args
        .field("max_active_tasks", &mut errs, |f, v| to_u32_min(f, v, 1))
        .unwrap_or(16);
    let defaults = match args.get("default_args") {
        Some(v) => parse_default_args(v, &mut errs),
        None => CommonFields::default(),
    };
    let params = match args.get("params") {
        Some(v) => parse_params(v, &mut errs),
        None => BTreeMap::new(),
    };
    let dagrun_timeout_ms = args.field("dagrun_timeout", &mut errs, to_duration_ms);
    if dagrun_timeout_ms == Some(0) {
        errs.push("`dagrun_timeout` must be more than 0 s (leave it out for none)".into());
    }
    let max_consecutive_failed_dag_runs = args
        .field("max_consecutive_failed_dag_runs", &mut errs, |f, v| {
            to_u32_min(f, v, 0)
        })
        .unwrap_or(0);
    let [on_failure, on_success, on_retry] = ["on_failure", "on_success", "on_retry"].map(|f| {
        args.field(f, &mut errs, notify::to_conn_names)
            .unwrap_or_default()
    });

    let mut st = state.lock();
    let idx = st.dags.len();
    if let Some(&prev) = st.dag_ids.get(&id) {
        let where_ = st.dags[prev].loc.describe_from(&loc.file);
        errs.push(format!(
            "duplicate dag id: already declared at {where_}; dag ids must be unique"
        ));
    } else {
        st.dag_ids.insert(id.clone(), idx);
    }
    for e in errs {
        st.problem(&loc, main_line, Some(idx), format!("dag `{id}`: {e}"));
    }
    st.dags.push(DagDraft {
        id: id.clone(),
        loc,
        main_line,
        schedule,
        timezone,
        start_date,
        end_date,
        catchup,
        params,
        tags,
        description,
        max_active_runs,
        max_active_tasks,
        on_failure,
        on_success,
        on_retry,
        dagrun_timeout_ms,
        max_consecutive_failed_dag_runs,
        defaults,
        tasks: Vec::new(),
        by_id: Default::default(),
        groups: Vec::new(),
        group_ids: Default::default(),
        building: Vec::new(),
    });
    st.current = Some(idx);
    drop(st);
    Ok(DagRef {
        state,
        idx,
        dag_id: id,
    })
}

fn declare_task<'v>(
    call: &'static str,
    kind_fields: &[&str],
    kwargs: SmallMap<String, Value<'v>>,
    eval: &mut Evaluator<'v, '_, '_>,
    kind: impl FnOnce(&Kwargs<'v>, &mut Vec<String>) -> KindDraft,
) -> anyhow::Result<TaskRef> {
    declare_task_with(call, kind_fields, kwargs, eval, None, kind)
}

/// `skip_on_exit_code`: an int, a list of ints, or `None` (never skip). Exit code 0 is a
/// success and cannot be listed.
fn to_exit_codes(field: &str, v: Value) -> Result<Vec<i32>, String> {
    if v.is_none() {
        return Ok(Vec::new());
    }
    let items = if v.get_type() == "int" {
        vec![v]
    } else {
        list_items(field, v).map_err(|_| type_err(field, "an exit code or a list of them", v))?
    };
    items
        .into_iter()
        .map(|x| {
            let n = to_int(field, x)?;
            match i32::try_from(n) {
                Ok(c @ 1..=255) => Ok(c),
                _ => Err(format!(
                    "`{field}`: {n} is not an exit code that can mean a skip (1 to 255)"
                )),
            }
        })
        .collect()
}

/// Where a task or group goes: its DAG (`dag =`, else its group's, else the latest `dag(...)`)
/// and its group (`group =`, else the one a `group(..., build =)` call is filling). `who` names
/// it in errors (``task `x` ``).
fn placement(args: &Kwargs, state: &Shared, who: &str) -> anyhow::Result<(usize, Option<usize>)> {
    let explicit_group = match args.get("group") {
        Some(v) => {
            let g = v.downcast_ref::<GroupRef>().ok_or_else(|| {
                anyhow!(
                    "{who}: `group` must be a group value returned by group(...), got {}",
                    v.get_type()
                )
            })?;
            if !g.state.same(state) {
                return Err(anyhow!(
                    "{who}: group `{}` was declared while evaluating another file; declare what goes in a group in the file that declares it",
                    g.group_id
                ));
            }
            Some((g.dag, g.idx))
        }
        None => None,
    };
    let dag_idx = match args.get("dag") {
        Some(v) => {
            let d = v.downcast_ref::<DagRef>().ok_or_else(|| {
                anyhow!(
                    "{who}: `dag` must be a dag value returned by dag(...), got {}",
                    v.get_type()
                )
            })?;
            if !d.state.same(state) {
                return Err(anyhow!(
                    "{who}: dag `{}` was declared while evaluating another file; declare tasks in the file that declares their DAG",
                    d.dag_id
                ));
            }
            d.idx
        }
        None => match explicit_group {
            Some((dag, _)) => dag,
            None => state.lock().current.ok_or_else(|| {
                anyhow!("{who} is declared before any dag(...): call dag(...) first or pass `dag = <a dag value>`")
            })?,
        },
    };
    if explicit_group.is_some_and(|(dag, _)| dag != dag_idx) {
        return Err(anyhow!(
            "{who}: its group belongs to another DAG than its `dag`"
        ));
    }
    let group = explicit_group
        .map(|(_, g)| g)
        .or_else(|| state.lock().dags[dag_idx].building.last().copied());
    Ok((dag_idx, group))
}

/// Declares a task; `flow` makes it a branch or a short circuit.
fn declare_task_with<'v>(
    call: &'static str,
    kind_fields: &[&str],
    kwargs: SmallMap<String, Value<'v>>,
    eval: &mut Evaluator<'v, '_, '_>,
    flow: Option<tern_core::Flow>,
    kind: impl FnOnce(&Kwargs<'v>, &mut Vec<String>) -> KindDraft,
) -> anyhow::Result<TaskRef> {
    let state = ctx_state(eval)?;
    let main_file = state.lock().main_file.clone();
    let (loc, main_line) = call_loc(eval, &main_file);
    let args = Kwargs { map: kwargs };
    let id = args.id(call, "extract")?;

    let (dag_idx, group) = placement(&args, &state, &format!("task `{id}`"))?;
    let local_id = id;
    let id = match group {
        Some(g) => format!("{}.{local_id}", state.lock().dags[dag_idx].groups[g].id),
        None => local_id.clone(),
    };

    let mut errs = Vec::new();
    if let Err(e) = check_id(&local_id) {
        errs.push(e);
    }
    // `expand` on a task that cannot be mapped gets its own message (from `read_expand`).
    let map_fields = if mapping::unmappable(call).is_some() {
        &[]
    } else {
        MAP_FIELDS
    };
    args.unknown(
        call,
        &[TASK_FIELDS, kind_fields, COMMON_FIELDS, map_fields],
        &mut errs,
    );
    let mut common = CommonFields::default();
    for key in COMMON_FIELDS {
        if let Some(v) = args.get(key) {
            if let Some(Err(e)) = set_common(&mut common, key, v) {
                errs.push(e);
            }
        }
    }
    let mut upstream = Vec::new();
    if let Some(v) = args.get("upstream") {
        let items = if crate::values::as_node(v).is_some() || v.unpack_str().is_some() {
            Ok(vec![v])
        } else {
            list_items("upstream", v)
        };
        match items {
            Err(_) => errs.push(type_err(
                "upstream",
                "a list of tasks, groups or task ids",
                v,
            )),
            Ok(items) => {
                for x in items {
                    if let Some(s) = x.unpack_str() {
                        upstream.push(Upstream::Name(s.to_string()));
                    } else if let Some(g) = x.downcast_ref::<GroupRef>() {
                        let st = state.lock();
                        if !(g.state.same(&state) && g.dag == dag_idx) {
                            errs.push(format!(
                                "upstream {g} belongs to another DAG; tasks can only depend on tasks of their own DAG"
                            ));
                        } else {
                            match crate::values::node_tasks(
                                &st,
                                &crate::values::Node::Group(g),
                                true,
                            ) {
                                Ok(leaves) => {
                                    upstream.extend(leaves.into_iter().map(Upstream::Task))
                                }
                                Err(e) => errs.push(e.to_string()),
                            }
                        }
                    } else if let Some(t) = x.downcast_ref::<TaskRef>() {
                        if t.state.same(&state) && t.dag == dag_idx {
                            upstream.push(Upstream::Task(t.idx));
                        } else {
                            errs.push(format!(
                                "upstream {t} belongs to another DAG; tasks can only depend on tasks of their own DAG"
                            ));
                        }
                    } else {
                        errs.push(type_err("upstream[]", "a task, a group or a task id", x));
                    }
                }
            }
        }
    }
    let kind = kind(&args, &mut errs);
    let explicit_trigger_rule = common.trigger_rule.is_some();
    let setup = args.field("setup", &mut errs, to_bool).unwrap_or(false);
    let teardown = args.field("teardown", &mut errs, to_bool).unwrap_or(false);
    let on_failure_fail_dagrun = args
        .field("on_failure_fail_dagrun", &mut errs, to_bool)
        .unwrap_or(false);
    errs.extend(crate::builtins::setup_teardown::check(
        setup,
        teardown,
        on_failure_fail_dagrun,
        common.trigger_rule,
    ));
    // An explicit `None` means "never skip" (Airflow's spelling), so it is read raw.
    let skip_on_exit_code = match args.map.get("skip_on_exit_code") {
        Some(v) if kind_fields.contains(&"skip_on_exit_code") => {
            match to_exit_codes("skip_on_exit_code", *v) {
                Ok(codes) => Some(codes),
                Err(e) => {
                    errs.push(e);
                    None
                }
            }
        }
        _ => None,
    };

    let mut st = state.lock();
    let (expand, mapped_from) = mapping::read_expand(
        args.get("expand"),
        args.get("expand_zip"),
        call,
        &state,
        &st.dags[dag_idx],
        dag_idx,
        &mut errs,
    );
    if expand.is_some() && (setup || teardown) {
        errs.push("a setup or teardown task cannot be mapped".into());
    }
    upstream.extend(mapped_from);
    let dag = &mut st.dags[dag_idx];
    common.fill_from(&dag.group_defaults(group));
    let dag_id = dag.id.clone();
    let idx = dag.tasks.len();
    if dag.group_ids.contains_key(&id) {
        errs.push(format!(
            "`{id}` is already the id of a group in dag `{dag_id}`; task and group ids must differ"
        ));
    }
    if let Some(&prev) = dag.by_id.get(&id) {
        let where_ = dag.tasks[prev].loc.describe_from(&loc.file);
        errs.push(format!(
            "duplicate task id in dag `{dag_id}`: already declared at {where_}"
        ));
    } else {
        dag.by_id.insert(id.clone(), idx);
    }
    dag.tasks.push(TaskDraft {
        id: id.clone(),
        loc: loc.clone(),
        main_line,
        kind,
        common,
        upstream,
        skip_on_exit_code,
        flow,
        group,
        explicit_trigger_rule,
        setup,
        teardown,
        on_failure_fail_dagrun,
        expand,
    });
    for e in errs {
        st.problem(&loc, main_line, Some(dag_idx), format!("task `{id}`: {e}"));
    }
    drop(st);
    Ok(TaskRef {
        state,
        dag: dag_idx,
        idx,
        task_id: id,
        dag_id,
    })
}

#[starlark_module]
fn tern_builtins(builder: &mut GlobalsBuilder) {
    /// Declares a DAG; tasks declared after it (without `dag=`) belong to it.
    fn dag<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DagRef> {
        declare_dag(kwargs, eval)
    }

    /// A task that runs `cmd` with `sh -c`.
    fn shell<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task("shell()", SHELL_FIELDS, kwargs, eval, shell_kind)
    }

    /// A task that runs Python code: inline `code`, or a `script` file next to the DAG file.
    fn python<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task("python()", PYTHON_FIELDS, kwargs, eval, python_kind)
    }

    /// A shell or python task whose output `follow` names the direct downstream tasks to run;
    /// the others are skipped.
    fn branch<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let flow = tern_core::Flow::Branch;
        declare_task_with(
            "branch()",
            DECIDER_FIELDS,
            kwargs,
            eval,
            Some(flow),
            decider_kind,
        )
    }

    /// A shell or python task whose falsy output `condition` skips what is downstream.
    fn short_circuit<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        let ignore = match kwargs.get("ignore_downstream_trigger_rules") {
            None => Ok(true),
            Some(v) if v.is_none() => Ok(true),
            Some(v) => to_bool("ignore_downstream_trigger_rules", *v),
        };
        let mut fields = DECIDER_FIELDS.to_vec();
        fields.push("ignore_downstream_trigger_rules");
        let flow = tern_core::Flow::ShortCircuit {
            ignore_downstream_trigger_rules: *ignore.as_ref().unwrap_or(&true),
        };
        declare_task_with(
            "short_circuit()",
            &fields,
            kwargs,
            eval,
            Some(flow),
            |args, errs| {
                if let Err(e) = ignore {
                    errs.push(e);
                }
                decider_kind(args, errs)
            },
        )
    }

    /// A task that runs SQL statements on a connection.
    fn sql<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task("sql()", SQL_FIELDS, kwargs, eval, |args, errs| {
            let conn = required_string(args, "conn", "\"warehouse\"", errs);
            let sql = match args.get("sql") {
                None => {
                    errs.push("`sql` is required: a statement or a list of statements".into());
                    Vec::new()
                }
                Some(v) if v.unpack_str().is_some() => {
                    vec![v.unpack_str().unwrap_or_default().to_string()]
                }
                Some(_) => args.field("sql", errs, to_string_list).unwrap_or_default(),
            };
            KindDraft::Ready(tern_core::TaskKind::Sql(tern_core::SqlTask {
                conn,
                sql,
                parameters: args
                    .field("parameters", errs, to_parameters)
                    .unwrap_or_default(),
                transaction: args.field("transaction", errs, to_bool).unwrap_or(true),
                output_first_row: args
                    .field("output_first_row", errs, to_bool)
                    .unwrap_or(false),
            }))
        })
    }

    /// A task that streams a query's rows into an object store (CSV, JSON lines, Parquet).
    fn sql_to_lake<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task(
            "sql_to_lake()",
            SQL_TO_LAKE_FIELDS,
            kwargs,
            eval,
            |args, errs| {
                let conn = required_string(args, "conn", "\"warehouse\"", errs);
                let sql = required_string(args, "sql", "\"SELECT * FROM t\"", errs);
                let target_conn = required_string(args, "target_conn", "\"lake\"", errs);
                let target = required_string(args, "target", "\"exports/{{ ds }}/t.csv\"", errs);
                let format = match args.field("format", errs, to_string) {
                    Some(f) => tern_core::ExportFormat::parse(&f).unwrap_or_else(|| {
                        errs.push(format!(
                            "unknown format `{f}`{}",
                            suggest_or_list(&f, tern_core::ExportFormat::NAMES, "use one of")
                        ));
                        tern_core::ExportFormat::Csv
                    }),
                    None => {
                        let ext = target.rsplit('.').next().unwrap_or("");
                        tern_core::ExportFormat::parse(ext).unwrap_or_else(|| {
                        if !target.is_empty() {
                            errs.push(format!(
                                "cannot tell the format from `target` {target:?}: give format = \"csv\", \"jsonl\" or \"parquet\""
                            ));
                        }
                        tern_core::ExportFormat::Csv
                    })
                    }
                };
                let mut csv = tern_core::CsvOptions::default();
                if let Some(h) = args.field("header", errs, to_bool) {
                    csv.header = h;
                }
                if let Some(d) = args.field("delimiter", errs, to_ascii_char) {
                    csv.delimiter = d;
                }
                if let Some(q) = args.field("quote", errs, to_ascii_char) {
                    csv.quote = q;
                }
                if let Some(le) = args.field("line_ending", errs, to_string) {
                    match le.to_ascii_lowercase().as_str() {
                        "lf" | "\n" => csv.crlf = false,
                        "crlf" | "\r\n" => csv.crlf = true,
                        _ => errs.push(format!(
                            "`line_ending` must be \"lf\" or \"crlf\", got {le:?}"
                        )),
                    }
                }
                if let Some(n) = args.field("null_text", errs, to_string) {
                    csv.null_text = n;
                }
                if csv.delimiter == csv.quote {
                    errs.push("`delimiter` and `quote` must differ".into());
                }
                let compression = match args.field("compression", errs, to_string) {
                    None => tern_core::ParquetCompression::default(),
                    Some(_) if format != tern_core::ExportFormat::Parquet => {
                        errs.push("`compression` applies to format \"parquet\" only".into());
                        tern_core::ParquetCompression::default()
                    }
                    Some(c) => tern_core::ParquetCompression::parse(&c).unwrap_or_else(|| {
                        errs.push(format!(
                            "unknown compression `{c}`{}",
                            suggest_or_list(&c, tern_core::ParquetCompression::NAMES, "use one of")
                        ));
                        tern_core::ParquetCompression::default()
                    }),
                };
                KindDraft::Ready(tern_core::TaskKind::SqlToLake(tern_core::SqlToLakeTask {
                    conn,
                    sql,
                    parameters: args
                        .field("parameters", errs, to_parameters)
                        .unwrap_or_default(),
                    target_conn,
                    target,
                    format,
                    csv,
                    compression,
                }))
            },
        )
    }

    /// A task that calls an HTTP endpoint.
    fn http<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task("http()", HTTP_FIELDS, kwargs, eval, |args, errs| {
            let url = required_string(args, "url", "\"https://api.example.com/v1/ping\"", errs);
            let method = http_method(args, errs);
            let expected_status = args
                .field("expected_status", errs, to_status_list)
                .unwrap_or_default();
            let save_to_conn = args.field("save_to_conn", errs, to_string);
            let save_to = args.field("save_to", errs, to_string);
            if save_to_conn.is_some() != save_to.is_some() {
                errs.push(
                    "give both `save_to_conn` (an object-store connection) and `save_to` (the object path), or neither"
                        .into(),
                );
            }
            KindDraft::Ready(tern_core::TaskKind::Http(tern_core::HttpTask {
                method,
                url,
                conn: args.field("conn", errs, to_string),
                headers: args.field("headers", errs, to_env).unwrap_or_default(),
                body: args.field("body", errs, to_string),
                expected_status,
                max_body_bytes: args
                    .field("max_body_bytes", errs, |f, v| to_u32_min(f, v, 0))
                    .map(u64::from)
                    .unwrap_or(64 * 1024),
                save_to_conn,
                save_to,
            }))
        })
    }

    /// A task that does nothing and succeeds: a join point or placeholder.
    fn empty<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task("empty()", &[], kwargs, eval, |_, _| KindDraft::Empty)
    }

    /// Done by the scheduler; skips its direct downstream tasks in every run but the latest
    /// scheduled one (and manual runs).
    fn latest_only<'v>(
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<TaskRef> {
        declare_task("latest_only()", &[], kwargs, eval, |_, _| {
            KindDraft::LatestOnly
        })
    }
}

fn shell_kind(args: &Kwargs, errs: &mut Vec<String>) -> KindDraft {
    let cmd = match args.field("cmd", errs, to_string) {
        Some(c) => c,
        None => {
            if args.get("cmd").is_none() {
                errs.push("`cmd` is required: shell(id = ..., cmd = \"echo hi\")".into());
            }
            String::new()
        }
    };
    KindDraft::Shell {
        cmd,
        env: args.field("env", errs, to_env).unwrap_or_default(),
        cwd: args.field("cwd", errs, to_string),
        sandbox: args.field("sandbox", errs, to_sandbox).flatten(),
    }
}

fn python_kind(args: &Kwargs, errs: &mut Vec<String>) -> KindDraft {
    let code = args.field("code", errs, to_string);
    let script = args.field("script", errs, to_string);
    match (args.get("code"), args.get("script")) {
        (Some(_), Some(_)) => errs.push("give either `code` or `script`, not both".into()),
        (None, None) => errs.push(
            "needs `code` (inline Python) or `script` (a .py file path relative to the DAG file)"
                .into(),
        ),
        _ => {}
    }
    let requirements = args
        .field("requirements", errs, |f, v| {
            let reqs = to_string_list(f, v)?;
            reqs.iter()
                .try_for_each(|r| crate::requirements::check(r))?;
            Ok(reqs)
        })
        .unwrap_or_default();
    let python_version = args.field("python_version", errs, |f, v| {
        let s = to_string(f, v)?;
        crate::requirements::check_python_version(&s)?;
        Ok(s)
    });
    KindDraft::Python {
        code,
        script,
        args: args.field("args", errs, to_text_list).unwrap_or_default(),
        env: args.field("env", errs, to_env).unwrap_or_default(),
        cwd: args.field("cwd", errs, to_string),
        sandbox: args.field("sandbox", errs, to_sandbox).flatten(),
        requirements,
        requirements_file: args.field("requirements_file", errs, to_string),
        python_version,
    }
}

/// A branch or short circuit: a shell task with `cmd`, a python task with `code` or `script`.
fn decider_kind(args: &Kwargs, errs: &mut Vec<String>) -> KindDraft {
    let python = args.get("code").is_some() || args.get("script").is_some();
    match (args.get("cmd").is_some(), python) {
        (true, true) => {
            errs.push("give `cmd` (a shell command) or `code`/`script` (Python), not both".into());
            shell_kind(args, errs)
        }
        (true, false) => {
            if args.get("args").is_some() {
                errs.push("`args` applies to Python (`code` or `script`), not to `cmd`".into());
            }
            shell_kind(args, errs)
        }
        (false, true) => python_kind(args, errs),
        (false, false) => {
            errs.push(
                "needs `cmd` (a shell command) or `code`/`script` (Python) that writes its decision to $TERN_OUTPUT"
                    .into(),
            );
            shell_kind_unchecked()
        }
    }
}

fn shell_kind_unchecked() -> KindDraft {
    KindDraft::Shell {
        cmd: String::new(),
        env: Default::default(),
        cwd: None,
        sandbox: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_and_ids() {
        assert_eq!(
            did_you_mean("retires", COMMON_FIELDS.iter().copied()),
            Some("retries")
        );
        assert_eq!(
            did_you_mean("retry", COMMON_FIELDS.iter().copied()),
            Some("retries")
        );
        assert_eq!(did_you_mean("zzzzzz", COMMON_FIELDS.iter().copied()), None);
        assert_eq!(did_you_mean("foo", COMMON_FIELDS.iter().copied()), None);
        assert!(check_id("etl.daily-v2_x").is_ok());
        assert!(check_id("bad id").is_err());
        assert!(check_id("").is_err());
    }
}
