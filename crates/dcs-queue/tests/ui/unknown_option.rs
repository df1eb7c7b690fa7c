#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "resize", colour = "red")]
struct Resize {
    width: u32,
}

fn main() {}
