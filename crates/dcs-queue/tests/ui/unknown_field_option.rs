#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "resize")]
struct Resize {
    #[job(uniq)]
    image_id: String,
}

fn main() {}
