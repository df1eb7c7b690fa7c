//! The comparisons after each step: the whole observable state of the backend and the model.

use super::*;

impl<'a> Run<'a> {
    /// Everything a caller can observe, compared with the model.
    pub(super) async fn compare_state(&mut self) -> Check {
        let now = self.now();
        let b = self.backend;
        for id in self.ids.clone() {
            let got = b.get(id).await;
            let want = self.model.get(id);
            expect_eq(
                &format!("record {id}"),
                norm(&got, Clone::clone),
                norm(&want, Clone::clone),
            )?;
            if want.as_ref().is_ok_and(|r| r.children.is_some()) {
                let ids = |r: &Vec<JobRecord>| r.iter().map(|k| k.job_id).collect::<Vec<_>>();
                expect_eq(
                    &format!("children of {id}"),
                    norm(&b.children(id).await, ids),
                    norm(&self.model.children(id), ids),
                )?;
            }
        }
        let got = b.stats().await.map_err(|e| e.chain())?;
        expect_eq("stats", got, self.model.stats(now))?;
        let mut queries = vec![ListQuery::new().limit(100)];
        queries.extend(
            JobStatus::ALL
                .into_iter()
                .map(|s| ListQuery::new().status(s).limit(100)),
        );
        queries.extend((0..KEYS).map(|k| ListQuery::new().unique_key(format!("k{k}")).limit(100)));
        queries.push(ListQuery::new().waiting_on_children().limit(100));
        for query in queries {
            let got = b.list(&query).await;
            let want = self.model.list(&query);
            expect_eq(
                &format!("list {query:?}"),
                norm(&got, |p| {
                    p.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>()
                }),
                norm(&want, |p| {
                    p.jobs.iter().map(|r| r.job_id).collect::<Vec<_>>()
                }),
            )?;
        }
        for g in GROUPS {
            let got = b.group(g).await.map_err(|e| e.chain())?;
            expect_eq(&format!("group {g}"), got, self.model.group(g, now))?;
        }
        for limit in [0, 1, 10] {
            let got = b.groups(limit).await.map_err(|e| e.chain())?;
            expect_eq(
                &format!("groups({limit})"),
                got,
                self.model.groups(limit, now),
            )?;
        }
        let got = b.workers().await.map_err(|e| e.chain())?;
        expect_eq("workers", got, self.model.workers(now))?;
        self.compare_schedules().await
    }

    /// Every schedule (next run, last tick, counts, paused) and every job they created.
    pub(super) async fn compare_schedules(&mut self) -> Check {
        use queue_core::Schedules;
        let b = self.backend;
        let got: Vec<_> = b
            .schedules()
            .await
            .map_err(|e| e.chain())?
            .into_iter()
            .map(|r| {
                (
                    r.schedule.name,
                    r.next_run.map(to_millis),
                    r.last_tick.map(to_millis),
                    r.ticks_run,
                    r.ticks_skipped,
                    r.schedule.paused,
                )
            })
            .collect();
        let want: Vec<_> = self
            .model
            .schedules()
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    s.next,
                    s.last_tick,
                    s.ticks_run,
                    s.ticks_skipped,
                    s.paused,
                )
            })
            .collect();
        expect_eq("schedules", got, want)?;
        for id in self.model.ids() {
            if self.ids.contains(&id) || self.big.contains(&id) {
                continue;
            }
            expect_eq(
                &format!("scheduled job {id}"),
                norm(&b.get(id).await, Clone::clone),
                norm(&self.model.get(id), Clone::clone),
            )?;
        }
        Ok(())
    }
}

pub(super) fn expect_eq<T: PartialEq + fmt::Debug>(what: &str, backend: T, model: T) -> Check {
    if backend == model {
        Ok(())
    } else {
        Err(format!(
            "{what}:\n  backend: {backend:?}\n  model:   {model:?}"
        ))
    }
}

/// An error as it is compared: its kind and the fields a caller acts on.
pub(super) fn norm_err(e: &Error) -> String {
    match e {
        Error::NotFound { id } => format!("NotFound({id})"),
        Error::AlreadyExists { unique_key, job_id } => {
            format!("AlreadyExists({unique_key}, {job_id})")
        }
        Error::InvalidTransition { id, from, event } => {
            format!("InvalidTransition({id}, {from}, {event:?})")
        }
        Error::LeaseLost { id } => format!("LeaseLost({id})"),
        Error::InvalidArgument { .. } => "InvalidArgument".into(),
        Error::ScheduleNotFound { name } => format!("ScheduleNotFound({name})"),
        Error::NotDeletable { id, reason } => format!("NotDeletable({id}, {reason})"),
        other => format!("unexpected: {}", other.chain()),
    }
}

pub(super) fn norm<T, U>(r: &Result<T, Error>, f: impl FnOnce(&T) -> U) -> Result<U, String> {
    r.as_ref().map(f).map_err(norm_err)
}
