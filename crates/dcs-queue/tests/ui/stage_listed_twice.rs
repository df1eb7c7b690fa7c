#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "resize", stages(read = 1, write = 2, read = 3))]
struct Resize {
    width: u32,
}

fn main() {}
