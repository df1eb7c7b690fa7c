//! Webhooks: a delivery per matching webhook, through the outbox.

use super::*;

/// Each job that finishes leaves one delivery per webhook that wants it, written with the
/// transition; deliveries are claimed (hidden for a lease), settled (removed, retried
/// after a wait, parked) only by their claimer, listed, and parked ones sent again.
pub async fn finished_jobs_leave_a_delivery_per_matching_webhook(h: &Harness) {
    use queue_core::backend::Settle;
    use queue_core::{Delivery, Webhook};
    let secret = "0123456789abcdef";
    let url = "http://127.0.0.1:9/hooks";
    let hooks = [
        Webhook::new("all", url, secret),
        Webhook::new("failures", url, secret).events([JobStatus::Failed]),
        Webhook::new("books", url, secret).task("book"),
        Webhook::new("p7", url, secret).group("pub-7"),
    ];
    for hook in &hooks {
        h.backend.put_webhook(hook).await.expect("put webhook");
    }
    match h
        .backend
        .put_webhook(&Webhook::new("bad", "ftp://x", secret))
        .await
    {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("url"), "{message}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let listed: Vec<String> = h
        .backend
        .webhooks()
        .await
        .expect("webhooks")
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(listed, ["all", "books", "failures", "p7"]);

    let done = enqueue(h, job(1)).await;
    let lease = claim_one(h).await;
    finish(h, &lease, completed()).await;
    let book = enqueue(
        h,
        NewJob::new("book", &json!({ "n": 2 }))
            .unwrap()
            .group("pub-7")
            .unique_key("book-2"),
    )
    .await;
    let lease = claim_one(h).await;
    finish(
        h,
        &lease,
        Outcome::Failed {
            error: "bad".into(),
        },
    )
    .await;
    let gone = enqueue(h, job(3)).await;
    h.backend.cancel(gone.job_id).await.expect("cancel");
    let _waiting = enqueue(h, job(4)).await;

    let mut pending: Vec<(String, JobId, JobStatus)> = h
        .backend
        .deliveries(false, 100)
        .await
        .expect("deliveries")
        .into_iter()
        .map(|d| (d.webhook, d.job_id, d.event))
        .collect();
    pending.sort();
    let mut want = vec![
        ("all".to_owned(), done.job_id, JobStatus::Completed),
        ("all".to_owned(), book.job_id, JobStatus::Failed),
        ("all".to_owned(), gone.job_id, JobStatus::Cancelled),
        ("books".to_owned(), book.job_id, JobStatus::Failed),
        ("failures".to_owned(), book.job_id, JobStatus::Failed),
        ("p7".to_owned(), book.job_id, JobStatus::Failed),
    ];
    want.sort();
    assert_eq!(
        pending, want,
        "one delivery per (finished job, webhook that wants it)"
    );

    let claimed = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 6);
    for c in &claimed {
        let d = &c.delivery;
        assert_eq!(d.id, Delivery::id_of(d.job_id, d.event, d.at, &d.webhook));
        assert_eq!(d.attempts, 0);
        assert_eq!(c.webhook.as_ref().map(|w| w.secret.as_str()), Some(secret));
        if d.job_id == book.job_id {
            assert_eq!(
                (d.task.as_str(), d.group.as_deref(), d.unique_key.as_deref()),
                ("book", Some("pub-7"), Some("book-2"))
            );
        }
    }
    assert!(
        h.backend
            .claim_deliveries(100, Duration::from_secs(60))
            .await
            .expect("claim")
            .is_empty(),
        "claimed deliveries are hidden for their lease"
    );
    let hook = &hooks[0];
    let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
    assert!(
        h.backend
            .settle_delivery(&a.delivery.id, &a.stored, Settle::Remove)
            .await
            .unwrap()
    );
    let (retried, wait) = b
        .delivery
        .failed(hook, "503 Service Unavailable", h.clock.now_ms());
    let wait = wait.expect("retried");
    let settled = Settle::Retry(retried.encode(), Duration::from_secs(10).max(wait));
    assert!(
        h.backend
            .settle_delivery(&b.delivery.id, &b.stored, settled)
            .await
            .unwrap()
    );
    let mut parked = c.delivery.clone();
    parked.attempts = hook.max_attempts;
    parked.parked = true;
    parked.last_error = Some("connection refused".into());
    assert!(
        h.backend
            .settle_delivery(&c.delivery.id, &c.stored, Settle::Park(parked.encode()))
            .await
            .unwrap()
    );
    // A settle based on a stale claim changes nothing.
    assert!(
        !h.backend
            .settle_delivery(&b.delivery.id, &b.stored, Settle::Remove)
            .await
            .unwrap()
    );

    // The lease ran out: the three unsettled deliveries come back; the retry after its wait.
    h.advance(Duration::from_secs(61));
    let again = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    let ids: HashSet<String> = again.iter().map(|c| c.delivery.id.clone()).collect();
    assert_eq!(again.len(), 4, "three whose lease expired and the retry");
    assert!(
        ids.contains(&b.delivery.id)
            && !ids.contains(&a.delivery.id)
            && !ids.contains(&c.delivery.id)
    );
    let retry = again
        .iter()
        .find(|x| x.delivery.id == b.delivery.id)
        .unwrap();
    assert_eq!(retry.delivery.attempts, 1);
    assert_eq!(
        retry.delivery.last_error.as_deref(),
        Some("503 Service Unavailable")
    );

    let parked_list = h.backend.deliveries(true, 10).await.expect("parked");
    assert_eq!(parked_list.len(), 1);
    assert_eq!(parked_list[0].id, c.delivery.id);
    assert!(parked_list[0].parked);
    assert!(h.backend.resend_delivery(&c.delivery.id).await.unwrap());
    assert!(
        !h.backend.resend_delivery(&c.delivery.id).await.unwrap(),
        "no longer parked"
    );
    assert!(!h.backend.resend_delivery("no-such-delivery").await.unwrap());
    let resent = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].delivery.id, c.delivery.id);
    assert_eq!(resent[0].delivery.attempts, 0, "counted from zero again");
    assert!(!resent[0].delivery.parked);

    // A deleted webhook's deliveries, pending and parked, go with it.
    let of_books = |ds: &[queue_core::Delivery]| ds.iter().filter(|d| d.webhook == "books").count();
    assert!(of_books(&h.backend.deliveries(false, 100).await.unwrap()) > 0);
    assert!(h.backend.delete_webhook("books").await.unwrap());
    assert!(!h.backend.delete_webhook("books").await.unwrap());
    h.advance(Duration::from_secs(61));
    for parked in [false, true] {
        let left = h.backend.deliveries(parked, 100).await.unwrap();
        assert_eq!(of_books(&left), 0, "parked {parked}: {left:?}");
    }
    let last = h
        .backend
        .claim_deliveries(100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(last.iter().all(|c| c.delivery.webhook != "books"));
    // No webhook: no delivery.
    for name in ["all", "failures", "p7"] {
        h.backend.delete_webhook(name).await.unwrap();
    }
    let quiet = enqueue(h, job(5)).await;
    h.backend.cancel(quiet.job_id).await.unwrap();
    let pending = h.backend.deliveries(false, 100).await.unwrap();
    assert!(pending.iter().all(|d| d.job_id != quiet.job_id));
}
