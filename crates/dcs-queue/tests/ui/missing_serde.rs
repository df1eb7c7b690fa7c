// A job is stored as JSON: it must deserialize as well as serialize.
#[derive(serde::Serialize, dcs_queue::Job)]
#[job(name = "resize")]
struct Resize {
    width: u32,
}

fn main() {}
