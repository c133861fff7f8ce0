//! `branch()`, `short_circuit()`, `latest_only()` and `skip_on_exit_code` in DAG files.

use tern_core::{Flow, TaskKind, TriggerRule};

use crate::{errors_of, one_dag, task};

#[test]
fn branches_short_circuits_and_latest_only_declare_their_decisions() {
    let d = one_dag(
        r#"
dag(id = "d")
pick = branch(id = "pick", cmd = "echo follow=full >> $TERN_OUTPUT")
check = short_circuit(id = "check", code = "print(1)", ignore_downstream_trigger_rules = False)
gate = short_circuit(id = "gate", cmd = "echo condition=true >> $TERN_OUTPUT")
latest = latest_only(id = "latest")
full = shell(id = "full", cmd = "true")
join = empty(id = "join", trigger_rule = "all_done_min_one_success")
latest >> pick >> [full, check]
join << [full, check]
"#,
    );
    let pick = task(&d, "pick");
    assert_eq!(pick.flow, Some(Flow::Branch));
    assert!(matches!(pick.kind, TaskKind::Shell { .. }));
    let check = task(&d, "check");
    assert_eq!(
        check.flow,
        Some(Flow::ShortCircuit {
            ignore_downstream_trigger_rules: false
        })
    );
    assert!(matches!(check.kind, TaskKind::Python { .. }));
    assert_eq!(
        task(&d, "gate").flow,
        Some(Flow::ShortCircuit {
            ignore_downstream_trigger_rules: true
        }),
        "Airflow's default skips everything downstream"
    );
    assert_eq!(task(&d, "latest").kind, TaskKind::LatestOnly);
    assert_eq!(task(&d, "full").flow, None);
    assert_eq!(
        task(&d, "join").trigger_rule,
        TriggerRule::AllDoneMinOneSuccess
    );
}

#[test]
fn shell_and_python_skip_on_exit_code_99_unless_told_otherwise() {
    let d = one_dag(
        r#"
dag(id = "d")
shell(id = "default", cmd = "true")
python(id = "py", code = "pass")
shell(id = "listed", cmd = "true", skip_on_exit_code = [3, 4])
shell(id = "one", cmd = "true", skip_on_exit_code = 100)
shell(id = "never", cmd = "true", skip_on_exit_code = None)
sql(id = "q", conn = "db", sql = "select 1")
"#,
    );
    assert_eq!(task(&d, "default").skip_on_exit_code, vec![99]);
    assert_eq!(task(&d, "py").skip_on_exit_code, vec![99]);
    assert_eq!(task(&d, "listed").skip_on_exit_code, vec![3, 4]);
    assert_eq!(task(&d, "one").skip_on_exit_code, vec![100]);
    assert!(task(&d, "never").skip_on_exit_code.is_empty());
    assert!(task(&d, "q").skip_on_exit_code.is_empty());
}

#[test]
fn bad_decider_fields_are_errors_with_their_line() {
    let errs = errors_of(
        r#"dag(id = "d")
branch(id = "a")
branch(id = "b", cmd = "x", code = "y")
short_circuit(id = "c", cmd = "x", ignore_downstream_trigger_rules = "no")
shell(id = "e", cmd = "x", skip_on_exit_code = [0])
shell(id = "f", cmd = "x", skip_on_exit_code = "99")
sql(id = "g", conn = "db", sql = "select 1", skip_on_exit_code = 99)
latest_only(id = "h", cmd = "x")
"#,
    );
    let want = [
        "d.star:2: task `a`: needs `cmd` (a shell command) or `code`/`script` (Python)",
        "d.star:3: task `b`: give `cmd` (a shell command) or `code`/`script` (Python), not both",
        "d.star:4: task `c`: `ignore_downstream_trigger_rules` must be",
        "d.star:5: task `e`: `skip_on_exit_code`: 0 is not an exit code",
        "d.star:6: task `f`: `skip_on_exit_code` must be an exit code or a list of them",
        "d.star:7: task `g`: unknown field `skip_on_exit_code` for sql()",
        "d.star:8: task `h`: unknown field `cmd` for latest_only()",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
}

#[test]
fn setup_and_teardown_tasks_are_declared_by_flag_or_as_teardown() {
    let d = one_dag(
        r#"
dag(id = "d", default_args = {"trigger_rule": "all_done"})
create = shell(id = "create", cmd = "true", setup = True)
bucket = shell(id = "bucket", cmd = "true")
work = shell(id = "work", cmd = "true")
delete = shell(id = "delete", cmd = "true").as_teardown(setups = [create, bucket], on_failure_fail_dagrun = True)
drop = shell(id = "drop", cmd = "true", teardown = True)
create >> work >> delete
bucket >> work
work >> drop
"#,
    );
    assert!(
        task(&d, "create").setup && task(&d, "bucket").setup,
        "as_teardown marks its setups"
    );
    let delete = task(&d, "delete");
    assert!(delete.teardown && delete.on_failure_fail_dagrun);
    assert_eq!(delete.trigger_rule, TriggerRule::AllDoneSetupSuccess);
    let mut ups = delete.upstream.clone();
    ups.sort();
    assert_eq!(ups, ["bucket", "create", "work"]);
    let drop = task(&d, "drop");
    assert!(drop.teardown && !drop.on_failure_fail_dagrun);
    assert_eq!(
        drop.trigger_rule,
        TriggerRule::AllDoneSetupSuccess,
        "default_args' rule does not reach a teardown"
    );
    assert_eq!(task(&d, "work").trigger_rule, TriggerRule::AllDone);
    let errs = errors_of(
        r#"
dag(id = "d")
shell(id = "a", cmd = "true", setup = True, teardown = True)
shell(id = "b", cmd = "true", teardown = True, trigger_rule = "all_success")
shell(id = "c", cmd = "true", on_failure_fail_dagrun = True)
shell(id = "e", cmd = "true", trigger_rule = "one_failed").as_teardown()
"#,
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("d.star:3: task `a`: a task cannot be both `setup` and `teardown`"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with(
            "d.star:4: task `b`: a teardown's trigger rule is always all_done_setup_success"
        ),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("d.star:5: task `c`: `on_failure_fail_dagrun` is for teardown tasks"),
        "{errs:#?}"
    );
    assert!(
        errs[3].contains("task `e`: a teardown's trigger rule is always all_done_setup_success"),
        "{errs:#?}"
    );
}
