//! The store suite: every test runs on SQLite and on PostgreSQL, each on a fresh database.

mod across_runs;
mod browse;
mod flow;
mod live_logs;
mod mapping;
mod model;
mod notifications;
mod sealed;
mod suite;

macro_rules! store_suite {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tern_testkit::TestDb::sqlite();
                    let store = tern_store::Store::open(&db.url).await.expect("open sqlite store");
                    crate::suite::$name(store).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = tern_testkit::TestDb::postgres().await;
                    let store = tern_store::Store::open(&db.url).await.expect("open postgres store");
                    crate::suite::$name(store.clone()).await;
                    store.close().await;
                }
            )+
        }
    };
}

store_suite!(
    migrations_are_idempotent,
    sync_creates_versions_only_when_specs_change,
    import_errors_are_replaced_and_keep_last_good_version,
    chain_advances_on_completion_without_a_tick,
    empty_tasks_are_done_by_the_scheduler,
    a_full_dag_does_not_starve_other_dags,
    a_result_leaves_admission_to_the_admitter_when_the_lock_is_busy,
    failure_propagates_by_trigger_rules,
    a_join_waits_without_reading_its_run_and_is_decided_as_before,
    a_decided_join_is_not_judged_again_at_each_result,
    a_branch_runs_only_the_tasks_it_chose,
    a_teardown_runs_after_failed_work_and_clearing_work_clears_its_setup,
    a_branch_that_chooses_an_unknown_task_fails_its_try,
    a_short_circuit_skips_downstream_by_its_mode,
    an_exit_code_in_skip_on_exit_code_skips_the_task,
    latest_only_skips_all_but_the_latest_scheduled_run,
    skips_propagate_through_every_trigger_rule_as_a_full_reevaluation_says,
    retries_wait_for_their_delay_then_run_again,
    permanent_failure_skips_retries,
    stale_attempt_cannot_change_state,
    expired_lease_marks_attempt_lost,
    an_unacknowledged_remote_claim_goes_back_without_using_a_try,
    a_revoked_agent_is_given_no_work,
    a_queue_timeout_spares_claimed_work_and_earlier_tries,
    housekeeping_ends_runs_whose_tasks_are_all_final,
    task_state_machine_keeps_its_invariants,
    racing_ends_of_the_last_tasks_always_end_the_run,
    results_that_arrive_together_are_each_answered_as_if_alone,
    a_batch_reads_a_repeated_instance_again_and_tells_one_result_its_run_ended,
    results_ending_in_a_final_state_are_written_together_in_one_statement,
    a_result_claims_the_agents_next_task_in_its_transaction,
    a_caller_that_stops_waiting_for_its_result_cancels_nothing,
    a_silent_server_is_failed_over_and_a_live_one_is_not,
    database_sessions_have_time_limits,
    pool_sizes_are_bounded_at_the_edge,
    only_the_holding_agent_reports_and_restart_extends_leases,
    sensor_pokes_keep_their_try_and_free_their_slot,
    sensor_timeout_fails_without_retries_or_skips_with_soft_fail,
    users_tokens_and_the_audit_log,
    concurrent_claimers_never_share_a_task,
    batch_claims_respect_their_limit_and_priority,
    activation_codes_are_single_use_and_expire,
    activation_codes_are_listed_without_their_code_and_can_be_cancelled,
    revoked_agents_are_refused_and_lose_their_attempts,
    concurrent_syncs_of_a_new_dag_make_one_version,
    pools_cap_running_tasks,
    max_active_runs_queues_later_runs,
    duplicate_run_is_a_conflict,
    outputs_are_stored_per_task,
    pause_is_recorded_and_unknown_dag_is_named,
    clear_reruns_tasks_with_their_downstream_and_reopens_the_run,
    clearing_a_running_task_fences_its_attempt,
    marking_tasks_and_runs_by_hand,
    sessions_and_ui_read_models,
    run_ends_and_retries_queue_notifications,
    notification_claims_retry_lapse_and_give_up,
    concurrent_notification_claimers_never_share_a_row,
    marking_by_hand_notifies_only_when_the_run_is_judged_again,
    a_run_past_its_dagrun_timeout_fails_and_its_running_task_is_stopped,
    a_dag_pauses_after_its_last_n_runs_failed,
    depends_on_past_waits_for_the_previous_run_and_wakes_when_it_ends,
    wait_for_downstream_also_waits_for_the_previous_runs_direct_downstream,
    a_mapped_task_expands_over_an_upstream_output_and_its_downstream_sees_the_list,
    clearing_one_instance_reruns_it_and_clearing_the_task_expands_it_again,
    a_list_that_is_not_one_fails_the_task_and_params_expand,
    mapping_sizes_expand_to_the_model_or_skip_or_fail,
    max_active_tis_per_dag_caps_a_mapped_tasks_instances,
    depends_on_past_waits_for_every_instance_of_the_previous_run,
    browsing_filters_runs_and_instances_across_dags,
    the_activity_fingerprint_changes_exactly_when_instances_or_the_audit_log_do,
    resealing_rewrites_every_sealed_value_or_none,
    live_logs_grow_while_tries_run_and_ship_once_they_end,
    queued_work_is_heard_by_listeners_on_postgres,
);
