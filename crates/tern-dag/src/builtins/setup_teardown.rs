//! Setup and teardown tasks, as Airflow's: `setup = True` / `teardown = True` on any task, or
//! `t.as_teardown(setups = s)`, which also links each setup to the teardown. A teardown runs
//! once its upstream tasks are done if one of its setups succeeded (trigger rule
//! `all_done_setup_success`, which it always has), and its failure does not fail the run
//! unless `on_failure_fail_dagrun = True`.

use tern_core::TriggerRule;

/// The problems with a task's setup/teardown fields (none when they fit together).
pub(crate) fn check(
    setup: bool,
    teardown: bool,
    on_failure_fail_dagrun: bool,
    own_rule: Option<TriggerRule>,
) -> Vec<String> {
    let mut errs = Vec::new();
    if setup && teardown {
        errs.push("a task cannot be both `setup` and `teardown`".to_string());
    }
    if on_failure_fail_dagrun && !teardown {
        errs.push("`on_failure_fail_dagrun` is for teardown tasks; add `teardown = True`".into());
    }
    if teardown {
        if let Some(r) = own_rule.filter(|r| *r != TriggerRule::AllDoneSetupSuccess) {
            errs.push(format!(
                "a teardown's trigger rule is always all_done_setup_success (it runs once the work is done if a setup succeeded); remove `trigger_rule = \"{r}\"`"
            ));
        }
    }
    errs
}
