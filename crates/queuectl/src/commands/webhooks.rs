//! `queuectl webhook ...`.

use super::*;

pub(super) async fn webhook(
    backend: &SharedBackend,
    action: WebhookAction,
    json: bool,
) -> Result<()> {
    match action {
        WebhookAction::Add {
            name,
            url,
            secret,
            events,
            task,
            group,
            max_attempts,
            retry_ms,
        } => {
            let mut hook = queue_core::Webhook::new(name, url, secret)
                .retries(max_attempts, Duration::from_millis(retry_ms));
            if !events.is_empty() {
                hook = hook.events(events);
            }
            if let Some(t) = task {
                hook = hook.task(t);
            }
            if let Some(g) = group {
                hook = hook.group(g);
            }
            backend.put_webhook(&hook).await?;
            if json {
                output::json(&hook.redacted())
            } else {
                output::webhooks(&[hook.redacted()])
            }
        }
        WebhookAction::List => {
            let hooks: Vec<_> = backend
                .webhooks()
                .await?
                .iter()
                .map(queue_core::Webhook::redacted)
                .collect();
            if json {
                output::json(&hooks)
            } else {
                output::webhooks(&hooks)
            }
        }
        WebhookAction::Delete { name } => {
            if !backend.delete_webhook(&name).await? {
                return Err(queue_core::Error::invalid(format!(
                    "no webhook named `{name}`"
                )));
            }
            if json {
                output::json(&json!({ "deleted": name }))
            } else {
                println!("deleted {name}")
            }
        }
        WebhookAction::Deliveries { parked, limit } => {
            let list = backend.deliveries(parked, limit).await?;
            if json {
                output::json(&list)
            } else {
                output::deliveries(&list)
            }
        }
        WebhookAction::Resend { ids, all_parked } => {
            let ids = if all_parked {
                backend
                    .deliveries(true, 10_000)
                    .await?
                    .into_iter()
                    .map(|d| d.id)
                    .collect()
            } else {
                ids
            };
            let mut resent = Vec::new();
            for id in ids {
                if backend.resend_delivery(&id).await? {
                    resent.push(id);
                } else {
                    return Err(queue_core::Error::invalid(format!(
                        "no parked delivery `{id}` (resent before it: {})",
                        resent.len()
                    )));
                }
            }
            if json {
                output::json(&json!({ "resent": resent }))
            } else {
                println!("resent {}", resent.len())
            }
        }
    }
    Ok(())
}
