//! The backend conformance suite: one async function per behaviour, written once against
//! the `JobStore` and `Broker` traits, expanded into every backend's tests by
//! [`conformance_tests!`] (one `#[tokio::test]` per case, a fresh namespace per case).
//!
//! A backend's test file is one line plus a factory:
//!
//! ```no_run
//! use queue_core::ManualClock;
//! use queue_testkit::Harness;
//!
//! async fn fresh(clock: ManualClock) -> Harness {
//!     // Your backend, built with `suite_config(..)` and `clock`, on a namespace of its own.
//!     unimplemented!("connect the backend under test")
//! }
//! queue_testkit::conformance_tests!(fresh);
//! # fn main() {}
//! ```
//!
//! The factory builds the backend with [`suite_config`] and the given clock, on its own
//! namespace, and returns a [`Harness`] whose cleanup removes the namespace.

pub mod cases;
mod harness;
pub mod model;
pub mod properties;
pub mod receiver;

pub use harness::{ClaimTrace, Harness, suite_config};
pub use model::Model;

/// Stamps the model-checked suite into a backend's tests: one `#[test]` that runs
/// `DCS_MODEL_CASES` (default `$cases`) random runs of up to `$steps` steps against fresh
/// backends from `$factory` and the reference [`Model`].
#[macro_export]
macro_rules! model_tests {
    ($factory:path, $cases:expr, $steps:expr) => {
        #[test]
        fn matches_the_model() {
            $crate::properties::check($factory, $crate::properties::cases($cases), $steps);
        }
    };
}

/// Stamps one `#[tokio::test]` per conformance case, each calling `$factory(clock)` for a
/// fresh backend. Adding a case here adds it to every backend.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@cases $factory;
            priority_then_fifo,
            delayed_jobs_wait,
            unique_key_refused_while_active,
            unique_key_race_has_one_winner,
            a_debounced_burst_runs_once_with_the_last_payload,
            a_throttle_creates_one_job_per_window,
            key_modes_are_checked,
            a_debounced_burst_from_many_tasks_is_one_job,
            a_throttled_burst_from_many_tasks_is_one_job,
            keep_latest_keeps_one_running_and_one_waiting,
            keep_latest_cancel_of_the_waiting_job_gives_the_key_back,
            a_keep_latest_burst_leaves_one_running_and_one_waiting,
            replace_running_stops_the_running_job,
            a_sequence_starts_in_order_retries_included,
            a_cancelled_member_keeps_the_order,
            a_retried_member_joins_the_back,
            sequence_names_are_checked,
            a_concurrent_sequence_runs_in_one_line,
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
            list_by_status_and_unique_key,
            list_pages_through_ties,
            finished_jobs_list_by_when_they_finished,
            bulk_actions_resume_and_act_once,
            delete_finished_records,
            attempt_history_is_kept,
            series_count_what_happened,
            retention_removes_from_every_index,
            manual_retry,
            subscriber_sees_every_transition,
            claims_are_exclusive,
            finish_claims_next,
            finish_many_ends_each_and_claims_next,
            fetch_waits_for_work,
            completed_record_fields,
            bad_input_is_refused,
            claim_sent_twice_takes_nothing_more,
            claim_replay_answers_oldest_first,
            a_dropped_fetch_strands_nothing,
            a_dropped_finish_strands_nothing,
            lost_worker_keeps_a_later_claim,
            finish_sent_twice_is_answered_once,
            cancel_wins_over_a_late_success,
            repeated_cancel_emits_one_event,
            heartbeat_reply_names_leases,
            sweep_keeps_up_and_spares_live_jobs,
            retry_after_is_capped,
            pause_stops_starts_until_resume,
            pause_keeps_recovered_jobs_queued,
            resume_wakes_a_waiting_fetch,
            snooze_uses_no_attempt,
            rate_limit_holds_over_many_windows,
            a_rate_limited_fetch_wakes_when_the_window_allows,
            a_rate_limited_job_holds_the_queue,
            groups_share_fairly,
            a_group_keeps_its_turn_when_a_cancel_releases_its_parent,
            a_group_is_read_only_by_a_name_a_job_could_carry,
            group_concurrency_holds_under_racing_fetches,
            group_slot_comes_back_on_every_ending,
            pause_group_stops_only_that_group,
            groups_list_the_busiest_first,
            weighted_groups_share_in_proportion,
            wait_returns_when_the_job_ends,
            results_round_trip_and_size_limit,
            job_cost_counts_against_rate_limits,
            group_rate_limit_holds_and_wakes,
            a_rate_limited_job_holds_only_its_group,
            a_flow_releases_its_parent_once,
            flow_failure_policies,
            cancel_and_retry_inside_a_flow,
            a_batch_takes_members_while_it_waits,
            a_parent_and_its_child_ending_in_one_call,
            retention_keeps_a_waiting_parents_children,
            a_sweep_counts_kept_children_against_its_limit,
            a_tick_enqueues_exactly_once,
            missed_ticks_follow_the_policy,
            cron_schedules_keep_their_time_zone,
            schedules_are_managed,
            a_subscriber_resumes_after_the_last_event_it_saw,
            finished_jobs_leave_a_delivery_per_matching_webhook,
            a_claim_takes_at_most_its_bound,
            a_flow_at_its_bound_is_created_and_cancelled_whole,
            children_page_past_any_size,
            sizes_at_their_bounds,
            text_is_cut_at_its_bound,
            webhooks_and_schedules_at_their_bound,
            parked_deliveries_expire_with_retention,
            holds_are_bounded_and_lifted,
            the_event_log_holds_its_length,
            a_lagging_subscriber_is_told_what_it_missed,
            a_snoozed_job_wakes_a_waiting_fetch,
            claims_serve_every_partition_in_turn,
            the_rate_limit_is_never_exceeded_across_partitions,
            a_hold_holds_every_partition,
            a_chosen_id_names_one_job_whatever_its_routing,
            a_claim_takes_at_most_its_bound_from_every_partition,
            an_ending_sent_again_answers_the_same_wherever_its_job_lives,
            a_flow_lives_in_one_partition,
            a_partition_key_at_its_bound,
            a_sequenced_job_takes_no_group_when_partitioned
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $factory($crate::__private::ManualClock::new()).await;
                let result = $crate::__private::catch(async { $crate::cases::$case(&harness).await }).await;
                harness.cleanup().await;
                if let Err(panic) = result {
                    ::std::panic::resume_unwind(panic);
                }
            }
        )*
    };
}

#[doc(hidden)]
pub mod __private {
    pub use queue_core::ManualClock;

    /// Runs a case, catching its panic so the namespace is cleaned up before it propagates.
    pub async fn catch<F: std::future::Future<Output = ()>>(
        case: F,
    ) -> Result<(), Box<dyn std::any::Any + Send>> {
        use futures_util::FutureExt;
        std::panic::AssertUnwindSafe(case).catch_unwind().await
    }
}
