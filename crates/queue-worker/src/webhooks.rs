//! The delivery loop of durable webhooks: claims due deliveries from the backend's outbox,
//! POSTs each (JSON, signed), and settles it: removed when the receiver answered 2xx,
//! retried after the webhook's backoff otherwise, parked after its last attempt. Requests
//! run concurrently, each bounded by [`DELIVERY_TIMEOUT`]; nothing here touches a job.

use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use queue_core::backend::{ClaimedDelivery, DELIVERY_TIMEOUT, Settle};
use queue_core::webhook_signature;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::worker::Shared;

/// Deliveries claimed per round.
const PER_ROUND: usize = 32;
/// How often an idle loop looks for due deliveries.
const IDLE: Duration = Duration::from_secs(1);

#[cfg(feature = "tls")]
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;
#[cfg(not(feature = "tls"))]
type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client for `http://` and (with the `tls` feature: rustls, the Mozilla root
/// certificates) `https://` URLs.
fn http_client() -> HttpClient {
    #[cfg(feature = "tls")]
    {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new()).build(connector)
    }
    #[cfg(not(feature = "tls"))]
    {
        Client::builder(TokioExecutor::new()).build_http()
    }
}

/// Runs until `stop`.
pub(crate) async fn delivery_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let client = http_client();
    let agent = format!("dcs-queue/{}", env!("CARGO_PKG_VERSION"));
    loop {
        let claimed = tokio::select! {
            r = shared.broker.claim_deliveries(PER_ROUND, shared.settings.config.delivery_lease) => r,
            () = stop.cancelled() => return,
        };
        let claimed = match claimed {
            Ok(c) => c,
            Err(err) => {
                warn!(error = %err.chain(), "claiming webhook deliveries failed");
                Vec::new()
            }
        };
        let full = claimed.len() == PER_ROUND;
        let rounds = claimed
            .into_iter()
            .map(|c| deliver(&shared, &client, &agent, c));
        tokio::select! {
            _ = futures_util::future::join_all(rounds) => {}
            () = stop.cancelled() => return,
        }
        if !full {
            tokio::select! {
                () = tokio::time::sleep(IDLE + Duration::from_millis(fastrand::u64(0..100))) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// One attempt of one delivery, then its settle.
async fn deliver(shared: &Shared, client: &HttpClient, agent: &str, c: ClaimedDelivery) {
    let d = &c.delivery;
    let Some(hook) = &c.webhook else {
        debug!(delivery = %d.id, webhook = %d.webhook, "webhook deleted: delivery dropped");
        settle(shared, &c, Settle::Remove).await;
        return;
    };
    let body = serde_json::to_vec(&d.body()).expect("a delivery body serializes");
    let timestamp = chrono::Utc::now().timestamp();
    let request = hyper::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", agent)
        .header("x-dcs-delivery", &d.id)
        .header("x-dcs-event", d.event.as_str())
        .header("x-dcs-timestamp", timestamp.to_string())
        .header(
            "x-dcs-signature",
            webhook_signature(&hook.secret, timestamp, &body),
        )
        .body(Full::new(Bytes::from(body)));
    let outcome = match request {
        _ if cfg!(not(feature = "tls")) && hook.url.starts_with("https://") => {
            Err("this build cannot send to https:// (queue-worker's `tls` feature is off)".into())
        }
        Err(e) => Err(format!("cannot build the request: {e}")),
        Ok(request) => match tokio::time::timeout(DELIVERY_TIMEOUT, send(client, request)).await {
            Err(_) => Err(format!("no answer within {DELIVERY_TIMEOUT:?}")),
            Ok(result) => result,
        },
    };
    match outcome {
        Ok(()) => {
            debug!(delivery = %d.id, webhook = %hook.name, "webhook delivered");
            settle(shared, &c, Settle::Remove).await;
        }
        Err(error) => {
            let now = chrono::Utc::now().timestamp_millis();
            let (next, wait) = d.failed(hook, &error, now);
            match wait {
                Some(wait) => {
                    debug!(delivery = %d.id, webhook = %hook.name, attempt = next.attempts, %error, ?wait, "webhook delivery failed; retrying");
                    settle(shared, &c, Settle::Retry(next.encode(), wait)).await;
                }
                None => {
                    warn!(delivery = %d.id, webhook = %hook.name, attempts = next.attempts, %error, "webhook delivery parked after its last attempt");
                    settle(shared, &c, Settle::Park(next.encode())).await;
                }
            }
        }
    }
}

/// Sends the request; a 2xx answer is success, anything else says why not.
async fn send(client: &HttpClient, request: hyper::Request<Full<Bytes>>) -> Result<(), String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
    let status = response.status();
    // The body is read (bounded by the timeout) so the connection can be reused.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn settle(shared: &Shared, c: &ClaimedDelivery, how: Settle) {
    match shared
        .broker
        .settle_delivery(&c.delivery.id, &c.stored, how)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            info!(delivery = %c.delivery.id, "delivery was claimed again meanwhile; its new claimer settles it")
        }
        Err(err) => {
            warn!(delivery = %c.delivery.id, error = %err.chain(), "settling a webhook delivery failed; it is sent again after its lease")
        }
    }
}
