//! Trigger rules: whether a task may run given the states of its upstream tasks.
//!
//! The rules and their outcomes follow Apache Airflow's, including its eager evaluation: a task
//! whose rule can no longer be met is settled (skipped or upstream_failed) as soon as that is
//! known, without waiting for the remaining upstream tasks.

use serde::{Deserialize, Serialize};

use crate::state::TaskState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    AllSuccess,
    AllFailed,
    AllDone,
    AllDoneMinOneSuccess,
    AllSkipped,
    OneSuccess,
    OneFailed,
    OneDone,
    NoneFailed,
    NoneFailedMinOneSuccess,
    NoneSkipped,
    Always,
    /// A teardown's rule: once every upstream task is done it runs if one of its upstream
    /// setup tasks succeeded (or it has none); all setups skipped skips it, none succeeded is
    /// an upstream failure.
    AllDoneSetupSuccess,
}

impl TriggerRule {
    pub const NAMES: &'static [&'static str] = &[
        "all_success",
        "all_failed",
        "all_done",
        "all_done_min_one_success",
        "all_skipped",
        "one_success",
        "one_failed",
        "one_done",
        "none_failed",
        "none_failed_min_one_success",
        "none_skipped",
        "always",
        "all_done_setup_success",
    ];

    pub fn parse(name: &str) -> Option<TriggerRule> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    /// The rule's name as DAG files write it (`all_success`).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllFailed => "all_failed",
            TriggerRule::AllDone => "all_done",
            TriggerRule::AllDoneMinOneSuccess => "all_done_min_one_success",
            TriggerRule::AllSkipped => "all_skipped",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::OneDone => "one_done",
            TriggerRule::NoneFailed => "none_failed",
            TriggerRule::NoneFailedMinOneSuccess => "none_failed_min_one_success",
            TriggerRule::NoneSkipped => "none_skipped",
            TriggerRule::Always => "always",
            TriggerRule::AllDoneSetupSuccess => "all_done_setup_success",
        }
    }

    /// Whether the rule keeps a task waiting while any upstream instance is not done, as long
    /// as none failed, had an upstream failure or was skipped (what lets a join's upstream
    /// results skip reading the whole run). False for the rules a success can decide early
    /// (`one_success`, `one_done`, `all_failed`, `all_skipped`) and for `always`.
    pub fn waits_while_an_upstream_runs(self) -> bool {
        !matches!(
            self,
            TriggerRule::AllFailed
                | TriggerRule::AllSkipped
                | TriggerRule::OneSuccess
                | TriggerRule::OneDone
                | TriggerRule::Always
        )
    }
}

impl std::fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of a task's direct upstream instances by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamSummary {
    pub total: usize,
    pub success: usize,
    pub failed: usize,
    pub upstream_failed: usize,
    pub skipped: usize,
    /// Removed upstream tasks count as done and are otherwise ignored.
    pub removed: usize,
    /// Of the upstream tasks, how many are setup tasks, and how many of those succeeded or
    /// were skipped (what `all_done_setup_success` reads).
    pub setups: usize,
    pub setup_success: usize,
    pub setup_skipped: usize,
}

impl UpstreamSummary {
    pub fn from_states(states: impl IntoIterator<Item = TaskState>) -> Self {
        Self::from_upstream(states.into_iter().map(|s| (s, false)))
    }

    /// From each upstream task's state and whether it is a setup task.
    pub fn from_upstream(states: impl IntoIterator<Item = (TaskState, bool)>) -> Self {
        let mut s = UpstreamSummary::default();
        for (st, setup) in states {
            if setup {
                s.setups += 1;
                match st {
                    TaskState::Success => s.setup_success += 1,
                    TaskState::Skipped => s.setup_skipped += 1,
                    _ => {}
                }
            }
            s.total += 1;
            match st {
                TaskState::Success => s.success += 1,
                TaskState::Failed => s.failed += 1,
                TaskState::UpstreamFailed => s.upstream_failed += 1,
                TaskState::Skipped => s.skipped += 1,
                TaskState::Removed => s.removed += 1,
                _ => {}
            }
        }
        s
    }

    fn done(&self) -> usize {
        self.success + self.failed + self.upstream_failed + self.skipped + self.removed
    }

    fn all_done(&self) -> bool {
        self.done() == self.total
    }

    fn any_failed(&self) -> bool {
        self.failed + self.upstream_failed > 0
    }
}

