// A unique key is text: a number must be formatted into a String field first.
#[derive(serde::Serialize, serde::Deserialize, dcs_queue::Job)]
#[job(name = "resize")]
struct Resize {
    #[job(unique_key)]
    image_id: u64,
}

fn main() {}
