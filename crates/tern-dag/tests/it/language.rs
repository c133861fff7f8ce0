//! The DAG-file language on small generated folders: dependencies, DAG membership, defaults,
//! load(), hermeticity and error reporting details.

use tern_core::TaskKind;

use crate::{error_lines, errors_of, folder, ids, one_dag, task, ups};

#[test]
fn shift_operators_chain_and_fan() {
    let d = one_dag(
        r#"
dag(id = "d")
a = empty(id = "a")
b = empty(id = "b")
c = empty(id = "c")
x = empty(id = "x")
y = empty(id = "y")
r = a >> [b, c]
y << [b, c]
x << a
b.set_downstream(x)
t = (a >> b)
"#,
    );
    assert_eq!(ids(&d), ["a", "b", "c", "x", "y"]);
    assert_eq!(ups(&d, "b"), ["a"]);
    assert_eq!(ups(&d, "c"), ["a"]);
    assert_eq!(ups(&d, "x"), ["a", "b"]);
    assert_eq!(ups(&d, "y"), ["b", "c"]);
}

#[test]
fn shift_evaluates_to_the_right_operand_and_tasks_have_attributes() {
    let d = one_dag(
        r#"
def assert_eq(a, b):
    if a != b:
        fail("%s != %s" % (a, b))
dag(id = "d")
a = empty(id = "a")
b = empty(id = "b")
both = a >> [b]
assert_eq(type(a), "task")
assert_eq((a >> b).task_id, "b")
assert_eq((b << a).task_id, "a")
assert_eq(a.dag_id, "d")
assert_eq(str(a), "<task d.a>")
assert_eq(a == a, True)
assert_eq(a == b, False)
empty(id = a.task_id + "_done", upstream = [a])
"#,
    );
    assert_eq!(ids(&d), ["a", "b", "a_done"]);
}

#[test]
fn topological_order_keeps_declaration_order_among_ready_tasks() {
    let d = one_dag(
        r#"
dag(id = "d")
z = empty(id = "z")
y = empty(id = "y")
x = empty(id = "x")
w = empty(id = "w")
w >> z
x >> y
"#,
    );
    // x and w are ready first; x (declared earlier) runs first, which readies y, declared
    // before w; then w, then z.
    assert_eq!(ids(&d), ["x", "y", "w", "z"]);
}

#[test]
fn upstream_by_id_may_name_a_task_declared_later() {
    let d = one_dag(
        r#"
dag(id = "d")
empty(id = "b", upstream = ["a", "a"])
empty(id = "a")
"#,
    );
    assert_eq!(ids(&d), ["a", "b"]);
    assert_eq!(ups(&d, "b"), ["a"], "duplicates collapse");
}

#[test]
fn explicit_dag_argument_and_latest_dag_rule() {
    let dir = folder(&[(
        "d.star",
        r#"
one = dag(id = "one")
two = dag(id = "two")
empty(id = "t2")
empty(id = "t1", dag = one)
def add(d):
    return empty(id = "made", dag = d)
add(one)
"#,
    )]);
    let r = tern_dag::load_folder(dir.path());
    assert!(r.errors.is_empty(), "{:?}", error_lines(&r));
    assert_eq!(ids(&r.dags[0]), ["t1", "made"]);
    assert_eq!(ids(&r.dags[1]), ["t2"]);
}

#[test]
fn tasks_of_different_dags_cannot_be_linked() {
    let errs = errors_of(
        r#"
one = dag(id = "one")
a = empty(id = "a")
two = dag(id = "two")
b = empty(id = "b")
a >> b
"#,
    );
    assert_eq!(
        errs,
        ["d.star:6: cannot link <task one.a> and <task two.b>: tasks of different DAGs cannot depend on each other"]
    );
    let errs = errors_of(
        r#"
dag(id = "one")
a = empty(id = "a")
dag(id = "two")
b = empty(id = "b", upstream = [a])
"#,
    );
    assert_eq!(
        errs,
        ["d.star:5: task `b`: upstream <task one.a> belongs to another DAG; tasks can only depend on tasks of their own DAG"]
    );
}

#[test]
fn self_dependency_is_a_cycle() {
    let errs = errors_of("dag(id = \"d\")\na = empty(id = \"a\")\na >> a\n");
    assert_eq!(errs, ["d.star:2: dag `d` has a cycle: a -> a"]);
}

