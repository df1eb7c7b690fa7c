//! Fixtures for tests against PostgreSQL (feature `test-utils`): a schema of the test's
//! own, dropped when it ends, on the server `DCS_DATABASE_URL` names, else on a private
//! server started from the installed binaries; that private server itself, which a drill
//! can crash (`pg_ctl stop -m immediate`) and start again; and, with the feature
//! `testcontainers`, a server in Docker (`PostgresContainer`).
//!
//! ```no_run
//! # async fn demo() -> queue_core::Result<()> {
//! use queue_postgres::testing::TestSchema;
//! let schema = TestSchema::new();
//! let queue = schema.backend(queue_core::QueueConfig::default()).await?;
//! queue.enqueue(queue_core::NewJob::new("send_email", &"ada@example.com")?).await?;
//! # Ok(()) }
//! ```

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use queue_core::{Error, QueueConfig, Result};

use crate::{PostgresBackend, PostgresConfig};

#[cfg(feature = "testcontainers")]
#[cfg_attr(docsrs, doc(cfg(feature = "testcontainers")))]
mod container;
#[cfg(feature = "testcontainers")]
pub use container::PostgresContainer;

/// Where the server binaries are: `PG_BIN` when set, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else `pg_config --bindir`.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .max_by_key(|(v, _)| *v);
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(out) if out.status.success() => Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )),
        _ => Err(Error::config(
            "no PostgreSQL server binaries found (set PG_BIN to the directory holding initdb \
             and pg_ctl, install postgresql, or set DCS_DATABASE_URL to a running server)",
        )),
    }
}

/// A private PostgreSQL server in a directory of its own, on a free port; stopped and its
/// files removed when dropped. As root the server runs as the `postgres` user (the server
/// refuses to run as root).
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
}

impl PostgresServer {
    /// Creates a cluster (`initdb`, trust authentication) and starts it. Durable as any
    /// server: `fsync` on, `synchronous_commit` on.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::config(format!("no free port: {e}")))?
            .port();
        let dir = std::env::temp_dir().join(format!("dcs-pg-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::config(format!("creating {}: {e}", dir.display())))?;
        let server = Self { dir, port, bin };
        server.own_dir()?;
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        )?;
        server.up()?;
        server.watch();
        Ok(server)
    }

    /// A shell that stops the server and removes its files once this process is gone
    /// (a server held in a `static` is never dropped).
    fn watch(&self) {
        let stop = format!(
            "{prefix}{pg_ctl} stop -D {data} -m immediate",
            prefix = if Self::as_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data(),
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, the
    /// next start recovers from the WAL).
    pub fn crash(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &["stop", "-D", &self.data(), "-m", "immediate", "-w"],
        )
    }

    /// Starts the server again (after [`PostgresServer::crash`]) and waits until it takes
    /// connections.
    pub fn up(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c autovacuum=off -c fsync=on",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "start",
                "-D",
                &self.data(),
                "-w",
                "-t",
                "60",
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-o",
                &options,
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(Error::config(format!(
                    "the private PostgreSQL server on port {} did not start",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn as_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    fn own_dir(&self) -> Result<()> {
        if Self::as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres", &self.dir.display().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(Error::config(
                    "running as root, the server must run as the `postgres` user, which could not own its directory",
                ));
            }
        }
        Ok(())
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(tool);
        let mut cmd = if Self::as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::config(format!("running {}: {e}", path.display())))?;
        if !out.status.success() {
            return Err(Error::config(format!(
                "{tool} {}: {}{}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["stop", "-D", &self.data(), "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server tests use: `DCS_DATABASE_URL` when set, else one private server per test
/// binary, started on first use and stopped (its files removed) once the binary exits.
pub fn database_url() -> Result<String> {
    if let Ok(url) = std::env::var(crate::DATABASE_URL_VAR) {
        return Ok(url);
    }
    static SERVER: OnceLock<std::result::Result<PostgresServer, String>> = OnceLock::new();
    match SERVER.get_or_init(|| PostgresServer::start().map_err(|e| e.to_string())) {
        Ok(server) => Ok(server.url()),
        Err(e) => Err(Error::config(e.clone())),
    }
}

/// A schema of one test's own (`t_<uuid>`), dropped when the value is dropped (also when
/// the test panics).
#[derive(Debug)]
pub struct TestSchema {
    /// The schema's name.
    pub name: String,
    url: String,
}

impl TestSchema {
    /// A new schema name on [`database_url`]'s server (created by the first
    /// [`TestSchema::backend`]).
    ///
    /// # Panics
    /// When no server is configured and none can be started.
    pub fn new() -> Self {
        Self {
            name: format!("t_{}", uuid::Uuid::now_v7().simple()),
            url: database_url().expect("a PostgreSQL server for the tests"),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The configuration naming this schema.
    pub fn config(&self) -> Result<PostgresConfig> {
        PostgresConfig::new(&self.url)?.schema(self.name.clone())
    }

    /// A backend on this schema, migrated, for `queue`.
    pub async fn backend(&self, queue: QueueConfig) -> Result<PostgresBackend> {
        PostgresBackend::builder(self.config()?)
            .queue(queue)
            .migrate(true)
            .connect()
            .await
    }
}

impl Default for TestSchema {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        drop_schema(&self.url, &self.name);
    }
}

/// Drops `schema` on `url` from a thread of its own (a test's runtime may be gone or
/// busy), never waiting long on a lock a leaked transaction holds.
pub fn drop_schema(url: &str, schema: &str) {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                let _ = sqlx::query("SET lock_timeout = '20s'")
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}
