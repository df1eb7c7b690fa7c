// The same rule as an enqueue: a task name is not blank and at most 200 bytes.
#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "   ")]
struct Resize {
    width: u32,
}

fn main() {}