#[test]
fn a_cycle_is_named_even_behind_other_tasks() {
    let errs = errors_of(
        r#"
dag(id = "d")
s = empty(id = "s")
p = empty(id = "p")
q = empty(id = "q")
s >> p >> q >> p
"#,
    );
    assert_eq!(errs, ["d.star:4: dag `d` has a cycle: p -> q -> p"]);
}

#[test]
fn a_dag_with_no_tasks_is_allowed() {
    let d = one_dag("dag(id = \"empty_dag\")\n");
    assert!(d.tasks.is_empty());
}

#[test]
fn one_bad_dag_does_not_hide_a_good_dag_in_the_same_file() {
    let dir = folder(&[(
        "d.star",
        r#"
dag(id = "bad", schedule = "not a cron")
empty(id = "a")
dag(id = "fine")
empty(id = "b")
"#,
    )]);
    let r = tern_dag::load_folder(dir.path());
    assert_eq!(r.dags.len(), 1);
    assert_eq!(r.dags[0].dag_id, "fine");
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].line, 2);
}

#[test]
fn a_failed_evaluation_loads_nothing_from_the_file_but_other_files_load() {
    let dir = folder(&[
        ("a_good.star", "dag(id = \"good\")\nempty(id = \"t\")\n"),
        (
            "b_bad.star",
            "dag(id = \"fine\")\nempty(id = \"t\")\nfail(\"stop here\")\n",
        ),
        ("c_good.star", "dag(id = \"good2\")\n"),
    ]);
    let r = tern_dag::load_folder(dir.path());
    let ids: Vec<&str> = r.dags.iter().map(|d| d.dag_id.as_str()).collect();
    assert_eq!(ids, ["good", "good2"]);
    assert_eq!(error_lines(&r), ["b_bad.star:3: fail: stop here"]);
}

#[test]
fn default_args_fill_only_unset_fields() {
    let d = one_dag(
        r#"
dag(id = "d", default_args = {
    "retries": 3, "retry_delay": 10, "retry_exponential_backoff": True,
    "max_retry_delay": "1h", "execution_timeout": "250ms", "queue": "gpu",
    "pool": "p", "priority_weight": 7, "trigger_rule": "one_success",
})
empty(id = "a")
empty(id = "b", retries = 0, queue = "cpu", trigger_rule = "all_success", retry_delay = 1.5)
empty(id = "c", retries = None)
"#,
    );
    let a = task(&d, "a");
    assert_eq!(a.retries, 3);
    assert_eq!(a.retry_delay_ms, 10_000);
    assert!(a.retry_exponential_backoff);
    assert_eq!(a.max_retry_delay_ms, Some(3_600_000));
    assert_eq!(a.execution_timeout_ms, Some(250));
    assert_eq!(
        (a.queue.as_str(), a.pool.as_str(), a.priority_weight),
        ("gpu", "p", 7)
    );
    assert_eq!(a.trigger_rule, tern_core::TriggerRule::OneSuccess);
    let b = task(&d, "b");
    assert_eq!(b.retries, 0);
    assert_eq!(b.queue, "cpu");
    assert_eq!(b.retry_delay_ms, 1_500);
    assert_eq!(b.trigger_rule, tern_core::TriggerRule::AllSuccess);
    assert_eq!(task(&d, "c").retries, 3, "None means not set");
}

