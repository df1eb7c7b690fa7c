//! The schedule's pure decisions, tick by tick.

use super::*;

fn ms(s: &str) -> Millis {
    to_millis(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
}

fn job() -> NewJob {
    NewJob::new("t", &1).unwrap()
}

fn ticks(f: &Firing) -> Vec<String> {
    f.jobs
        .iter()
        .map(|(t, _)| from_millis(*t).to_rfc3339())
        .collect()
}

#[test]
fn an_interval_ticks_from_its_anchor() {
    let s = Schedule::every("s", Duration::from_secs(10), job()).unwrap();
    let r = ScheduleRecord::create(s, 1_000).unwrap();
    assert_eq!(r.next_run.map(to_millis), Some(11_000));
    assert!(r.fire(10_999).unwrap().is_none());
    let f = r.fire(11_000).unwrap().unwrap();
    assert_eq!(f.jobs.len(), 1);
    assert_eq!(f.jobs[0].0, 11_000);
    assert_eq!(f.record.next_run.map(to_millis), Some(21_000));
    assert_eq!(f.record.revision, r.revision + 1);
    assert_eq!(f.jobs[0].1.options.job_id, Some(tick_job_id("s", 11_000)));
    // Within the grace (60 s) every due tick runs: 11, 21, 31 s.
    let f = r.fire(35_000).unwrap().unwrap();
    assert_eq!(
        f.jobs.iter().map(|j| j.0).collect::<Vec<_>>(),
        [11_000, 21_000, 31_000]
    );
    assert_eq!(f.record.ticks_run, 3);
    assert_eq!(f.record.ticks_skipped, 0);
}

#[test]
fn missed_tick_policies() {
    // Ticks every 10 s from 0; everything down until 1000 s: 100 ticks due, those at
    // 950..=1000 s within the 60 s grace.
    let base = |missed| {
        let s = Schedule::every("s", Duration::from_secs(10), job())
            .unwrap()
            .missed(missed);
        ScheduleRecord::create(s, 0).unwrap()
    };
    let now = 1_000_500;
    let f = base(MissedTicks::Skip).fire(now).unwrap().unwrap();
    assert_eq!(f.jobs.len(), 6, "the on-time ticks 950..=1000 s");
    assert_eq!(f.record.ticks_skipped, 94);
    assert_eq!(f.record.next_run.map(to_millis), Some(1_010_000));
    let f = base(MissedTicks::RunOnce).fire(now).unwrap().unwrap();
    assert_eq!(
        f.jobs.len(),
        6,
        "on-time ticks run; the missed ones are covered by them"
    );
    let f = base(MissedTicks::RunEach { max: 3 })
        .fire(now)
        .unwrap()
        .unwrap();
    assert_eq!(
        f.jobs.iter().map(|j| j.0 / 1000).collect::<Vec<_>>(),
        [920, 930, 940, 950, 960, 970, 980, 990, 1000]
    );
    assert_eq!(f.record.ticks_skipped, 91);
    // An hourly job down for a day: nothing within the grace.
    let hourly = |missed| {
        let s = Schedule::every("h", Duration::from_secs(3600), job())
            .unwrap()
            .missed(missed);
        ScheduleRecord::create(s, 0).unwrap()
    };
    let day = 86_400_000 + 120_000;
    assert!(
        hourly(MissedTicks::Skip)
            .fire(day)
            .unwrap()
            .unwrap()
            .jobs
            .is_empty()
    );
    let once = hourly(MissedTicks::RunOnce).fire(day).unwrap().unwrap();
    assert_eq!(
        once.jobs.iter().map(|j| j.0).collect::<Vec<_>>(),
        [86_400_000]
    );
    assert_eq!(once.record.ticks_skipped, 23);
    assert_eq!(once.record.last_tick.map(to_millis), Some(86_400_000));
    let each = hourly(MissedTicks::RunEach { max: 2 })
        .fire(day)
        .unwrap()
        .unwrap();
    assert_eq!(
        each.jobs.iter().map(|j| j.0).collect::<Vec<_>>(),
        [82_800_000, 86_400_000]
    );
}

#[test]
fn cron_follows_its_time_zone_across_daylight_saving() {
    let at = |expr: &str, start: &str, now: &str| {
        let s = Schedule::cron("c", expr, job())
            .unwrap()
            .time_zone("Europe/Berlin")
            .missed(MissedTicks::RunEach { max: 100 });
        let r = ScheduleRecord::create(s, ms(start)).unwrap();
        r.fire(ms(now))
            .unwrap()
            .map(|f| ticks(&f))
            .unwrap_or_default()
    };
    // 02:30 does not exist on 2027-03-28 (02:00 -> 03:00): it runs at 03:00 local.
    assert_eq!(
        at("30 2 * * *", "2027-03-26T12:00:00Z", "2027-03-29T12:00:00Z"),
        [
            "2027-03-27T01:30:00+00:00",
            "2027-03-28T01:00:00+00:00",
            "2027-03-29T00:30:00+00:00"
        ]
    );
    // 02:30 happens twice on 2027-10-31 (03:00 -> 02:00): it runs once, the first.
    assert_eq!(
        at("30 2 * * *", "2027-10-30T12:00:00Z", "2027-11-01T12:00:00Z"),
        ["2027-10-31T00:30:00+00:00", "2027-11-01T01:30:00+00:00"]
    );
    // Every hour at :15 ticks in both repeated hours.
    assert_eq!(
        at("15 * * * *", "2027-10-30T23:30:00Z", "2027-10-31T02:30:00Z"),
        [
            "2027-10-31T00:15:00+00:00",
            "2027-10-31T01:15:00+00:00",
            "2027-10-31T02:15:00+00:00"
        ]
    );
    // And in UTC a daily job is simply daily.
    let s = Schedule::cron("u", "0 2 * * *", job()).unwrap();
    let r = ScheduleRecord::create(s, ms("2027-03-27T12:00:00Z")).unwrap();
    assert_eq!(
        r.next_run.map(|t| t.to_rfc3339()).as_deref(),
        Some("2027-03-28T02:00:00+00:00")
    );
}

#[test]
fn updates_pauses_and_checks() {
    let s = Schedule::every("s", Duration::from_secs(10), job()).unwrap();
    let r = ScheduleRecord::create(s.clone(), 0).unwrap();
    // A new job keeps the next run; a new cadence starts from now.
    let mut other = s.clone();
    other.job.task = "u".into();
    let u = r.update(other, 5_000).unwrap();
    assert_eq!(u.next_run, r.next_run);
    assert_eq!(u.revision, 2);
    let faster = Schedule::every("s", Duration::from_secs(3), job()).unwrap();
    let u = r.update(faster, 5_000).unwrap();
    assert_eq!(u.next_run.map(to_millis), Some(8_000));
    // Paused: never due; resumed: from the next tick after then, nothing missed.
    let p = r.update(s.clone().paused(true), 5_000).unwrap();
    assert_eq!(p.next_run, None);
    assert!(p.fire(1_000_000).unwrap().is_none());
    let back = p.update(s.clone(), 1_000_000).unwrap();
    assert_eq!(back.next_run.map(to_millis), Some(1_010_000));
    assert!(back.fire(1_010_000).unwrap().unwrap().record.ticks_skipped == 0);

    let bad = |s: Schedule| s.check().unwrap_err().to_string();
    assert!(bad(Schedule::cron("c", "61 * * * *", job()).unwrap()).contains("cron expression"));
    assert!(
        bad(Schedule::cron("c", "0 2 * * *", job())
            .unwrap()
            .time_zone("Mars/Olympus"))
        .contains("Mars/Olympus")
    );
    assert!(
        bad(Schedule::every("c", Duration::from_millis(10), job()).unwrap()).contains("every_ms")
    );
    assert!(bad(Schedule::every("", Duration::from_secs(1), job()).unwrap()).contains("name"));
    assert!(bad(s.clone().missed(MissedTicks::RunEach { max: 0 })).contains("missed.max"));
    let e = Schedule::every("k", Duration::from_secs(1), job().unique_key("x")).unwrap_err();
    assert!(e.to_string().contains("unique_key"), "{e}");
    assert_eq!(
        "each:5".parse::<MissedTicks>().unwrap(),
        MissedTicks::RunEach { max: 5 }
    );
    assert!("sometimes".parse::<MissedTicks>().is_err());
}

#[test]
fn the_stored_form_round_trips() {
    let s = Schedule::cron("n", "0 2 * * *", job())
        .unwrap()
        .time_zone("Europe/Berlin")
        .missed(MissedTicks::RunEach { max: 3 });
    let r = ScheduleRecord::create(s, 1_000).unwrap();
    let text = r.encode().unwrap();
    assert_eq!(ScheduleRecord::decode("n", &text).unwrap(), r);
    assert!(
        ScheduleRecord::decode("n", "{")
            .unwrap_err()
            .to_string()
            .contains("`n`")
    );
    assert_ne!(tick_job_id("n", 1), tick_job_id("n", 2));
    assert_ne!(tick_job_id("n", 1), tick_job_id("m", 1));
    assert_eq!(tick_job_id("n", 1), tick_job_id("n", 1));
}
