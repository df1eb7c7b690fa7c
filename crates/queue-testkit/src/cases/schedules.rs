//! Schedules: each tick enqueued exactly once, missed ticks by policy, time zones, management.

use super::*;

fn scheduled(n: u32) -> NewJob {
    NewJob::new("scheduled", &json!({ "n": n })).expect("encodes")
}

/// Every job a schedule created, oldest tick first (from its `tick` metadata).
async fn jobs_of_schedule(h: &Harness, name: &str) -> Vec<JobRecord> {
    let mut out = Vec::new();
    let mut query = ListQuery::new().limit(1000);
    loop {
        let page = h.backend.list(&query).await.expect("list");
        out.extend(
            page.jobs
                .into_iter()
                .filter(|j| j.metadata.get("schedule").and_then(|v| v.as_str()) == Some(name)),
        );
        match page.next_cursor {
            Some(c) => query = query.cursor(c),
            None => break,
        }
    }
    out.sort_by_key(|j| j.metadata["tick"].as_str().map(str::to_owned));
    out
}

fn tick_of(record: &JobRecord) -> i64 {
    let tick = record.metadata["tick"].as_str().expect("tick metadata");
    to_millis(
        chrono::DateTime::parse_from_rfc3339(tick)
            .expect("RFC 3339")
            .with_timezone(&chrono::Utc),
    )
}

