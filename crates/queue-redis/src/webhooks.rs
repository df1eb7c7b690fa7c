//! Webhooks and their outbox on Redis: the operator's side (put, delete, list, the
//! deliveries, a resend) and the delivery loop's (claim, settle).

use std::time::Duration;

use queue_core::backend::{MAX_WEBHOOKS, too_many};
use queue_core::{Error, Result};

use crate::RedisBackend;
use crate::wire::{array, int, text};

/// Deliveries of a deleted webhook dropped per script call.
const DROP_STEP: usize = 1_000;

impl RedisBackend {
    pub(crate) async fn put_webhook_now(&self, hook: &queue_core::Webhook) -> Result<()> {
        hook.check()?;
        let stored = serde_json::to_string(hook)
            .map_err(|e| Error::codec("webhook could not be encoded", e))?;
        let reply = self
            .run(
                &self.inner.scripts.webhook,
                &[],
                vec![hook.name.clone(), stored, hook.filter()],
            )
            .await?;
        if int(&reply) == Some(-1) {
            return Err(too_many("webhooks", MAX_WEBHOOKS));
        }
        Ok(())
    }

    pub(crate) async fn delete_webhook_now(&self, name: &str) -> Result<()> {
        queue_core::backend::check_webhook_name(name)?;
        self.run(
            &self.inner.scripts.webhook,
            &[],
            vec![name.to_owned(), String::new(), String::new()],
        )
        .await?;
        // Its deliveries (pending and parked) go with it, a bounded step at a time.
        loop {
            let more = self
                .run(
                    &self.inner.scripts.delivery,
                    &[],
                    vec!["drop".into(), name.to_owned(), DROP_STEP.to_string()],
                )
                .await?;
            if int(&more) != Some(1) {
                break;
            }
        }
        Ok(())
    }

    pub(crate) async fn stored_webhooks(&self) -> Result<Vec<queue_core::Webhook>> {
        let reply = self
            .run(
                &self.inner.scripts.deliveries,
                &[],
                vec!["webhooks".into(), String::new()],
            )
            .await?;
        let mut hooks = array(reply)
            .iter()
            .filter_map(text)
            .map(|t| {
                serde_json::from_str::<queue_core::Webhook>(&t)
                    .map_err(|e| Error::corrupt(format!("a stored webhook cannot be decoded: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        hooks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(hooks)
    }

    pub(crate) async fn claim_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<queue_core::backend::ClaimedDelivery>> {
        let reply = self
            .run(
                &self.inner.scripts.delivery,
                &[],
                vec![
                    "claim".into(),
                    limit.to_string(),
                    queue_core::backend::duration_ms(lease).to_string(),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for entry in array(reply) {
            let parts = array(entry);
            let (Some(id), Some(stored)) =
                (parts.first().and_then(text), parts.get(1).and_then(text))
            else {
                continue;
            };
            let hook = parts
                .get(2)
                .and_then(text)
                .filter(|h| !h.is_empty())
                .and_then(|h| serde_json::from_str::<queue_core::Webhook>(&h).ok());
            match queue_core::Delivery::decode(&stored) {
                Ok(delivery) => out.push(queue_core::backend::ClaimedDelivery {
                    stored,
                    delivery,
                    webhook: hook,
                }),
                // A record nobody can read cannot be sent: parked as it is, for an operator.
                Err(e) => {
                    tracing::warn!(delivery = %id, error = %e, "parking a webhook delivery that cannot be read");
                    self.settle_outbox(
                        &id,
                        &stored,
                        queue_core::backend::Settle::Park(stored.clone()),
                    )
                    .await?;
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn settle_outbox(
        &self,
        id: &str,
        claimed: &str,
        settle: queue_core::backend::Settle,
    ) -> Result<bool> {
        use queue_core::backend::Settle;
        let (how, stored, due) = match settle {
            Settle::Remove => ("remove", String::new(), String::new()),
            Settle::Retry(stored, wait) => (
                "retry",
                stored,
                queue_core::backend::duration_ms(wait).to_string(),
            ),
            Settle::Park(stored) => ("park", stored, String::new()),
        };
        let reply = self
            .run(
                &self.inner.scripts.delivery,
                &[],
                vec![
                    "settle".into(),
                    id.to_owned(),
                    claimed.to_owned(),
                    how.into(),
                    stored,
                    due,
                ],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }

    pub(crate) async fn outbox(
        &self,
        parked: bool,
        limit: usize,
    ) -> Result<Vec<queue_core::Delivery>> {
        let mode = if parked { "parked" } else { "pending" };
        let reply = self
            .run(
                &self.inner.scripts.deliveries,
                &[],
                vec![mode.into(), limit.max(1).to_string()],
            )
            .await?;
        Ok(array(reply)
            .iter()
            .filter_map(text)
            .filter_map(|t| queue_core::Delivery::decode(&t).ok())
            .collect())
    }

    pub(crate) async fn resend(&self, id: &str) -> Result<bool> {
        let reply = self
            .run(
                &self.inner.scripts.deliveries,
                &[],
                vec!["one".into(), id.to_owned()],
            )
            .await?;
        let parts = array(reply);
        let (Some(stored), Some(1)) = (parts.first().and_then(text), parts.get(1).and_then(int))
        else {
            return Ok(false);
        };
        let mut d = queue_core::Delivery::decode(&stored)?;
        d.attempts = 0;
        d.parked = false;
        let reply = self
            .run(
                &self.inner.scripts.delivery,
                &[],
                vec!["resend".into(), id.to_owned(), d.encode()],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }
}