#[test]
fn params_forms() {
    let d = one_dag(
        r#"
dag(id = "d", params = {
    "plain": "x",
    "none": None,
    "obj": {"a": 1},
    "list": [1, 2],
    "flag": {"default": False, "description": "a flag"},
    "any": {"default": None, "type": "string"},
})
"#,
    );
    let p = &d.params;
    assert_eq!(p["plain"].r#type.as_deref(), Some("string"));
    assert_eq!(p["none"].r#type, None);
    assert_eq!(p["obj"].r#type.as_deref(), Some("object"));
    assert_eq!(p["obj"].default, serde_json::json!({"a": 1}));
    assert_eq!(p["list"].r#type.as_deref(), Some("array"));
    assert_eq!(p["flag"].r#type.as_deref(), Some("boolean"));
    assert_eq!(p["flag"].description.as_deref(), Some("a flag"));
    assert_eq!(p["any"].r#type.as_deref(), Some("string"));
}

#[test]
fn dates_are_local_to_the_dag_timezone() {
    let d = one_dag(
        r#"
dag(id = "d", timezone = "America/New_York", start_date = "2026-07-01T08:30",
    end_date = "2026-12-31T00:00:00Z")
"#,
    );
    assert_eq!(
        d.start_date.unwrap().to_rfc3339(),
        "2026-07-01T12:30:00+00:00"
    );
    assert_eq!(
        d.end_date.unwrap().to_rfc3339(),
        "2026-12-31T00:00:00+00:00"
    );
    let errs =
        errors_of("dag(id = \"d\", start_date = \"2026-02-01\", end_date = \"2026-01-01\")\n");
    assert_eq!(
        errs,
        ["d.star:1: dag `d`: `end_date` is before `start_date`"]
    );
}

#[test]
fn a_file_may_report_many_problems_at_once() {
    let errs = errors_of(
        r#"
dag(id = "d", schedule = "bad", timezone = "Mars/Base")
a = empty(id = "a", retries = -2, trigger_rule = "nope")
b = shell(id = "b")
c = empty(id = "c", upstream = ["x", "y"])
"#,
    );
    assert_eq!(errs.len(), 7, "{errs:#?}");
    assert!(errs[0].starts_with("d.star:2: dag `d`: invalid schedule \"bad\""));
    assert!(errs[1].starts_with("d.star:2: dag `d`: unknown time zone \"Mars/Base\""));
    assert!(errs[2]
        .starts_with("d.star:3: task `a`: unknown trigger rule `nope`; use one of: all_success,"));
    assert_eq!(
        errs[3],
        "d.star:3: task `a`: `retries` must be at least 0, got -2"
    );
    assert_eq!(
        errs[4],
        "d.star:4: task `b`: `cmd` is required: shell(id = ..., cmd = \"echo hi\")"
    );
    assert_eq!(
        errs[5],
        "d.star:5: task `c`: unknown upstream task `x` in dag `d`"
    );
    assert_eq!(
        errs[6],
        "d.star:5: task `c`: unknown upstream task `y` in dag `d`"
    );
}

#[test]
fn wrong_types_and_missing_ids_are_clear() {
    assert_eq!(
        errors_of("dag(schedule = \"@daily\")\n"),
        ["d.star:1: dag() needs an `id`, e.g. dag(id = \"etl\", ...)"]
    );
    assert_eq!(
        errors_of("dag(id = \"d\")\nshell(cmd = \"x\")\n"),
        ["d.star:2: shell() needs an `id`, e.g. shell(id = \"extract\", ...)"]
    );
    assert_eq!(
        errors_of("dag(id = \"d\")\nempty(id = \"a\", retries = \"3\", queue = 1, upstream = 5)\n"),
        [
            "d.star:2: task `a`: `retries` must be an int, got string",
            "d.star:2: task `a`: `queue` must be a string, got int",
            "d.star:2: task `a`: `upstream` must be a list of tasks, groups or task ids, got int",
        ]
    );
    assert_eq!(
        errors_of("dag(id = \"d\")\nempty(\"a\")\n"),
        errors_of("dag(id = \"d\")\nempty(\"a\")\n"),
        "positional arguments are refused by Starlark itself, deterministically"
    );
    assert_eq!(errors_of("dag(id = \"d\")\nempty(\"a\")\n").len(), 1);
}

#[test]
fn load_resolves_relative_to_the_loading_file_and_caches() {
    let dir = folder(&[
        ("team/a.star", "load(\"lib/x.star\", \"mk\")\ndag(id = \"a\")\nmk(\"t\")\n"),
        ("team/b.star", "load(\"//team/lib/x.star\", \"mk\")\ndag(id = \"b\")\nmk(\"u\")\n"),
        ("team/lib/x.star", "load(\"../../_common/y.star\", \"CMD\")\ndef mk(id):\n    return shell(id = id, cmd = CMD)\n"),
        ("_common/y.star", "CMD = \"echo shared\"\n"),
    ]);
    let r = tern_dag::load_folder(dir.path());
    assert!(r.errors.is_empty(), "{:?}", error_lines(&r));
    assert_eq!(r.dags.len(), 2);
    let TaskKind::Shell { cmd, .. } = &r.dags[1].tasks[0].kind else {
        panic!()
    };
    assert_eq!(cmd, "echo shared");
}

#[test]
fn load_errors_name_the_problem() {
    let dir = folder(&[
        ("a.star", "load(\"b.star\", \"x\")\n"),
        ("b.star", "load(\"a.star\", \"y\")\nx = 1\n"),
        ("c.star", "load(\"/etc/passwd.star\", \"x\")\n"),
        ("d.star", "load(\"notes.txt\", \"x\")\n"),
        ("e.star", "load(\"_h.star\", \"nope\")\n"),
        ("_h.star", "yes = 1\n"),
    ]);
    let r = tern_dag::load_folder(dir.path());
    let errs = error_lines(&r);
    assert_eq!(errs[0], "b.star:1: load(\"a.star\"): load cycle: a.star -> b.star -> a.star (in a file loaded by a.star)");
    assert_eq!(errs[1], "a.star:1: load(\"b.star\"): load cycle: b.star -> a.star -> b.star (in a file loaded by b.star)");
    assert_eq!(errs[2], "c.star:1: load(\"/etc/passwd.star\"): the path is not relative; write it relative to the file's folder, or start it with `//` for the DAG folder");
    assert_eq!(
        errs[3],
        "d.star:1: load(\"notes.txt\"): only `.star` files can be loaded"
    );
    assert!(
        errs[4].starts_with("e.star:1: Module has no symbol `nope`"),
        "{}",
        errs[4]
    );
    assert_eq!(errs.len(), 5);
}

#[test]
fn dags_declared_in_a_loaded_file_belong_to_that_file_only() {
    let dir = folder(&[
        (
            "lib.star",
            "dag(id = \"lib_dag\")\nempty(id = \"x\")\nV = 1\n",
        ),
        (
            "main.star",
            "load(\"lib.star\", \"V\")\ndag(id = \"main\")\nempty(id = \"y\")\n",
        ),
    ]);
    let r = tern_dag::load_folder(dir.path());
    assert!(r.errors.is_empty(), "{:?}", error_lines(&r));
    let ids: Vec<&str> = r.dags.iter().map(|d| d.dag_id.as_str()).collect();
    assert_eq!(ids, ["lib_dag", "main"]);
    assert_eq!(r.dags[1].tasks.len(), 1);
}

#[test]
fn evaluation_is_hermetic() {
    for src in [
        "open(\"/etc/passwd\")\n",
        "x = time.now()\n",
        "x = getenv(\"HOME\")\n",
        "x = read_file(\"d.star\")\n",
    ] {
        let errs = errors_of(src);
        assert_eq!(errs.len(), 1, "{src}: {errs:?}");
        assert!(errs[0].contains("not found"), "{src}: {errs:?}");
    }
    // print() exists but its output goes nowhere.
    let d = one_dag("print(\"hello\")\ndag(id = \"d\")\n");
    assert_eq!(d.dag_id, "d");
}

#[test]
fn standard_helpers_are_available() {
    let d = one_dag(
        r#"
cfg = json.decode('{"n": 2}')
s = struct(name = "x")
dag(id = "d_" + s.name)
names = [f"t{i}" for i in range(cfg["n"])]
tasks = list(map(lambda n: empty(id = n), names))
tasks[0] >> tasks[1]
"#,
    );
    assert_eq!(d.dag_id, "d_x");
    assert_eq!(ids(&d), ["t0", "t1"]);
}

#[test]
fn scripts_are_confined_to_the_dag_folder() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.py"), "secret").unwrap();
    let dags = outer.path().join("dags");
    std::fs::create_dir(&dags).unwrap();
    std::fs::write(
        dags.join("d.star"),
        "dag(id = \"d\")\npython(id = \"a\", script = \"link.py\")\n",
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outer.path().join("secret.py"), dags.join("link.py")).unwrap();
    let r = tern_dag::load_folder(&dags);
    if cfg!(unix) {
        assert_eq!(
            error_lines(&r),
            ["d.star:2: task `a`: script `link.py` resolves outside the DAG folder"]
        );
        assert!(r.dags.is_empty());
    }
}

#[test]
fn import_error_display_and_json() {
    let e = tern_dag::ImportError {
        file: "a/b.star".into(),
        line: 3,
        message: "boom".into(),
    };
    assert_eq!(e.to_string(), "a/b.star:3: boom");
    let back: tern_dag::ImportError =
        serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}

#[test]
fn missing_folder_is_an_error_not_a_panic() {
    let r = tern_dag::load_folder(std::path::Path::new("/nonexistent/tern/dags"));
    assert!(r.dags.is_empty());
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].message.starts_with("cannot read folder"));
}

#[test]
fn f_strings_escape_template_braces_by_doubling() {
    let d = one_dag(
        "dag(id = \"d\")\ni = 3\nshell(id = \"a\", cmd = f\"echo {{{{ ds }}}} part {i}\")\n",
    );
    let TaskKind::Shell { cmd, .. } = &d.tasks[0].kind else {
        panic!()
    };
    assert_eq!(cmd, "echo {{ ds }} part 3");
}

#[test]
fn dagrun_timeout_and_max_consecutive_failed_dag_runs_are_read_and_checked() {
    let d = one_dag(
        "dag(id = \"d\", dagrun_timeout = \"1h30m\", max_consecutive_failed_dag_runs = 3)\nempty(id = \"a\")\n",
    );
    assert_eq!(d.dagrun_timeout_ms, Some(5_400_000));
    assert_eq!(d.max_consecutive_failed_dag_runs, 3);
    let d = one_dag("dag(id = \"d\")\nempty(id = \"a\")\n");
    assert_eq!(
        (d.dagrun_timeout_ms, d.max_consecutive_failed_dag_runs),
        (None, 0)
    );
    let errs = errors_of(
        "dag(id = \"d\", dagrun_timeout = \"0s\", max_consecutive_failed_dag_runs = -1)\n",
    );
    assert_eq!(
        errs,
        [
            "d.star:1: dag `d`: `dagrun_timeout` must be more than 0 s (leave it out for none)",
            "d.star:1: dag `d`: `max_consecutive_failed_dag_runs` must be at least 0, got -1",
        ]
    );
}

#[test]
fn depends_on_past_and_wait_for_downstream_are_task_fields_and_default_args() {
    let d = one_dag(
        r#"
dag(id = "d", default_args = {"depends_on_past": True})
empty(id = "a")
empty(id = "b", depends_on_past = False)
empty(id = "c", depends_on_past = False, wait_for_downstream = True)
"#,
    );
    assert!(task(&d, "a").depends_on_past && !task(&d, "a").wait_for_downstream);
    assert!(!task(&d, "b").depends_on_past);
    assert!(
        task(&d, "c").depends_on_past && task(&d, "c").wait_for_downstream,
        "wait_for_downstream implies depends_on_past, as in Airflow"
    );
}

#[test]
fn python_requirements_come_from_the_call_or_a_file_in_the_folder() {
    let dir = folder(&[
        (
            "etl/d.star",
            "dag(id = \"d\")\npython(id = \"a\", code = \"pass\", requirements = [\"six==1.16.0\"], requirements_file = \"reqs/etl.txt\", python_version = \"3.11\")\n",
        ),
        ("etl/reqs/etl.txt", "# pinned\nrequests>=2,<3  # http\n\nattrs==23.2.0\n"),
    ]);
    let r = tern_dag::load_folder(dir.path());
    assert!(r.errors.is_empty(), "{:#?}", error_lines(&r));
    let TaskKind::Python {
        requirements,
        python_version,
        ..
    } = &task(&r.dags[0], "a").kind
    else {
        panic!("a python task")
    };
    assert_eq!(
        requirements,
        &["six==1.16.0", "requests>=2,<3", "attrs==23.2.0"]
    );
    assert_eq!(python_version.as_deref(), Some("3.11"));
    let errs = errors_of(
        r#"dag(id = "d")
python(id = "opt", code = "pass", requirements = ["--index-url=http://evil"])
python(id = "ver", code = "pass", python_version = "three")
python(id = "nofile", code = "pass", requirements_file = "missing.txt")
"#,
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains("task `opt`: requirement \"--index-url=http://evil\" is a pip option"),
        "{errs:#?}"
    );
    assert!(
        errs[1].contains("task `ver`: `python_version` must be major.minor such as \"3.12\""),
        "{errs:#?}"
    );
    assert!(
        errs[2].contains("task `nofile`: requirements_file `missing.txt` not found"),
        "{errs:#?}"
    );
}
