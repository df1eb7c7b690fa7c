//! `/events`: job transitions as server-sent events, resumable.

use super::*;

/// `GET /events?since=ID`: the resume point when the client has no `Last-Event-ID` (other
/// parameters, such as `token`, are the middleware's).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    since: Option<String>,
}

/// Server-sent events: `transition`, `progress` and `cancel_requested`, each a JSON job
/// event with its log id as the SSE `id`. A client that reconnects sends `Last-Event-ID`
/// (browsers do it on their own) or `?since=ID`, and gets what it missed from the event log
/// first, then live events, none twice; `missed` where events were lost (the client fell
/// behind, or resumed from before the oldest the log holds): reload what it shows.
pub(crate) async fn events(
    Extract(state): Extract<State>,
    headers: axum::http::HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?
                .to_owned(),
        ),
        None => q.since,
    };
    let after = resume.as_deref().filter(|id| !id.is_empty());
    let events = state.backend.subscribe(after).await?;
    let stream = events.map(|e| {
        let name = match &e.kind {
            queue_core::EventKind::Transition { .. } => "transition",
            queue_core::EventKind::Progress { .. } => "progress",
            queue_core::EventKind::CancelRequested => "cancel_requested",
            queue_core::EventKind::Missed { .. } => "missed",
        };
        let mut event = Event::default()
            .event(name)
            .data(serde_json::to_string(&e).expect("serializable"));
        if let Some(id) = &e.id {
            event = event.id(id);
        }
        Ok(event)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
