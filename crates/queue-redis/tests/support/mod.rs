//! Redis for tests: `REDIS_URL` when set, else a private `redis-server` this test binary
//! starts (and a 3-master cluster, started the same way). Servers die with the test binary
//! (a shell watchdog kills them when its parent process is gone). A missing `redis-server`
//! fails the test loudly, never skips it.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use queue_core::ManualClock;
use queue_redis::RedisBackend;
use queue_testkit::{Harness, suite_config};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{binary}` is not installed: install redis-server and redis-tools (apt-get install redis-server redis-tools) or set REDIS_URL"
    );
}

/// A redis-server process on `port`, killed when the test binary exits. Extra arguments
/// are appended to the command line.
pub struct ServerProcess {
    pub port: u16,
    pub dir: PathBuf,
}

impl ServerProcess {
    pub fn start(port: u16, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("dcs-redis-{port}-{}", std::process::id()));
        Self::start_in(port, dir, extra)
    }

    /// Starts (or restarts) a server on `port` whose files live in `dir`.
    pub fn start_in(port: u16, dir: PathBuf, extra: &[&str]) -> Self {
        require("redis-server");
        std::fs::create_dir_all(&dir).unwrap();
        let args = extra.join(" ");
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --dir {dir} --daemonize no {args} >>{dir}/log 2>&1 & \
             R=$!; while kill -0 {parent} 2>/dev/null && kill -0 $R 2>/dev/null; do sleep 0.5; done; kill -9 $R 2>/dev/null",
            dir = dir.display(),
            parent = std::process::id(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { port, dir };
        server.wait_ready();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cli(self.port, &["PING"]).is_some_and(|out| out.contains("PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not start: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (no save), as a crash would.
    pub fn kill(&self) {
        let _ = cli(self.port, &["SHUTDOWN", "NOSAVE"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cli(self.port, &["PING"]).is_some_and(|o| o.contains("PONG"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `redis-cli -p port args...`; `None` when it could not run.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The standalone Redis for this test binary.
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if container_url().is_some() => container_url().unwrap(),
        _ => {
            let server = ServerProcess::start(free_port(), &["--appendonly no"]);
            let url = server.url();
            std::mem::forget(server);
            url
        }
    })
    .clone()
}

/// With the `testcontainers` feature and a Docker engine: a Redis container, kept for the
/// life of the test binary. `None` without either (the caller then spawns `redis-server`).
#[cfg(feature = "testcontainers")]
fn container_url() -> Option<String> {
    static CONTAINER: OnceLock<
        Option<(
            tokio::runtime::Runtime,
            queue_redis::testing::RedisContainer,
        )>,
    > = OnceLock::new();
    CONTAINER
        .get_or_init(|| {
            // Tests call this from inside their runtime: start the container on a thread
            // (and a runtime) of its own.
            std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                match rt.block_on(queue_redis::testing::RedisContainer::start()) {
                    Ok(c) => Some((rt, c)),
                    Err(e) => {
                        eprintln!("no Docker ({}): using a local redis-server", e.chain());
                        None
                    }
                }
            })
            .join()
            .ok()
            .flatten()
        })
        .as_ref()
        .map(|(_, c)| c.url().to_owned())
}

#[cfg(not(feature = "testcontainers"))]
fn container_url() -> Option<String> {
    None
}

/// A 3-master Redis Cluster started from `redis-server` for this test binary; its node
/// URLs, comma-separated.
pub fn cluster_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("REDIS_CLUSTER_URL") {
            return url;
        }
        require("redis-cli");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        for port in &ports {
            let conf = format!("nodes-{port}.conf");
            std::mem::forget(ServerProcess::start(
                *port,
                &[
                    "--appendonly no",
                    "--cluster-enabled yes",
                    &format!("--cluster-config-file {conf}"),
                    "--cluster-node-timeout 5000",
                ],
            ));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = ports.iter().all(|p| {
                cli(*p, &["CLUSTER", "INFO"]).is_some_and(|o| o.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    })
    .clone()
}

/// A queue name of its own for one test.
pub fn unique_queue() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// A backend on its own queue at `url`, driven by `clock` when given.
pub async fn backend(url: &str, clock: Option<ManualClock>) -> RedisBackend {
    backend_with(url, clock, true).await
}

/// As [`backend`], choosing Functions or EVALSHA scripts.
pub async fn backend_with(url: &str, clock: Option<ManualClock>, functions: bool) -> RedisBackend {
    let config = suite_config(&unique_queue())
        .to_builder()
        .redis_url(url)
        .unwrap()
        .build()
        .unwrap();
    let mut builder = RedisBackend::builder(&config)
        .key_prefix("dcs-test")
        .functions(functions);
    if let Some(clock) = clock {
        builder = builder.clock(Arc::new(clock));
    }
    builder.build().await.expect("connect to the test Redis")
}

/// A conformance harness on `url`; its cleanup deletes every key of the queue.
pub async fn harness(url: &str, clock: ManualClock) -> Harness {
    harness_with(url, clock, true).await
}

/// As [`harness`], choosing Functions or EVALSHA scripts.
pub async fn harness_with(url: &str, clock: ManualClock, functions: bool) -> Harness {
    let backend = backend_with(url, Some(clock.clone()), functions).await;
    assert_eq!(
        backend.uses_functions(),
        functions,
        "Redis 7 serves Functions"
    );
    let cleanup = backend.clone();
    Harness::new(Arc::new(backend), clock).with_cleanup(async move {
        if let Err(e) = cleanup.destroy().await {
            eprintln!("cleanup failed: {}", e.chain());
        }
    })
}
