//! The dashboard: one static page (HTML + a little JS) embedded in the binary.

use axum::response::Html;

pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
