//! The rules over their whole domains.

use super::*;

#[test]
fn settle_over_every_outcome_and_fact() {
    use Event as E;
    use OutcomeKind as K;
    for facts in AttemptFacts::ALL {
        for kind in K::ALL {
            let got = settle(kind, facts);
            let want = match (facts.cancel_requested, kind, facts.retries_left) {
                (true, _, _) => E::Cancel,
                (false, K::Completed, _) => E::Complete,
                (false, K::Partial, _) => E::CompletePartial,
                (false, K::Retry, true) => E::Retry,
                (false, K::Retry, false) | (false, K::Failed, _) => E::Fail,
                (false, K::Cancelled, _) => E::Cancel,
                (false, K::Released, _) => E::Release,
                (false, K::Snoozed | K::RateLimited, _) => E::Snooze,
            };
            assert_eq!(got, want, "{kind} with {facts:?}");
            // Whatever the outcome, a running job accepts what it becomes.
            assert!(apply(JobStatus::Processing, got).is_ok());
        }
    }
}

#[test]
fn an_expired_lease_over_every_fact() {
    let got: Vec<Event> = AttemptFacts::ALL
        .into_iter()
        .map(on_lease_expired)
        .collect();
    assert_eq!(
        got,
        [
            Event::Fail,
            Event::LeaseExpired,
            Event::Cancel,
            Event::Cancel
        ]
    );
    assert_eq!(
        lease_expired_message("w-1", true),
        "lease expired: worker w-1 stopped renewing it"
    );
    assert!(lease_expired_message("w-1", false).ends_with("no retries are left"));
}

#[test]
fn cancel_over_every_status() {
    for status in JobStatus::ALL {
        for requested in [false, true] {
            let want = match status {
                JobStatus::Queued => CancelAction::Cancel,
                JobStatus::Processing if requested => CancelAction::AlreadyRequested,
                JobStatus::Processing => CancelAction::Request,
                _ => CancelAction::Refuse,
            };
            assert_eq!(on_cancel(status, requested), want, "{status} {requested}");
        }
    }
}

#[test]
fn every_way_back_to_queued_leaves_a_clean_attempt() {
    // Redis does not rewrite the record when an attempt starts (the lease lives on
    // its own), so every event that queues a job must already leave what `Start`
    // would write: progress 0, no step, no holder.
    for event in Event::ALL {
        let Ok(to) =
            apply(JobStatus::Processing, event).or_else(|_| apply(JobStatus::Failed, event))
        else {
            continue;
        };
        if to != JobStatus::Queued {
            continue;
        }
        let changes = effect(event);
        for needed in [
            (Field::Progress, Change::Zero),
            (Field::CurrentStep, Change::Clear),
            (Field::WorkerId, Change::Clear),
        ] {
            assert!(changes.contains(&needed), "{event:?} lacks {needed:?}");
        }
        // ...which is what `Start` writes on them.
        for field in PROGRESS_FIELDS {
            let on_start = effect(Event::Start).iter().find(|(f, _)| *f == field);
            let here = changes.iter().find(|(f, _)| *f == field);
            assert_eq!(on_start, here, "{event:?} and start differ on {field:?}");
        }
    }
    // And every end of an attempt clears the holder and the due time.
    for event in Event::ALL {
        if event != Event::Start && apply(JobStatus::Processing, event).is_ok() {
            assert!(effect(event).contains(&(Field::WorkerId, Change::Clear)));
            let due = effect(event).iter().find(|(f, _)| *f == Field::RunAt);
            assert!(due.is_some(), "{event:?} leaves run_at alone");
        }
    }
}

#[test]
fn effects_write_the_record() {
    let mut r: JobRecord = serde_json::from_value(serde_json::json!({
        "job_id": crate::JobId::new(), "task": "t", "payload": null, "unique_key": null,
        "status": "queued", "priority": "normal", "progress": 0, "current_step": null,
        "error_message": "old", "retry_count": 1, "max_retries": 3, "timeout_ms": null,
        "created_at": "2026-01-01T00:00:00Z", "started_at": null, "completed_at": null,
        "run_at": "2026-01-01T00:00:01Z", "metadata": {}, "result": null,
        "worker_id": null, "cancel_requested": false
    }))
    .unwrap();
    let start = EffectInput {
        now: 5_000,
        worker: Some("w".into()),
        ..EffectInput::default()
    };
    r.apply_event(Event::Start, &start).unwrap();
    assert_eq!(r.status, JobStatus::Processing);
    assert_eq!(r.run_at, None);
    assert_eq!(r.worker_id.as_deref(), Some("w"));
    assert_eq!(r.started_at.map(crate::backend::to_millis), Some(5_000));
    assert_eq!(
        r.error_message.as_deref(),
        Some("old"),
        "kept until the end"
    );
    let retry = EffectInput {
        now: 6_000,
        error: Some("flaky".into()),
        due: Some(9_000),
        ..EffectInput::default()
    };
    r.apply_event(Event::Retry, &retry).unwrap();
    assert_eq!(
        (r.status, r.retry_count, r.worker_id.as_deref()),
        (JobStatus::Queued, 2, None)
    );
    assert_eq!(r.run_at.map(crate::backend::to_millis), Some(9_000));
    assert_eq!(r.error_message.as_deref(), Some("flaky"));
    assert!(r.apply_event(Event::Complete, &retry).is_err());
}

#[test]
fn placements_follow_the_target_status() {
    for event in Event::ALL {
        let target = JobStatus::ALL
            .into_iter()
            .find_map(|s| apply(s, event).ok())
            .unwrap();
        let place = placement(event);
        match target {
            JobStatus::Processing => assert_eq!(place, Placement::Leased),
            JobStatus::Queued => assert!(matches!(
                place,
                Placement::ReadyInPlace | Placement::ReadyAtBack | Placement::Delayed
            )),
            _ => assert_eq!(place, Placement::Finished, "{event:?}"),
        }
        if target.is_terminal() {
            assert!(counter(event).is_some(), "{event:?} counts");
        }
    }
}
