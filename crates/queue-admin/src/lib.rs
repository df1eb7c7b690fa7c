//! The admin HTTP API, dashboard and Prometheus metrics of a queue, over any backend.
//!
//! ```no_run
//! # async fn demo(backend: queue_core::SharedBackend) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let admin = queue_admin::Admin::new(backend, Some("s3cret".into()));
//! admin.serve(listener, std::future::pending()).await
//! # }
//! ```

mod api;
mod auth;
mod dashboard;
mod error;
mod metrics;
mod openapi;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use queue_core::SharedBackend;

pub use openapi::ROUTES;

/// Largest request body accepted (a job's payload travels in it).
pub const MAX_BODY: usize = 256 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) backend: SharedBackend,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) hosts: Arc<RwLock<auth::AllowedHosts>>,
    extra_hosts: Vec<String>,
}

/// An admin server for one queue.
#[derive(Clone)]
pub struct Admin {
    state: State,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("backend", &self.state.backend.to_string())
            .field("token", &self.state.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Admin {
    /// Every route but `/health` requires `token` when it is set (`/metrics` too: it names
    /// the busiest groups; Prometheus sends it with `authorization: {credentials: ...}`).
    pub fn new(backend: SharedBackend, token: Option<String>) -> Self {
        Self {
            state: State {
                backend,
                token: token.filter(|t| !t.is_empty()).map(Into::into),
                metrics: Arc::default(),
                hosts: Arc::new(RwLock::new(auth::AllowedHosts::new(None, &[]))),
                extra_hosts: Vec::new(),
            },
        }
    }

    /// Host names (`host` or `host:port`; `*` for any) that requests may address besides
    /// this server's own address and the loopback names (`DCS_ADMIN_ALLOWED_HOSTS`): the
    /// names a reverse proxy or a browser uses to reach it.
    pub fn allowed_hosts(mut self, hosts: Vec<String>) -> Self {
        *self.state.hosts.write().unwrap_or_else(|p| p.into_inner()) =
            auth::AllowedHosts::new(None, &hosts);
        self.state.extra_hosts = hosts;
        self
    }

    /// The routes.
    pub fn router(&self) -> Router {
        let protected = Router::new()
            .route("/", get(dashboard::page))
            .route("/stats", get(api::stats))
            .route("/series", get(api::series))
            .route("/jobs", get(api::list).post(api::enqueue))
            .route("/jobs/bulk", post(api::bulk))
            .route("/jobs/{id}", get(api::get).delete(api::delete))
            .route("/jobs/{id}/cancel", post(api::cancel))
            .route("/jobs/{id}/retry", post(api::retry))
            .route(
                "/jobs/{id}/children",
                get(api::children).post(api::add_children),
            )
            .route("/jobs/{id}/flow", get(api::flow))
            .route("/workers", get(api::workers))
            .route("/queue/pause", post(api::pause))
            .route("/queue/resume", post(api::resume))
            .route("/queue/rate_limit", post(api::rate_limit))
            .route("/groups", get(api::groups))
            .route("/groups/{group}", get(api::group))
            .route("/groups/{group}/pause", post(api::pause_group))
            .route("/groups/{group}/resume", post(api::resume_group))
            .route("/groups/{group}/concurrency", post(api::group_concurrency))
            .route("/groups/{group}/weight", post(api::group_weight))
            .route("/groups/{group}/rate_limit", post(api::group_rate_limit))
            .route("/schedules", get(api::schedules))
            .route(
                "/schedules/{name}",
                get(api::schedule)
                    .put(api::put_schedule)
                    .delete(api::delete_schedule),
            )
            .route("/schedules/{name}/pause", post(api::pause_schedule))
            .route("/schedules/{name}/resume", post(api::resume_schedule))
            .route("/webhooks", get(api::webhooks))
            .route(
                "/webhooks/{name}",
                axum::routing::put(api::put_webhook).delete(api::delete_webhook),
            )
            .route("/deliveries", get(api::deliveries))
            .route("/deliveries/{delivery}/resend", post(api::resend_delivery))
            .route("/events", get(api::events))
            .route("/openapi.json", get(openapi::document))
            .route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                auth::require,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                auth::guard,
            ));
        // Metrics: the token when one is set, but any Host (a scraper names the server as
        // it reaches it).
        let metrics = Router::new()
            .route("/metrics", get(metrics::render))
            .route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                auth::require,
            ));
        Router::new()
            .route("/health", get(api::health))
            .merge(metrics)
            .merge(protected)
            .fallback(error::not_found)
            .method_not_allowed_fallback(error::method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            // No page of this server may be framed by another site (clickjacking of its
            // buttons: delete, bulk actions).
            .layer(axum::middleware::map_response(no_framing))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes requests in flight.
    /// Also follows the queue's events for the duration histogram of `/metrics`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        *self.state.hosts.write().unwrap_or_else(|p| p.into_inner()) =
            auth::AllowedHosts::new(listener.local_addr().ok(), &self.state.extra_hosts);
        let observer = tokio::spawn(metrics::observe(
            self.state.backend.clone(),
            Arc::clone(&self.state.metrics),
        ));
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        observer.abort();
        result
    }
}

/// Forbids framing (CSP `frame-ancestors 'none'` and, for older browsers,
/// `X-Frame-Options: DENY`) on every response.
async fn no_framing(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Refuses to expose an unprotected admin API: a non-loopback address needs a token.
pub fn check_bind(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr} without DCS_ADMIN_TOKEN: set a token, or bind to 127.0.0.1"
        ))
    }
}
