// A typed handler returns its job's output type, checked by the compiler.
use dcs_queue::prelude::*;

#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "resize", output = u32)]
struct Resize {
    width: u32,
}

async fn resize(job: Resize, _ctx: JobContext) -> Result<String, JobError> {
    Ok(job.width.to_string())
}

fn main() {
    let backend = std::sync::Arc::new(MemoryBackend::new());
    let _ = Worker::builder(backend).handle::<Resize>(resize);
}
