//! Webhooks and their outbox: deliveries left by endings, claimed, settled, parked and resent.

use super::*;

impl Tables {
    /// The outbox entries of job `id` reaching finished status `to` at `now`: one per
    /// webhook that wants it, in the same step as the transition.
    pub(super) fn leave_deliveries(&mut self, id: JobId, to: JobStatus, now: Millis) {
        if self.hooks.is_empty() {
            return;
        }
        let record = &self.jobs[&id].record;
        let wanted: Vec<String> = self
            .hooks
            .values()
            .filter(|h| h.wants(&record.task, record.group.as_deref(), to))
            .map(|h| h.name.clone())
            .collect();
        for hook in wanted {
            let record = &self.jobs[&id].record;
            let delivery = Delivery {
                id: Delivery::id_of(id, to, now, &hook),
                webhook: hook,
                job_id: id,
                event: to,
                at: now,
                task: record.task.clone(),
                group: record.group.clone(),
                unique_key: record.unique_key.clone(),
                attempts: 0,
                last_attempt_at: None,
                last_error: None,
                parked: false,
            };
            self.due_deliveries.insert((now, delivery.id.clone()));
            self.deliveries_by_hook
                .insert((delivery.webhook.clone(), delivery.id.clone()));
            self.outbox
                .insert(delivery.id.clone(), (delivery.encode(), Ok(now)));
        }
    }

    pub(crate) fn put_webhook(&mut self, hook: &Webhook) -> Result<()> {
        hook.check()?;
        if self.hooks.len() >= MAX_WEBHOOKS && !self.hooks.contains_key(&hook.name) {
            return Err(queue_core::backend::too_many("webhooks", MAX_WEBHOOKS));
        }
        self.hooks.insert(hook.name.clone(), hook.clone());
        Ok(())
    }

    /// Deletes a webhook (true when there was one) and up to `limit` of its deliveries;
    /// the caller repeats [`Tables::drop_deliveries`] while some are left.
    pub(crate) fn delete_webhook(&mut self, name: &str) -> bool {
        self.hooks.remove(name).is_some()
    }

    /// Drops up to `limit` deliveries (pending or parked) of a webhook that no longer
    /// exists; returns whether any are left.
    pub(crate) fn drop_deliveries(&mut self, name: &str, limit: usize) -> bool {
        if self.hooks.contains_key(name) {
            return false;
        }
        let ids: Vec<String> = self
            .deliveries_by_hook
            .range((name.to_owned(), String::new())..)
            .take_while(|(hook, _)| hook == name)
            .take(limit + 1)
            .map(|(_, id)| id.clone())
            .collect();
        let more = ids.len() > limit;
        for id in ids.into_iter().take(limit) {
            self.remove_delivery(&id);
        }
        more
    }

    /// Removes a delivery from the outbox and its indexes.
    pub(super) fn remove_delivery(&mut self, id: &str) {
        if let Some((stored, due)) = self.outbox.remove(id) {
            match due {
                Ok(t) => self.due_deliveries.remove(&(t, id.to_owned())),
                Err(at) => self.parked.remove(&(at, id.to_owned())),
            };
            if let Ok(d) = Delivery::decode(&stored) {
                self.deliveries_by_hook.remove(&(d.webhook, id.to_owned()));
            } else {
                self.deliveries_by_hook.retain(|(_, i)| i != id);
            }
        }
    }

    pub(crate) fn webhooks(&self) -> Vec<Webhook> {
        self.hooks.values().cloned().collect()
    }

    /// Stores a delivery due at `due`, or parked (`None`, as of now).
    pub(super) fn set_due(&mut self, id: &str, stored: String, due: Option<Millis>) {
        match self.outbox.get(id).map(|(_, due)| *due) {
            Some(Ok(t)) => {
                self.due_deliveries.remove(&(t, id.to_owned()));
            }
            Some(Err(at)) => {
                self.parked.remove(&(at, id.to_owned()));
            }
            None => {}
        }
        let due = match due {
            Some(t) => {
                self.due_deliveries.insert((t, id.to_owned()));
                Ok(t)
            }
            None => {
                self.parked.insert((self.now, id.to_owned()));
                Err(self.now)
            }
        };
        self.outbox.insert(id.to_owned(), (stored, due));
    }

    pub(crate) fn claim_deliveries(
        &mut self,
        limit: usize,
        lease: Millis,
        now: Millis,
    ) -> Vec<ClaimedDelivery> {
        self.now = now;
        let due: Vec<String> = self
            .due_deliveries
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            let stored = self.outbox[&id].0.clone();
            self.set_due(&id, stored.clone(), Some(now + lease));
            match Delivery::decode(&stored) {
                Ok(delivery) => out.push(ClaimedDelivery {
                    webhook: self.hooks.get(&delivery.webhook).cloned(),
                    stored,
                    delivery,
                }),
                // A record nobody can read cannot be sent: it is parked, as it is.
                Err(_) => self.set_due(&id, stored, None),
            }
        }
        out
    }

    pub(crate) fn settle_delivery(
        &mut self,
        id: &str,
        claimed: &str,
        settle: Settle,
        now: Millis,
    ) -> bool {
        self.now = now;
        if self.outbox.get(id).map(|(s, _)| s.as_str()) != Some(claimed) {
            return false;
        }
        match settle {
            Settle::Remove => self.remove_delivery(id),
            Settle::Retry(stored, wait) => self.set_due(id, stored, Some(now + duration_ms(wait))),
            Settle::Park(stored) => self.set_due(id, stored, None),
        }
        true
    }

    pub(crate) fn deliveries(&self, parked: bool, limit: usize) -> Vec<Delivery> {
        let ids: Box<dyn Iterator<Item = &(Millis, String)>> = if parked {
            Box::new(self.parked.iter())
        } else {
            Box::new(self.due_deliveries.iter())
        };
        ids.take(limit)
            .filter_map(|(_, id)| Delivery::decode(&self.outbox[id].0).ok())
            .collect()
    }

    pub(crate) fn resend_delivery(&mut self, id: &str, now: Millis) -> bool {
        self.now = now;
        match self.outbox.get(id) {
            Some((stored, Err(_))) => {
                let mut d = match Delivery::decode(stored) {
                    Ok(d) => d,
                    Err(_) => return false,
                };
                d.attempts = 0;
                d.parked = false;
                self.set_due(id, d.encode(), Some(now));
                true
            }
            _ => false,
        }
    }
}
