#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "resize", priority = "urgent", retries = -1)]
struct Resize {
    width: u32,
}

fn main() {}
