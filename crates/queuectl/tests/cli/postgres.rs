//! `queuectl` on PostgreSQL: `migrate`, then the same commands as on Redis; a schema that
//! was never migrated is named, and a password in the URL is never printed.

use std::process::{Command, Output};

fn database_url() -> String {
    std::env::var("DCS_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

struct Pg {
    schema: String,
}

impl Pg {
    fn new() -> Self {
        Self {
            schema: format!("cli_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn run_with(&self, url: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_queuectl"))
            .arg("--database-url")
            .arg(url)
            .arg("--queue")
            .arg("cli")
            .args(args)
            .env_remove("DCS_REDIS_URL")
            .env_remove("DCS_QUEUE_NAME")
            .env("DCS_DATABASE_SCHEMA", &self.schema)
            .output()
            .expect("queuectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run_with(&database_url(), args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(database_url())
            .arg("-qc")
            .arg(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
            .output();
    }
}

#[test]
fn migrate_then_operate_a_queue_on_postgres() {
    let pg = Pg::new();
    let before = pg.run_with(&database_url(), &["stats"]);
    assert!(!before.status.success());
    let err = String::from_utf8_lossy(&before.stderr);
    assert!(
        err.contains("queuectl migrate") && err.contains(&pg.schema),
        "{err}"
    );

    let first: serde_json::Value = serde_json::from_str(&pg.ok(&["--json", "migrate"])).unwrap();
    let every: Vec<i32> = queue_postgres::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(first["applied"], serde_json::json!(every));
    let again: serde_json::Value = serde_json::from_str(&pg.ok(&["--json", "migrate"])).unwrap();
    assert_eq!(again["applied"], serde_json::json!([]));

    let id = pg
        .ok(&[
            "enqueue",
            "--task",
            "process_book",
            "--payload",
            r#"{"book_id":"b1"}"#,
            "--unique-key",
            "b1",
        ])
        .trim()
        .to_owned();
    let dup = pg.run_with(
        &database_url(),
        &[
            "enqueue",
            "--task",
            "process_book",
            "--payload",
            "{}",
            "--unique-key",
            "b1",
        ],
    );
    assert!(
        !dup.status.success(),
        "a second active job with the key is refused"
    );
    let stats: serde_json::Value = serde_json::from_str(&pg.ok(&["--json", "stats"])).unwrap();
    assert_eq!(stats["queued"], 1);
    let status: serde_json::Value =
        serde_json::from_str(&pg.ok(&["--json", "status", &id])).unwrap();
    assert_eq!(status["status"], "queued");
    pg.ok(&["cancel", &id]);
    let status: serde_json::Value =
        serde_json::from_str(&pg.ok(&["--json", "status", &id])).unwrap();
    assert_eq!(status["status"], "cancelled");

    // A password never shows, even in a failure.
    let url = "postgres://postgres:hunter2-secret@127.0.0.1:1/none";
    let out = pg.run_with(url, &["stats"]);
    assert!(!out.status.success());
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!shown.contains("hunter2-secret"), "{shown}");
}
