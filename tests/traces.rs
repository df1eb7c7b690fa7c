//! Traces across processes (feature `opentelemetry`): a job enqueued inside a request's span
//! runs in a `job` span of the same trace, a child of the span it was enqueued in.

use std::{sync::Arc, time::Duration};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{InMemorySpanExporter, SdkTracerProvider},
};
use queue_core::{JobStatus, JobStore, NewJob, backend::TRACE_CONTEXT_KEY};
use queue_memory::MemoryBackend;
use queue_worker::{CancellationToken, Worker};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn a_job_continues_the_trace_it_was_enqueued_in() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread: the subscriber set above sees every span of the worker.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let (request_trace, request_span, traced, untraced) = rt.block_on(async {
        let backend = Arc::new(MemoryBackend::new());
        let request = tracing::info_span!("request");
        let (traced, request_trace, request_span) = async {
            let cx = tracing::Span::current().context();
            let ids = cx.span().span_context().clone();
            let job = backend
                .enqueue(NewJob::new("greet", &"traced").unwrap())
                .await
                .unwrap();
            (job, ids.trace_id(), ids.span_id())
        }
        .instrument(request)
        .await;
        assert!(
            traced.metadata.contains_key(TRACE_CONTEXT_KEY),
            "the job carries the request's context: {:?}",
            traced.metadata
        );
        let untraced = backend
            .enqueue(NewJob::new("greet", &"untraced").unwrap())
            .await
            .unwrap();
        assert!(!untraced.metadata.contains_key(TRACE_CONTEXT_KEY));

        let stop = CancellationToken::new();
        let worker = Worker::builder(backend.clone())
            .register("greet", |_: String, _ctx| async move { Ok(()) })
            .build()
            .unwrap();
        let run = tokio::spawn(worker.run(stop.clone()));
        for id in [traced.job_id, untraced.job_id] {
            while backend.get(id).await.unwrap().status != JobStatus::Completed {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        stop.cancel();
        run.await.unwrap().unwrap();
        (request_trace, request_span, traced.job_id, untraced.job_id)
    });

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let job_span = |id: queue_core::JobId| {
        spans
            .iter()
            .find(|s| {
                s.name == "job"
                    && s.attributes.iter().any(|kv| {
                        kv.key.as_str() == "job_id" && kv.value.as_str() == id.to_string()
                    })
            })
            .unwrap_or_else(|| panic!("no job span for {id} among {} spans", spans.len()))
    };
    let traced = job_span(traced);
    assert_eq!(traced.span_context.trace_id(), request_trace, "one trace");
    assert_eq!(
        traced.parent_span_id, request_span,
        "a child of the enqueueing span"
    );
    let untraced = job_span(untraced);
    assert_ne!(
        untraced.span_context.trace_id(),
        request_trace,
        "a trace of its own"
    );
}
