//! The trace context a job carries from its enqueue to its runs, so that a request and the
//! job it caused show as one trace (feature `opentelemetry` of this crate and of the
//! worker).
//!
//! With the feature on, [`NewJob`](crate::NewJob) takes the context of the current
//! `tracing` span (through `tracing-opentelemetry`, else the current OpenTelemetry context)
//! and stores it, encoded by the global text-map propagator (set one, for example W3C
//! `TraceContextPropagator`, with `opentelemetry::global::set_text_map_propagator`), in
//! the job's metadata under [`TRACE_CONTEXT_KEY`]. The worker's `job` span continues it.

use std::collections::HashMap;

use crate::Metadata;

/// The metadata key holding the job's trace context: an object of propagation fields
/// (`traceparent`, `tracestate` with the W3C propagator).
pub const TRACE_CONTEXT_KEY: &str = "trace_context";

/// The propagation fields stored on a job, when it has any.
pub fn trace_carrier(metadata: &Metadata) -> Option<HashMap<String, String>> {
    let fields = metadata.get(TRACE_CONTEXT_KEY)?.as_object()?;
    let carrier: HashMap<String, String> = fields
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    (!carrier.is_empty()).then_some(carrier)
}

/// The current trace context as propagation fields; `None` outside any sampled-or-not
/// valid span, or without a global propagator.
#[cfg(feature = "opentelemetry")]
pub(crate) fn current_carrier() -> Option<serde_json::Value> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let mut cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        cx = opentelemetry::Context::current();
    }
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    (!carrier.is_empty()).then(|| serde_json::json!(carrier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_string_fields_make_a_carrier() {
        let mut metadata = Metadata::new();
        assert_eq!(trace_carrier(&metadata), None);
        metadata.insert(TRACE_CONTEXT_KEY.into(), serde_json::json!("not an object"));
        assert_eq!(trace_carrier(&metadata), None);
        metadata.insert(
            TRACE_CONTEXT_KEY.into(),
            serde_json::json!({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "n": 3}),
        );
        let carrier = trace_carrier(&metadata).unwrap();
        assert_eq!(carrier.len(), 1);
        assert!(carrier["traceparent"].starts_with("00-0af7"));
    }
}
