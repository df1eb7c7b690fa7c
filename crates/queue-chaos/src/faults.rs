//! What the drill breaks: TCP proxies between workers and Redis (noxious, a Rust port of
//! Toxiproxy) that delay, black-hole, drop replies and reset connections; Redis servers
//! that are killed and restarted, flushed, failed over and resharded.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use bmrng::RequestSender;
use noxious::{
    proxy::{ProxyConfig, ProxyRunner, Runner, Toxics},
    signal::{Close, Stop, Stopper},
    socket::TcpListener,
    toxic::{StreamDirection, Toxic, ToxicEvent, ToxicEventKind, ToxicEventResult, ToxicKind},
};
use queue_redis::testing::{RedisServer, cli, free_port};

/// A proxy in front of Redis for one worker process.
pub(crate) struct Proxy {
    name: String,
    /// The port workers connect to.
    pub(crate) port: u16,
    upstream: String,
    control: Option<(RequestSender<ToxicEvent, ToxicEventResult>, Stopper)>,
}

impl Proxy {
    /// Starts a proxy on a free port in front of `upstream` (`host:port`).
    pub(crate) async fn start(name: &str, upstream: String) -> anyhow::Result<Self> {
        let mut proxy = Self {
            name: name.to_owned(),
            port: free_port(),
            upstream,
            control: None,
        };
        proxy.up().await?;
        Ok(proxy)
    }

