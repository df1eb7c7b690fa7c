//! Who may call: tokens, cross-site requests, the dashboard's cookie, public addresses.

use super::*;

/// A browser on another site cannot make this server act: writes need a JSON content
/// type and a same-origin `Origin`, every protected route needs a Host this server
/// answers to, and the token travels in a cookie the dashboard sets.
async fn cross_site(backend: SharedBackend, token: Option<&str>) {
    let s = Server::start(backend.clone(), token).await;
    let host = format!("Host: {}", s.addr);
    let auth = token
        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
        .unwrap_or_default();
    let job = r#"{"task":"t","payload":1}"#;
    // A form post (text/plain) is refused, and nothing is stored.
    let text = s
        .raw(
            &format!("POST /jobs HTTP/1.1\r\n{host}\r\nContent-Type: text/plain{auth}"),
            job,
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 415"), "{text}");
    let text = s
        .raw(&format!("POST /jobs HTTP/1.1\r\n{host}{auth}"), job)
        .await;
    assert!(text.starts_with("HTTP/1.1 415"), "no content type: {text}");
    // Another site's page, even with the right content type.
    let text = s
        .raw(
            &format!("POST /jobs HTTP/1.1\r\n{host}\r\nContent-Type: application/json\r\nOrigin: http://evil.example{auth}"),
            job,
        )
        .await;
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains("origin"),
        "{text}"
    );
    assert_eq!(
        backend.stats().await.unwrap().total,
        0,
        "nothing was enqueued"
    );
    // A name re-resolved to this machine (DNS rebinding).
    let text = s
        .raw(
            &format!(
                "GET /stats HTTP/1.1\r\nHost: evil.example:{}{auth}",
                s.addr.port()
            ),
            "",
        )
        .await;
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains("host"),
        "{text}"
    );
    // The same page, same origin, with JSON: accepted.
    let text = s
        .raw(
            &format!("POST /jobs HTTP/1.1\r\n{host}\r\nContent-Type: application/json; charset=utf-8\r\nOrigin: http://{}{auth}", s.addr),
            job,
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    // Health and metrics stay open to probes and scrapers whatever their Host.
    let text = s
        .raw("GET /health HTTP/1.1\r\nHost: monitor.internal", "")
        .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_without_a_token() {
    cross_site(shared(MemoryBackend::new()), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_with_a_token() {
    cross_site(shared(MemoryBackend::new()), Some(TOKEN)).await;
}

/// The dashboard's link carries the token once (URL-encoded); the server swaps it for an
/// HttpOnly, SameSite cookie that then authorises the page's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_link_sets_a_cookie() {
    let token = "a+b/c=d&e";
    let s = Server::start(shared(MemoryBackend::new()), Some(token)).await;
    let host = format!("Host: {}", s.addr);
    let text = s
        .raw(
            &format!("GET /?token=a%2Bb%2Fc%3Dd%26e HTTP/1.1\r\n{host}"),
            "",
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 303"), "{text}");
    let cookie = text
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("a cookie is set: {text}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let text = s
        .raw(
            &format!("GET /stats HTTP/1.1\r\n{host}\r\nCookie: {pair}"),
            "",
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The raw (undecoded) value is not the token.
    let text = s
        .raw(&format!("GET /?token=a+b/c=d HTTP/1.1\r\n{host}"), "")
        .await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn no_token_no_public_address() {
    let public = "0.0.0.0:8080".parse().unwrap();
    let local = "127.0.0.1:8080".parse().unwrap();
    assert!(
        check_bind(&public, None)
            .unwrap_err()
            .contains("DCS_ADMIN_TOKEN")
    );
    assert!(check_bind(&public, Some("")).is_err());
    assert!(check_bind(&public, Some("t")).is_ok());
    assert!(check_bind(&local, None).is_ok());
    // Without a token configured, routes are open (loopback only).
    let s = Server::start(shared(MemoryBackend::new()), None).await;
    assert_eq!(s.call("GET", "/stats", None, false).await.0, 200);
    s.stop().await;
}
/// The OpenAPI document matches the routes; the dashboard is served (the last part of
/// the round trip of every route).
pub(crate) async fn documents(s: &Server, id: &str) {
    // The OpenAPI document matches the routes.
    let (status, doc) = s.json("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for (method, path, _, _) in ROUTES {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
        if path == "/events" {
            continue; // a stream that never ends; `events_*` cover it
        }
        if path.contains("{name}") {
            // Each call finds the schedule (a DELETE before removed it).
            let (status, _) = s
                .json(
                    "PUT",
                    "/schedules/walk",
                    Some(r#"{"cadence":{"kind":"every","every_ms":60000},"job":{"task":"noop"}}"#),
                )
                .await;
            assert_eq!(status, 200);
        }
        let concrete = path
            .replace("{id}", id)
            .replace("{name}", "walk")
            .replace("{delivery}", "walk");
        let (status, body) = s
            .call(&method.to_uppercase(), &concrete, Some("{}"), true)
            .await;
        // A routed handler's 404 says what it did not find (in JSON); the router's is empty.
        assert!(
            status != 404 || body.contains("\"error\""),
            "{method} {path} documented but not routed"
        );
        assert_ne!(status, 405, "{method} {path} documented but not routed");
    }
    let (status, page) = s.call("GET", "/", None, true).await;
    assert!(
        status == 200 && page.contains("<table"),
        "dashboard: {status}"
    );
}