/// A schedule's tick enqueues exactly one job however many schedulers race for it; a
/// scheduler whose read is stale (another fired since) creates nothing; one that read and
/// crashed before writing changed nothing, so the next scheduler fires the tick.
pub async fn a_tick_enqueues_exactly_once(h: &Harness) {
    use queue_core::backend::{ScheduleRead, ScheduleWrite, ScheduleWritten, tick_job_id};
    use queue_core::{Schedule, Schedules};
    let start = h.clock.now_ms();
    let put = h
        .backend
        .put_schedule(Schedule::every("tick", Duration::from_secs(10), scheduled(1)).unwrap())
        .await
        .expect("put");
    assert_eq!(put.next_run.map(to_millis), Some(start + 10_000));
    // Not due yet: nothing happens.
    let report = h.backend.run_due_schedules().await.expect("run");
    assert!(report.fired.is_empty());
    assert_eq!(report.next_due.map(to_millis), Some(start + 10_000));

    const ROUNDS: i64 = 12;
    for round in 1..=ROUNDS {
        // A scheduler reads, then crashes before writing: it leaves no trace.
        let _crashed = h
            .backend
            .read_schedules(&ScheduleRead::One("tick".into()))
            .await
            .expect("read");
        h.advance(Duration::from_secs(10));
        let racers: Vec<_> = (0..6)
            .map(|_| {
                let b = h.backend.clone();
                tokio::spawn(async move { b.run_due_schedules().await })
            })
            .collect();
        let mut fired = Vec::new();
        let mut conflicts = 0;
        for r in racers {
            let report = r.await.expect("joins").expect("run");
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            conflicts += report.conflicts;
            fired.extend(report.fired.into_iter().flat_map(|(_, ids)| ids));
        }
        let tick = start + round * 10_000;
        assert_eq!(
            fired,
            vec![tick_job_id("tick", tick)],
            "round {round}: one job for the tick ({conflicts} racers lost)"
        );
    }
    let jobs = jobs_of_schedule(h, "tick").await;
    assert_eq!(jobs.len(), ROUNDS as usize, "one job per tick, no more");
    for (i, j) in jobs.iter().enumerate() {
        let tick = start + (i as i64 + 1) * 10_000;
        assert_eq!(tick_of(j), tick);
        assert_eq!(j.job_id, tick_job_id("tick", tick));
        assert_eq!(j.task, "scheduled");
        assert_eq!(j.status, JobStatus::Queued);
    }
    let record = h.backend.schedule("tick").await.expect("schedule");
    assert_eq!(record.ticks_run, ROUNDS as u64);
    assert_eq!(record.ticks_skipped, 0);
    assert_eq!(
        record.last_job,
        Some(tick_job_id("tick", start + ROUNDS * 10_000))
    );
    assert_eq!(
        record.next_run.map(to_millis),
        Some(start + (ROUNDS + 1) * 10_000)
    );

    // A write based on a stale read is refused and creates nothing.
    let stale = h
        .backend
        .read_schedules(&ScheduleRead::One("tick".into()))
        .await
        .expect("read");
    h.advance(Duration::from_secs(10));
    let report = h.backend.run_due_schedules().await.expect("run");
    assert_eq!(report.fired.len(), 1);
    let late = NewJob::new("late", &json!({}))
        .unwrap()
        .job_id(JobId::new());
    let late_id = late.options.job_id.unwrap();
    let written = h
        .backend
        .write_schedule(ScheduleWrite {
            name: "tick".into(),
            expected: Some(stale.schedules[0].1.clone()),
            new: Some((stale.schedules[0].1.clone(), Some(0))),
            jobs: vec![late],
        })
        .await
        .expect("write");
    assert!(matches!(written, ScheduleWritten::Conflict));
    assert!(matches!(
        h.backend.get(late_id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(jobs_of_schedule(h, "tick").await.len(), ROUNDS as usize + 1);
    // The jobs run like any other, oldest tick first.
    let first = claim_one(h).await;
    assert_eq!(first.job.job_id, tick_job_id("tick", start + 10_000));
}

/// Ticks missed while nothing ran (later than the grace) follow the schedule's policy:
/// skipped, run once for the latest, or each of the latest N; the next run is the first
/// tick after now either way.
pub async fn missed_ticks_follow_the_policy(h: &Harness) {
    use queue_core::{MissedTicks, Schedule, Schedules};
    let start = h.clock.now_ms();
    let hour = Duration::from_secs(3600);
    for (name, policy) in [
        ("skip", MissedTicks::Skip),
        ("once", MissedTicks::RunOnce),
        ("each", MissedTicks::RunEach { max: 3 }),
    ] {
        let s = Schedule::every(name, hour, scheduled(0))
            .unwrap()
            .missed(policy);
        h.backend.put_schedule(s).await.expect("put");
    }
    // Everything down for five hours and two minutes: five ticks due, none within the
    // one-minute grace.
    h.advance(5 * hour + Duration::from_secs(120));
    let report = h.backend.run_due_schedules().await.expect("run");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.fired.len(), 3, "each due schedule was handled");
    let h_ms = 3_600_000;
    let ticks = |jobs: Vec<JobRecord>| jobs.iter().map(tick_of).collect::<Vec<_>>();
    assert_eq!(ticks(jobs_of_schedule(h, "skip").await), Vec::<i64>::new());
    assert_eq!(ticks(jobs_of_schedule(h, "once").await), [start + 5 * h_ms]);
    assert_eq!(
        ticks(jobs_of_schedule(h, "each").await),
        [start + 3 * h_ms, start + 4 * h_ms, start + 5 * h_ms]
    );
    for (name, skipped) in [("skip", 5), ("once", 4), ("each", 2)] {
        let r = h.backend.schedule(name).await.expect("schedule");
        assert_eq!(r.ticks_skipped, skipped, "{name}");
        assert_eq!(r.next_run.map(to_millis), Some(start + 6 * h_ms), "{name}");
    }
    // Back to normal: the next tick runs on time under every policy.
    h.advance(hour - Duration::from_secs(100));
    h.backend.run_due_schedules().await.expect("run");
    for name in ["skip", "once", "each"] {
        let jobs = jobs_of_schedule(h, name).await;
        assert_eq!(jobs.last().map(tick_of), Some(start + 6 * h_ms), "{name}");
    }
    // Missed ticks ran oldest first.
    let mut order = Vec::new();
    for lease in fetch(h, 10).await {
        if lease.job.metadata["schedule"] == "each" {
            order.push(tick_of(&lease.job));
        }
    }
    assert_eq!(
        order,
        [
            start + 3 * h_ms,
            start + 4 * h_ms,
            start + 5 * h_ms,
            start + 6 * h_ms
        ]
    );
}

/// A cron schedule keeps its time zone in the backend: a daily 02:30 in Berlin runs at
/// 03:00 local on the night the clocks skip 02:00-03:00, and at 02:30 local after.
pub async fn cron_schedules_keep_their_time_zone(h: &Harness) {
    use queue_core::{Schedule, Schedules};
    let at = |s: &str| {
        to_millis(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc),
        )
    };
    let target = at("2027-03-27T12:00:00Z");
    let now = h.clock.now_ms();
    assert!(now < target, "the case moves the clock forward to 2027");
    h.advance(Duration::from_millis((target - now) as u64));
    let s = Schedule::cron("berlin", "30 2 * * *", scheduled(0))
        .unwrap()
        .time_zone("Europe/Berlin");
    let r = h.backend.put_schedule(s).await.expect("put");
    assert_eq!(r.next_run.map(to_millis), Some(at("2027-03-28T01:00:00Z")));
    h.advance(Duration::from_millis(
        (at("2027-03-28T01:00:00Z") - target) as u64,
    ));
    h.backend.run_due_schedules().await.expect("run");
    let r = h.backend.schedule("berlin").await.expect("schedule");
    assert_eq!(r.next_run.map(to_millis), Some(at("2027-03-29T00:30:00Z")));
    let jobs = jobs_of_schedule(h, "berlin").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(tick_of(&jobs[0]), at("2027-03-28T01:00:00Z"));
}

/// Schedules are created, changed, paused, resumed, listed and deleted; bad input is
/// refused naming the field and stores nothing; a stored schedule that cannot be read
/// fails only itself.
pub async fn schedules_are_managed(h: &Harness) {
    use queue_core::backend::{ScheduleWrite, ScheduleWritten};
    use queue_core::{Schedule, Schedules};
    let start = h.clock.now_ms();
    let every =
        |name: &str, secs| Schedule::every(name, Duration::from_secs(secs), scheduled(1)).unwrap();
    h.backend.put_schedule(every("b", 60)).await.expect("put b");
    let a = h.backend.put_schedule(every("a", 30)).await.expect("put a");
    assert_eq!(a.revision, 1);
    let names: Vec<String> = h
        .backend
        .schedules()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.schedule.name)
        .collect();
    assert_eq!(names, ["a", "b"]);

    // A new job keeps the next run; a new cadence starts from now.
    h.advance(Duration::from_secs(10));
    let mut changed = every("a", 30);
    changed.job = queue_core::ScheduledJob::try_from(scheduled(2)).unwrap();
    let a2 = h.backend.put_schedule(changed).await.expect("update");
    assert_eq!(a2.next_run, a.next_run);
    assert_eq!(a2.revision, 2);
    assert_eq!(a2.created_at, a.created_at);
    let faster = Schedule::every("a", Duration::from_secs(5), scheduled(2)).unwrap();
    let a3 = h.backend.put_schedule(faster).await.expect("new cadence");
    assert_eq!(a3.next_run.map(to_millis), Some(start + 15_000));

    // Paused: nothing fires; resumed: from the next tick after then.
    let p = h.backend.pause_schedule("a").await.expect("pause");
    assert!(p.schedule.paused && p.next_run.is_none());
    h.backend
        .pause_schedule("a")
        .await
        .expect("pausing twice is fine");
    h.advance(Duration::from_secs(50));
    let report = h.backend.run_due_schedules().await.expect("run");
    let fired: Vec<&str> = report.fired.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(fired, ["b"], "only the running schedule fired");
    assert!(jobs_of_schedule(h, "a").await.is_empty());
    let r = h.backend.resume_schedule("a").await.expect("resume");
    assert_eq!(r.next_run.map(to_millis), Some(start + 65_000));
    h.advance(Duration::from_secs(5));
    h.backend.run_due_schedules().await.expect("run");
    let jobs = jobs_of_schedule(h, "a").await;
    assert_eq!(jobs.len(), 1, "no tick of the paused time ran");
    assert_eq!(jobs[0].payload.to_value()["n"], 2);

    // Deleted: gone, its jobs stay.
    h.backend.delete_schedule("a").await.expect("delete");
    assert!(matches!(
        h.backend.schedule("a").await,
        Err(Error::ScheduleNotFound { name }) if name == "a"
    ));
    assert!(matches!(
        h.backend.delete_schedule("a").await,
        Err(Error::ScheduleNotFound { .. })
    ));
    assert!(matches!(
        h.backend.pause_schedule("nope").await,
        Err(Error::ScheduleNotFound { .. })
    ));
    assert_eq!(jobs_of_schedule(h, "a").await.len(), 1);

    // Bad input names what is wrong and stores nothing.
    let bad = [
        (
            Schedule::cron("c", "61 * * * *", scheduled(0)).unwrap(),
            "61 * * * *",
        ),
        (
            Schedule::cron("c", "0 2 * * *", scheduled(0))
                .unwrap()
                .time_zone("Mars/Olympus"),
            "Mars/Olympus",
        ),
        (every("", 60), "name"),
        (
            Schedule::every("c", Duration::from_millis(5), scheduled(0)).unwrap(),
            "every_ms",
        ),
    ];
    for (schedule, named) in bad {
        match h.backend.put_schedule(schedule).await {
            Err(Error::InvalidArgument { message }) => {
                assert!(message.contains(named), "{message} should name {named}")
            }
            other => panic!("expected InvalidArgument naming {named}, got {other:?}"),
        }
    }
    assert_eq!(h.backend.schedules().await.expect("list").len(), 1);

    // A stored form nobody can read fails only itself; it can still be deleted.
    let now = h.clock.now_ms();
    let garbage = h
        .backend
        .write_schedule(ScheduleWrite {
            name: "garbage".into(),
            expected: None,
            new: Some(("{not json".into(), Some(now))),
            jobs: Vec::new(),
        })
        .await
        .expect("write");
    assert!(matches!(garbage, ScheduleWritten::Applied(_)));
    h.advance(Duration::from_secs(60));
    let report = h.backend.run_due_schedules().await.expect("run");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].0, "garbage");
    assert!(matches!(report.errors[0].1, Error::Corrupt { .. }));
    assert_eq!(report.fired.len(), 1, "the other schedule still fired");
    assert!(matches!(
        h.backend.schedule("garbage").await,
        Err(Error::Corrupt { .. })
    ));
    h.backend
        .delete_schedule("garbage")
        .await
        .expect("delete garbage");
    assert_eq!(h.backend.schedules().await.expect("list").len(), 1);
}
