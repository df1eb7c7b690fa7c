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

use crate::{
    egress::{Refused, Resolve, WebhookEgress},
    shared::Shared,
};

/// Deliveries claimed per round.
const PER_ROUND: usize = 32;
/// How often an idle loop looks for due deliveries.
const IDLE: Duration = Duration::from_secs(1);

type Connector = HttpConnector<Resolve>;
#[cfg(feature = "tls")]
type HttpClient = Client<hyper_rustls::HttpsConnector<Connector>, Full<Bytes>>;
#[cfg(not(feature = "tls"))]
type HttpClient = Client<Connector, Full<Bytes>>;

/// An HTTP/1.1 client for `http://` and (with the `tls` feature: rustls, the Mozilla root
/// certificates) `https://` URLs, connecting only where `egress` permits (its resolver
/// filters the addresses the connection may use).
fn http_client(egress: Arc<WebhookEgress>) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(Resolve { egress });
    http.enforce_http(false);
    #[cfg(feature = "tls")]
    {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).build(connector)
    }
    #[cfg(not(feature = "tls"))]
    {
        Client::builder(TokioExecutor::new()).build(http)
    }
}

/// Runs until `stop`.
pub(crate) async fn delivery_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let egress = Arc::new(shared.settings.config.webhook_egress.clone());
    let client = http_client(Arc::clone(&egress));
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
            .map(|c| deliver(&shared, &client, &egress, &agent, c));
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

/// One attempt of one delivery, then its settle. What is stored of a failure is coarse
/// ("connect failed", "HTTP 503"): a receiver's address or port state never shows in it.
async fn deliver(
    shared: &Shared,
    client: &HttpClient,
    egress: &WebhookEgress,
    agent: &str,
    c: ClaimedDelivery,
) {
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
        Err(_) => Err("invalid request".to_owned()),
        // An address in the URL is not resolved: checked here.
        Ok(request) if !literal_permitted(egress, request.uri()) => Err(Refused.to_string()),
        Ok(request) => match tokio::time::timeout(DELIVERY_TIMEOUT, send(client, request)).await {
            Err(_) => Err("timed out".to_owned()),
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

/// Whether a URL whose host is an address names one the policy permits (a host name is
/// checked on what it resolves to, by the client's resolver).
fn literal_permitted(egress: &WebhookEgress, uri: &hyper::Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) => egress.permits(host, ip),
        Err(_) => true,
    }
}

/// Sends the request; a 2xx answer is success, anything else says why not, coarsely.
async fn send(client: &HttpClient, request: hyper::Request<Full<Bytes>>) -> Result<(), String> {
    let response = client.request(request).await.map_err(|e| {
        debug!(error = %e, "webhook request failed");
        coarse(&e)
    })?;
    let status = response.status();
    // The body is read (bounded by the timeout) so the connection can be reused.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

/// A failed request as stored: refused by the policy, could not connect (refused, reset,
/// unreachable or TLS: all one), or failed after connecting.
fn coarse(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<Refused>() {
            return Refused.to_string();
        }
        source = s.source();
    }
    if e.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    }
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
