//! Throwaway Redis servers: `REDIS_URL` when set, else a private `redis-server` started by
//! the test binary (and a 3-master cluster, started the same way). Servers die with the
//! test binary (a shell watchdog kills them when its parent is gone). A missing
//! `redis-server` fails the test loudly, never skips it.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails loudly when `binary` is not installed.
pub fn require(binary: &str) {
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
#[derive(Debug)]
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    /// Its working directory (logs, AOF).
    pub dir: PathBuf,
    /// The watchdog shell; it exits when the server or the test binary is gone.
    watchdog: std::process::Child,
}

impl RedisServer {
    /// Starts a server on `port` in a fresh temporary directory.
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
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            port,
            dir,
            watchdog,
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits until the server answers PING.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cli(self.port, &["PING"])
                .is_some_and(|out| out.contains("PONG") || out.contains("NOAUTH"))
            {
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
    pub fn kill(&mut self) {
        let _ = cli(self.port, &["SHUTDOWN", "NOSAVE"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cli(self.port, &["PING"]).is_some_and(|o| o.contains("PONG"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The watchdog sees its server gone and exits; reap it.
        let _ = self.watchdog.wait();
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

/// The standalone Redis for this test binary: `REDIS_URL`, else `alternative()` (a
/// container, say), else a spawned `redis-server`.
pub fn redis_url_or(alternative: impl FnOnce() -> Option<String>) -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => alternative().unwrap_or_else(|| {
            let server = RedisServer::start(free_port(), &["--appendonly no"]);
            let url = server.url();
            std::mem::forget(server);
            url
        }),
    })
    .clone()
}

/// The standalone Redis for this test binary: `REDIS_URL`, else (feature `testcontainers`,
/// with a Docker engine) a Redis container, else a spawned `redis-server`.
pub fn redis_url() -> String {
    redis_url_or(super::container_url)
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
            std::mem::forget(RedisServer::start(
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
