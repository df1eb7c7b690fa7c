// No name taken from the type: renaming it would strand the jobs already queued.
#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(priority = "high")]
struct Resize {
    width: u32,
}

fn main() {}