    async fn up(&mut self) -> anyhow::Result<()> {
        let config = ProxyConfig {
            name: self.name.clone(),
            listen: format!("127.0.0.1:{}", self.port),
            upstream: self.upstream.clone(),
            enabled: true,
            rand_seed: None,
        };
        let mut tries = 0;
        let (listener, info) = loop {
            match ProxyRunner::initialize_proxy::<TcpListener>(config.clone(), Toxics::empty())
                .await
            {
                Ok(started) => break started,
                // The port may linger a moment after the previous proxy closed.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).context("starting a proxy"),
            }
        };
        let (tx, rx) = bmrng::channel(16);
        let (stop, stopper) = Stop::new();
        let (_close, closer) = Close::new();
        tokio::spawn(ProxyRunner::run_proxy(listener, info, rx, stop, closer));
        self.control = Some((tx, stopper));
        Ok(())
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn send(&self, kind: ToxicEventKind) -> anyhow::Result<()> {
        let Some((tx, _)) = &self.control else {
            bail!("proxy {} is down", self.name)
        };
        tx.send_receive(ToxicEvent::new(self.name.clone(), kind))
            .await
            .map_err(|e| anyhow::anyhow!("toxic channel: {e:?}"))?
            .map_err(|e| anyhow::anyhow!("toxic refused: {e:?}"))
    }

    /// Adds a toxic on one direction.
    pub(crate) async fn add(
        &self,
        name: &str,
        kind: ToxicKind,
        direction: StreamDirection,
    ) -> anyhow::Result<()> {
        self.send(ToxicEventKind::AddToxic(Toxic {
            kind,
            name: name.to_owned(),
            toxicity: 1.0,
            direction,
        }))
        .await
    }

    /// A toxic on both directions, or on replies only, for `period`; it ends with the
    /// proxy's connections reset, as a real network fault would.
    pub(crate) async fn toxic(
        &mut self,
        kind: ToxicKind,
        both: bool,
        period: Duration,
    ) -> anyhow::Result<()> {
        self.add("down", kind, StreamDirection::Downstream).await?;
        if both {
            self.add("up", kind, StreamDirection::Upstream).await?;
        }
        tokio::time::sleep(period).await;
        self.reset(Duration::from_millis(fastrand::u64(0..300)))
            .await
    }

    /// Drops every connection through the proxy and refuses new ones for `pause`.
    pub(crate) async fn reset(&mut self, pause: Duration) -> anyhow::Result<()> {
        if let Some((_, stopper)) = self.control.take() {
            stopper.stop();
        }
        tokio::time::sleep(pause).await;
        self.up().await
    }
}

/// The process id of the redis-server on `port`.
pub(crate) fn redis_pid(port: u16) -> Option<u32> {
    cli(port, &["INFO", "server"])?
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

/// SIGKILLs a process by pid.
pub(crate) fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// A private standalone Redis with an append-only file fsynced on every write, so a
/// crash loses no acknowledged write.
pub(crate) struct Standalone {
    /// Its port.
    pub(crate) port: u16,
    dir: PathBuf,
    server: Option<RedisServer>,
}

const AOF: [&str; 2] = ["--appendonly yes", "--appendfsync always"];

impl Standalone {
    /// Starts it, keeping its files in `dir`.
    pub(crate) fn start(dir: PathBuf) -> Self {
        let port = free_port();
        let server = RedisServer::start_in(port, dir.clone(), &AOF);
        Self {
            port,
            dir,
            server: Some(server),
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash) and restarts it after `down`.
    pub(crate) async fn crash_and_restart(&mut self, down: Duration) {
        if let Some(pid) = redis_pid(self.port) {
            kill9(pid);
        }
        if let Some(mut server) = self.server.take() {
            let port = self.port;
            tokio::task::spawn_blocking(move || server.kill())
                .await
                .ok();
            let _ = port;
        }
        tokio::time::sleep(down).await;
        let (port, dir) = (self.port, self.dir.clone());
        let server = tokio::task::spawn_blocking(move || RedisServer::start_in(port, dir, &AOF))
            .await
            .expect("redis-server restarts");
        self.server = Some(server);
    }

    /// Empties the server's script cache and function libraries.
    pub(crate) fn flush_scripts(&self) {
        cli(self.port, &["SCRIPT", "FLUSH"]);
        cli(self.port, &["FUNCTION", "FLUSH"]);
    }
}

/// A 3-master cluster with one replica each, started for the drill.
pub(crate) struct Cluster {
    /// Every node's port.
    pub(crate) ports: Vec<u16>,
    _servers: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
struct Node {
    id: String,
    port: u16,
    master: bool,
    master_id: String,
    slots: Vec<(u16, u16)>,
}

impl Cluster {
    /// Starts six nodes in `dir` and joins them (3 masters, 3 replicas).
    pub(crate) fn start(dir: PathBuf) -> anyhow::Result<Self> {
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for port in &ports {
            let conf = format!("--cluster-config-file nodes-{port}.conf");
            servers.push(RedisServer::start_in(
                *port,
                dir.join(port.to_string()),
                &[
                    "--appendonly yes",
                    "--appendfsync always",
                    "--cluster-enabled yes",
                    &conf,
                    "--cluster-node-timeout 3000",
                ],
            ));
        }
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = std::process::Command::new("redis-cli")
            .args(&args)
            .output()?;
        if !out.status.success() {
            bail!(
                "cluster create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = Self {
            ports,
            _servers: servers,
        };
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The nodes' URLs, comma-separated.
    pub(crate) fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn wait_ok(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let ok = self.ports.iter().all(|p| {
                cli(*p, &["CLUSTER", "INFO"]).is_some_and(|o| o.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the cluster is not ok");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        let text = self
            .ports
            .iter()
            .find_map(|p| cli(*p, &["CLUSTER", "NODES"]).filter(|t| !t.is_empty()))
            .context("no node answers")?;
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 || f[2].contains("fail") {
                continue;
            }
            let port = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .context("node address")?;
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            out.push(Node {
                id: f[0].to_owned(),
                port,
                master: f[2].contains("master"),
                master_id: f[3].to_owned(),
                slots,
            });
        }
        Ok(out)
    }

    fn owner(nodes: &[Node], slot: u16) -> Option<&Node> {
        nodes
            .iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
    }

    /// The hash slot of a queue's keys.
    pub(crate) fn slot(&self, key: &str) -> anyhow::Result<u16> {
        cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .and_then(|o| o.trim().parse().ok())
            .context("CLUSTER KEYSLOT")
    }

    /// Promotes the replica of the master that holds `slot` (a coordinated failover: the
    /// replica catches up first, so no acknowledged write is lost).
    pub(crate) async fn failover(&self, slot: u16) -> anyhow::Result<()> {
        let nodes = self.nodes()?;
        let master = Self::owner(&nodes, slot).context("slot owner")?.clone();
        let replica = nodes
            .iter()
            .find(|n| !n.master && n.master_id == master.id)
            .context("a replica of the slot's master")?
            .clone();
        cli(replica.port, &["CLUSTER", "FAILOVER"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let nodes = self.nodes()?;
            if Self::owner(&nodes, slot).is_some_and(|n| n.id == replica.id) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("failover of slot {slot} did not complete");
            }
        }
    }

    /// Moves `slot` to another master while the queue runs, in small batches of keys.
    pub(crate) async fn migrate(&self, slot: u16) -> anyhow::Result<usize> {
        let nodes = self.nodes()?;
        let src = Self::owner(&nodes, slot).context("slot owner")?.clone();
        let dst = nodes
            .iter()
            .find(|n| n.master && n.id != src.id)
            .context("another master")?
            .clone();
        let s = slot.to_string();
        cli(dst.port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src.id]);
        cli(src.port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst.id]);
        let mut moved = 0;
        loop {
            let keys = cli(src.port, &["CLUSTER", "GETKEYSINSLOT", &s, "50"]).unwrap_or_default();
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = dst.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().copied());
            cli(src.port, &args);
            moved += keys.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for node in nodes.iter().filter(|n| n.master) {
            cli(node.port, &["CLUSTER", "SETSLOT", &s, "NODE", &dst.id]);
        }
        Ok(moved)
    }

    /// Empties every node's script cache and function libraries.
    pub(crate) fn flush_scripts(&self) {
        for port in &self.ports {
            cli(*port, &["SCRIPT", "FLUSH"]);
            cli(*port, &["FUNCTION", "FLUSH"]);
        }
    }
}
