//! Who may call the protected routes, and from where.
//!
//! - **Host** must be one this server answers to (its own address, a loopback name, or one
//!   of `DCS_ADMIN_ALLOWED_HOSTS`): a page on another domain that re-resolves to this
//!   machine (DNS rebinding) is refused.
//! - **Writes** (`POST`) must say `Content-Type: application/json` (a cross-site HTML form
//!   can only send `text/plain`, form or multipart bodies), and an `Origin` header, when a
//!   browser sends one, must be this server's.
//! - **The token** (when `DCS_ADMIN_TOKEN` is set) comes in `Authorization: Bearer`, or in
//!   the `HttpOnly`, `SameSite=Strict` cookie the dashboard sets; `?token=` is read only
//!   where a browser cannot send a header: the dashboard's first load (which swaps it for
//!   the cookie) and `/events`.

use axum::{
    extract::{Query, Request, State as Extract},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};

use crate::{State, error::ApiError};

/// The cookie that carries the token for the dashboard.
const COOKIE: &str = "dcs_admin_token";

/// The hosts a request may name: host names with a port, or with any port.
#[derive(Clone, Debug, Default)]
pub(crate) struct AllowedHosts {
    hosts: Vec<(String, Option<u16>)>,
    any: bool,
}

/// `host[:port]` (IPv6 in brackets), lower-cased.
fn split_host(text: &str) -> (String, Option<u16>) {
    let text = text.trim().to_ascii_lowercase();
    if let Some(rest) = text.strip_prefix('[')
        && let Some((ip, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (format!("[{ip}]"), port);
    }
    match text.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().ok()),
        _ => (text, None),
    }
}

impl AllowedHosts {
    /// This server's own address and the loopback names (on its port when it is known,
    /// on any port otherwise), plus `extra` (`host` or `host:port`; `*` allows any host).
    pub(crate) fn new(bound: Option<std::net::SocketAddr>, extra: &[String]) -> Self {
        let port = bound.map(|a| a.port());
        let mut hosts: Vec<(String, Option<u16>)> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(|h| (h.to_owned(), port))
            .collect();
        if let Some(addr) = bound
            && !addr.ip().is_unspecified()
        {
            hosts.push(split_host(&addr.to_string()));
        }
        let any = extra.iter().any(|h| h.trim() == "*");
        hosts.extend(
            extra
                .iter()
                .filter(|h| !h.trim().is_empty() && h.trim() != "*")
                .map(|h| split_host(h)),
        );
        Self { hosts, any }
    }

    fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let (name, port) = split_host(host);
        self.hosts
            .iter()
            .any(|(h, p)| *h == name && (p.is_none() || *p == port))
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

fn query_token(request: &Request) -> Option<String> {
    Query::<std::collections::HashMap<String, String>>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(q)| q.get("token").cloned())
}

/// Host, origin and content type of every protected route.
pub(crate) async fn guard(
    Extract(state): Extract<State>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let hosts = state
        .hosts
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !hosts.allows(host) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "host `{host}` is not one this server answers to (set DCS_ADMIN_ALLOWED_HOSTS)"
            ),
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "write requests need Content-Type: application/json",
            ));
        }
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if !hosts.allows(origin_host) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("requests from origin `{origin}` are not allowed"),
                ));
            }
        }
    }
    Ok(next.run(request).await)
}

/// The token check (nothing to check without a configured token).
pub(crate) async fn require(
    Extract(state): Extract<State>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.token else {
        return Ok(next.run(request).await);
    };
    let path = request.uri().path();
    let browser_only = request.method() == Method::GET && (path == "/" || path == "/events");
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_query = if browser_only {
        query_token(&request)
    } else {
        None
    };
    let given = header
        .clone()
        .or_else(|| cookie_token(request.headers()))
        .or_else(|| from_query.clone());
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
            if path == "/" && from_query.is_some() && header.is_none() {
                // Swap the token in the address bar for a cookie the page then uses.
                let cookie = format!("{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
                let mut response = Redirect::to("/").into_response();
                if let Ok(value) = cookie.parse() {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                return Ok(response);
            }
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::unauthorized("the bearer token is wrong")),
        None => Err(ApiError::unauthorized(
            "a bearer token is required (Authorization: Bearer <DCS_ADMIN_TOKEN>)",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_with_their_port() {
        let hosts = AllowedHosts::new(
            Some("127.0.0.1:8080".parse().unwrap()),
            &["admin.example.com".into(), "10.0.0.5:8080".into()],
        );
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "admin.example.com",
            "admin.example.com:443",
            "10.0.0.5:8080",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "localhost:9090", "10.0.0.5:9999", ""] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        assert!(AllowedHosts::new(None, &["*".into()]).allows("anything"));
        let unknown_port = AllowedHosts::new(None, &[]);
        assert!(unknown_port.allows("localhost:1234") && unknown_port.allows("[::1]:80"));
        assert!(!unknown_port.allows("evil.example:1234"));
    }
}
