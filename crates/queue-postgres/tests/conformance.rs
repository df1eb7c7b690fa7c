//! The conformance suite on Postgres, a schema per case. The backend is being built (issue
//! 26): the cases listed here pass today; every other case of
//! `queue_testkit::conformance_tests!` joins this list as its part of the contract lands,
//! and the list becomes the one-line macro when all do.

mod support;

use std::sync::Arc;

use queue_core::ManualClock;
use queue_postgres::PostgresBackend;
use queue_testkit::{Harness, suite_config};
use support::TestSchema;

async fn fresh(clock: ManualClock) -> Harness {
    let schema = TestSchema::new();
    let backend = PostgresBackend::builder(schema.config())
        .queue(suite_config("conformance"))
        .migrate(true)
        .clock(Arc::new(clock.clone()))
        .connect()
        .await
        .expect("connect");
    let probe = backend.clone();
    Harness::new(Arc::new(backend), clock)
        .with_blocked(move || probe.blocked_fetches() + probe.subscribers())
        .with_cleanup(async move { drop(schema) })
}

queue_testkit::conformance_tests!(@cases fresh;
    priority_then_fifo,
    a_tick_enqueues_exactly_once,
    cron_schedules_keep_their_time_zone,
    finished_jobs_leave_a_delivery_per_matching_webhook,
    missed_ticks_follow_the_policy,
    parked_deliveries_expire_with_retention,
    schedules_are_managed,
    webhooks_and_schedules_at_their_bound,
    a_group_keeps_its_turn_when_a_cancel_releases_its_parent,
    sizes_at_their_bounds,
    delete_finished_records,
    a_flow_releases_its_parent_once,
    flow_failure_policies,
    cancel_and_retry_inside_a_flow,
    a_batch_takes_members_while_it_waits,
    a_parent_and_its_child_ending_in_one_call,
    retention_keeps_a_waiting_parents_children,
    a_sweep_counts_kept_children_against_its_limit,
    a_flow_at_its_bound_is_created_and_cancelled_whole,
    children_page_past_any_size,
    groups_share_fairly,
    group_concurrency_holds_under_racing_fetches,
    group_slot_comes_back_on_every_ending,
    pause_group_stops_only_that_group,
    groups_list_the_busiest_first,
    weighted_groups_share_in_proportion,
    group_rate_limit_holds_and_wakes,
    a_rate_limited_job_holds_only_its_group,
    holds_are_bounded_and_lifted,
    job_cost_counts_against_rate_limits,
    pause_stops_starts_until_resume,
    pause_keeps_recovered_jobs_queued,
    resume_wakes_a_waiting_fetch,
    rate_limit_holds_over_many_windows,
    a_rate_limited_fetch_wakes_when_the_window_allows,
    a_rate_limited_job_holds_the_queue,
    sweep_keeps_up_and_spares_live_jobs,
    retention_removes_from_every_index,
    bulk_actions_resume_and_act_once,
    subscriber_sees_every_transition,
    a_subscriber_resumes_after_the_last_event_it_saw,
    the_event_log_holds_its_length,
    a_lagging_subscriber_is_told_what_it_missed,
    repeated_cancel_emits_one_event,
    wait_returns_when_the_job_ends,
    bad_input_is_refused,
    unique_key_race_has_one_winner,
    list_by_status_and_unique_key,
    list_pages_through_ties,
    finished_jobs_list_by_when_they_finished,
    delayed_jobs_wait,
    unique_key_refused_while_active,
    enqueue_with_same_id_is_idempotent,
    concurrent_enqueues_each_get_their_own_answer,
    enqueue_many_reports_each_job,
    cancel_queued_job,
    cancel_running_job,
    retry_with_backoff,
    retries_exhausted_fail,
    permanent_error_fails_at_once,
    expired_lease_requeues_in_place,
    expired_holder_cannot_write,
    heartbeat_extends_lease,
    progress_never_goes_backwards,
    partial_outcome_keeps_details,
    release_uses_no_attempt,
    stats_after_mixed_run,
    attempt_history_is_kept,
    manual_retry,
    claims_are_exclusive,
    finish_claims_next,
    finish_many_ends_each_and_claims_next,
    fetch_waits_for_work,
    completed_record_fields,
    claim_sent_twice_takes_nothing_more,
    claim_replay_answers_oldest_first,
    finish_sent_twice_is_answered_once,
    cancel_wins_over_a_late_success,
    heartbeat_reply_names_leases,
    a_snoozed_job_wakes_a_waiting_fetch,
    retry_after_is_capped,
    snooze_uses_no_attempt,
    results_round_trip_and_size_limit,
    a_claim_takes_at_most_its_bound,
    text_is_cut_at_its_bound
);