/// What a trigger rule says about a task right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not decided yet: some upstream tasks are still to finish.
    Wait,
    /// The task may run.
    Run,
    /// The task will not run; it is skipped.
    Skip,
    /// The task will not run because upstream tasks failed.
    UpstreamFailed,
}

impl Readiness {
    /// The state a settled task is put into, if the decision settles it without running.
    pub fn settled_state(self) -> Option<TaskState> {
        match self {
            Readiness::Skip => Some(TaskState::Skipped),
            Readiness::UpstreamFailed => Some(TaskState::UpstreamFailed),
            _ => None,
        }
    }
}

/// Decides a task's readiness from its rule and its upstream outcomes.
pub fn evaluate(rule: TriggerRule, up: UpstreamSummary) -> Readiness {
    use Readiness::*;
    if up.total == 0 || rule == TriggerRule::Always {
        return Run;
    }
    let done = up.all_done();
    match rule {
        TriggerRule::AllSuccess => {
            if up.any_failed() {
                UpstreamFailed
            } else if up.skipped > 0 {
                Skip
            } else if done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::AllFailed => {
            if up.success + up.skipped > 0 {
                Skip
            } else if done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::AllDone => {
            if done {
                Run
            } else {
                Wait
            }
        }
        // Airflow 3.1's rule: a skipped upstream task skips it (as with `all_success`); once
        // every upstream task is done it runs if one of them succeeded.
        TriggerRule::AllDoneMinOneSuccess => {
            if up.skipped > 0 {
                Skip
            } else if !done {
                Wait
            } else if up.success > 0 {
                Run
            } else {
                UpstreamFailed
            }
        }
        TriggerRule::AllSkipped => {
            if up.success + up.failed + up.upstream_failed > 0 {
                Skip
            } else if done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::OneSuccess => {
            if up.success > 0 {
                Run
            } else if !done {
                Wait
            } else if up.any_failed() {
                UpstreamFailed
            } else {
                Skip
            }
        }
        TriggerRule::OneFailed => {
            if up.any_failed() {
                Run
            } else if done {
                Skip
            } else {
                Wait
            }
        }
        TriggerRule::OneDone => {
            if up.success + up.failed > 0 {
                Run
            } else if done {
                Skip
            } else {
                Wait
            }
        }
        TriggerRule::NoneFailed => {
            if up.any_failed() {
                UpstreamFailed
            } else if done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::NoneFailedMinOneSuccess => {
            if up.any_failed() {
                UpstreamFailed
            } else if !done {
                Wait
            } else if up.success > 0 {
                Run
            } else {
                Skip
            }
        }
        TriggerRule::NoneSkipped => {
            if up.skipped > 0 {
                Skip
            } else if done {
                Run
            } else {
                Wait
            }
        }
        TriggerRule::Always => Run,
        TriggerRule::AllDoneSetupSuccess => {
            if !done {
                Wait
            } else if up.setups > 0 && up.setup_skipped >= up.setups {
                Skip
            } else if up.setups > 0 && up.setup_success == 0 {
                UpstreamFailed
            } else {
                Run
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `waits_while_an_upstream_runs` against `evaluate`, for every summary of up to four
    /// upstream instances with none failed, upstream-failed or skipped and one not done: such
    /// a rule says Wait for each; every other rule decides one of them otherwise.
    #[test]
    fn the_rules_that_wait_while_an_upstream_runs_wait_for_every_such_summary() {
        let rules: Vec<TriggerRule> = TriggerRule::NAMES
            .iter()
            .map(|n| TriggerRule::parse(n).unwrap())
            .collect();
        let mut summaries = Vec::new();
        for total in 1..=4usize {
            for success in 0..total {
                for removed in 0..total - success {
                    for setups in 0..=total {
                        for setup_success in 0..=setups.min(success) {
                            summaries.push(UpstreamSummary {
                                total,
                                success,
                                removed,
                                setups,
                                setup_success,
                                ..UpstreamSummary::default()
                            });
                        }
                    }
                }
            }
        }
        for rule in rules {
            let all_wait = summaries
                .iter()
                .all(|s| evaluate(rule, *s) == Readiness::Wait);
            assert_eq!(
                all_wait,
                rule.waits_while_an_upstream_runs(),
                "{rule}: every summary with an upstream not done (and none failed or skipped) \
                 waits: {all_wait}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for name in TriggerRule::NAMES {
            assert_eq!(TriggerRule::parse(name).unwrap().as_str(), *name);
        }
    }
    use TaskState::*;

    /// One row per (rule, upstream states) with the expected decision, Airflow's table.
    #[test]
    fn rule_table() {
        let r = Readiness::Run;
        let w = Readiness::Wait;
        let s = Readiness::Skip;
        let u = Readiness::UpstreamFailed;
        let rows: &[(&str, &[TaskState], Readiness)] = &[
            ("all_success", &[Success, Success], r),
            ("all_success", &[Success, Running], w),
            ("all_success", &[Failed, Running], u),
            ("all_success", &[UpstreamFailed, Success], u),
            ("all_success", &[Skipped, Success], s),
            ("all_failed", &[Failed, UpstreamFailed], r),
            ("all_failed", &[Failed, Running], w),
            ("all_failed", &[Failed, Success], s),
            ("all_done", &[Failed, Success, Skipped], r),
            ("all_done", &[Failed, Queued], w),
            ("all_skipped", &[Skipped, Skipped], r),
            ("all_skipped", &[Skipped, Success], s),
            ("all_skipped", &[Skipped, Running], w),
            ("one_success", &[Success, Running], r),
            ("one_success", &[Failed, Running], w),
            ("one_success", &[Failed, Skipped], u),
            ("one_success", &[Skipped, Skipped], s),
            ("one_failed", &[Failed, Running], r),
            ("one_failed", &[Success, Running], w),
            ("one_failed", &[Success, Skipped], s),
            ("one_done", &[Failed, Running], r),
            ("one_done", &[Success, Running], r),
            ("one_done", &[Skipped, Running], w),
            ("one_done", &[Skipped, Skipped], s),
            ("none_failed", &[Success, Skipped], r),
            ("none_failed", &[Success, Running], w),
            ("none_failed", &[UpstreamFailed, Running], u),
            ("none_failed_min_one_success", &[Success, Skipped], r),
            ("none_failed_min_one_success", &[Skipped, Skipped], s),
            ("none_failed_min_one_success", &[Failed, Success], u),
            ("none_failed_min_one_success", &[Success, Running], w),
            ("none_skipped", &[Success, Failed], r),
            ("none_skipped", &[Skipped, Running], s),
            ("none_skipped", &[Success, Running], w),
            ("all_done_min_one_success", &[Success, Failed], r),
            (
                "all_done_min_one_success",
                &[Success, UpstreamFailed, Failed],
                r,
            ),
            ("all_done_min_one_success", &[Success, Running], w),
            ("all_done_min_one_success", &[Failed, Failed], u),
            ("all_done_min_one_success", &[Skipped, Running], s),
            ("all_done_min_one_success", &[Success, Skipped], s),
            ("always", &[Running, Queued], r),
            ("all_success", &[], r),
            ("all_success", &[Removed, Success], r),
        ];
        // A teardown after two work tasks (one failed) and setups: Airflow's table.
        let teardown = |states: &[(TaskState, bool)]| {
            evaluate(
                TriggerRule::AllDoneSetupSuccess,
                UpstreamSummary::from_upstream(states.iter().copied()),
            )
        };
        assert_eq!(
            teardown(&[(Success, true), (Failed, false)]),
            r,
            "runs though work failed"
        );
        assert_eq!(teardown(&[(Success, true), (Running, false)]), w);
        assert_eq!(teardown(&[(Skipped, true), (Skipped, false)]), s);
        assert_eq!(teardown(&[(Failed, true), (UpstreamFailed, false)]), u);
        assert_eq!(
            teardown(&[(Failed, true), (Success, true), (UpstreamFailed, false)]),
            r
        );
        assert_eq!(
            teardown(&[(Skipped, true), (Failed, true), (Failed, false)]),
            u
        );
        assert_eq!(
            teardown(&[(Failed, false), (Success, false)]),
            r,
            "no setups: all done"
        );
        for (rule, states, expect) in rows {
            let rule = TriggerRule::parse(rule).unwrap();
            let got = evaluate(rule, UpstreamSummary::from_states(states.iter().copied()));
            assert_eq!(got, *expect, "{rule:?} with {states:?}");
        }
    }

    #[test]
    fn every_documented_name_parses() {
        for name in TriggerRule::NAMES {
            assert!(TriggerRule::parse(name).is_some(), "{name}");
        }
        assert!(TriggerRule::parse("all_sucess").is_none());
    }
}
