//! Charts' series: counters of what happened, per bucket.

use super::*;

/// The charts' series: per interval, what the lifetime counters counted, how long jobs
/// waited to start and ran, and the depth a heartbeat sampled; each span shows only its
/// window.
pub async fn series_count_what_happened(h: &Harness) {
    use queue_core::SeriesSpan;
    use queue_core::series::{LATENCY_BOUNDS_MS, latency_bin, percentile};
    let sum = |s: &queue_core::Series, counter: &str| -> u64 {
        s.points.iter().map(|p| p.count(counter)).sum()
    };
    let hist = |s: &queue_core::Series, wait: bool| -> Vec<u64> {
        let mut out = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        for p in &s.points {
            let h = if wait { &p.wait } else { &p.run };
            for (o, n) in out.iter_mut().zip(h) {
                *o += n;
            }
        }
        out
    };
    let empty = h.backend.series(SeriesSpan::Hour).await.unwrap();
    assert_eq!((empty.points.len(), empty.step_ms), (60, 60_000));
    assert_eq!(sum(&empty, "enqueued"), 0);
    enqueue(h, job(1)).await;
    enqueue(h, job(2).max_retries(0)).await;
    enqueue(
        h,
        job(3)
            .priority(Priority::High)
            .delay(Duration::from_secs(600)),
    )
    .await;
    enqueue(h, job(4).priority(Priority::Low)).await;
    h.advance(Duration::from_secs(2));
    let leases = fetch(h, 2).await;
    assert_eq!(leases.len(), 2);
    h.advance(Duration::from_millis(300));
    finish(h, &leases[0], completed()).await;
    finish(h, &leases[1], Outcome::Failed { error: "x".into() }).await;
    h.backend.heartbeat(&beat("w1"), &[]).await.unwrap();
    for span in SeriesSpan::ALL {
        let s = h.backend.series(span).await.unwrap();
        assert_eq!(s.points.len(), span.points());
        assert!(
            s.points
                .windows(2)
                .all(|w| w[1].at - w[0].at == chrono::Duration::milliseconds(span.step_ms()))
        );
        let counts: Vec<u64> = ["enqueued", "completed", "failed", "retried"]
            .iter()
            .map(|c| sum(&s, c))
            .collect();
        assert_eq!(counts, [4, 1, 1, 0], "{span:?}");
        let waits = hist(&s, true);
        assert_eq!(waits[latency_bin(2000)], 2, "{span:?}: {waits:?}");
        assert_eq!(waits.iter().sum::<u64>(), 2);
        let runs = hist(&s, false);
        assert_eq!(runs[latency_bin(300)], 2, "{span:?}: {runs:?}");
        assert_eq!(percentile(&runs, 0.99), Some(500));
        // The heartbeat's sample is in the current interval.
        let last = s.points.last().unwrap();
        let g = |name: &str| last.gauges.get(name).copied();
        assert_eq!(
            (
                g("g_high"),
                g("g_normal"),
                g("g_low"),
                g("g_scheduled"),
                g("g_running")
            ),
            (Some(0), Some(0), Some(1), Some(1), Some(0)),
            "{span:?}: {last:?}"
        );
    }
    // Two hours on, the hour's window is empty and the day's still holds it all.
    h.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        sum(
            &h.backend.series(SeriesSpan::Hour).await.unwrap(),
            "enqueued"
        ),
        0
    );
    assert_eq!(
        sum(
            &h.backend.series(SeriesSpan::Day).await.unwrap(),
            "enqueued"
        ),
        4
    );
    h.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        sum(
            &h.backend.series(SeriesSpan::Day).await.unwrap(),
            "completed"
        ),
        0
    );
}
