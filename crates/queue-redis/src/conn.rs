//! Connections: one multiplexed, reconnecting connection for commands, dedicated
//! connections for the blocking wake-up, and pub/sub.

use std::time::Duration;

use queue_core::{Error, RedisUrl, Result};
use redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value,
    aio::{
        ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub,
    },
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};

/// A standalone or cluster connection; both reconnect by themselves.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A one-off connection (blocking commands); dropped and re-opened after an error.
    Plain(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Self::Plain(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Plain(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Sends `WAIT` where this connection's writes to the queue went: the same connection
    /// on a single server, the master of `slot` on a cluster.
    pub(crate) async fn wait(&mut self, wait: &Cmd, slot: u16) -> redis::RedisResult<Value> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        match self {
            Self::Cluster(c) => {
                let route = Route::new(slot, SlotAddr::Master);
                c.route_command(
                    wait.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await
            }
            other => wait.query_async(other).await,
        }
    }
}

/// How to open connections to one deployment.
pub(crate) enum Deployment {
    Single(Box<Client>),
    Cluster {
        nodes: Vec<String>,
        client: Box<ClusterClient>,
    },
}

/// The longest a blocking wait asks the server for.
pub(crate) const MAX_BLOCK: Duration = Duration::from_secs(5);

impl Deployment {
    pub(crate) fn new(url: &RedisUrl) -> Result<Self> {
        let tls = url.nodes().iter().any(|n| n.starts_with("rediss"));
        if tls && !cfg!(feature = "tls") {
            return Err(Error::config(format!(
                "{url}: rediss:// needs the `tls` feature of queue-redis"
            )));
        }
        #[cfg(feature = "tls")]
        if tls {
            // rustls needs a process-wide crypto provider; keep one installed by the
            // application if there is one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let errors = crate::error::Errors::new(url);
        let bad = |e: redis::RedisError| {
            Error::config(format!(
                "Redis URL {url}: {}",
                errors.redact(&e.to_string())
            ))
        };
        if url.is_cluster() {
            let nodes: Vec<String> = url
                .nodes()
                .into_iter()
                .map(|n| {
                    n.replacen("redis-cluster://", "redis://", 1).replacen(
                        "rediss-cluster://",
                        "rediss://",
                        1,
                    )
                })
                .collect();
            let client = Box::new(
                cluster_builder(&nodes, Duration::from_secs(5))
                    .build()
                    .map_err(bad)?,
            );
            Ok(Self::Cluster { nodes, client })
        } else {
            Ok(Self::Single(Box::new(
                Client::open(url.expose()).map_err(bad)?,
            )))
        }
    }

    /// The command connection.
    pub(crate) async fn connect(&self, response_timeout: Duration) -> redis::RedisResult<Conn> {
        match self {
            Self::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(response_timeout))
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_max_delay(Duration::from_secs(2));
                Ok(Conn::Single(
                    client.get_connection_manager_with_config(cfg).await?,
                ))
            }
            Self::Cluster { client, .. } => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    /// A connection of its own for a blocking command (never shared: a blocked command
    /// delays everything queued behind it on a socket). Its response timeout is a
    /// watchdog over the longest block.
    pub(crate) async fn connect_blocking(&self) -> redis::RedisResult<Conn> {
        let watchdog = MAX_BLOCK + Duration::from_secs(2);
        match self {
            Self::Single(client) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_response_timeout(Some(watchdog))
                    .set_connection_timeout(Some(Duration::from_secs(2)));
                Ok(Conn::Plain(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
            Self::Cluster { nodes, .. } => {
                let client = cluster_builder(nodes, watchdog).build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A pub/sub connection (on a cluster, classic PUBLISH reaches every node, so any node
    /// will do).
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<PubSub> {
        match self {
            Self::Single(client) => client.get_async_pubsub().await,
            Self::Cluster { nodes, .. } => {
                let mut last = None;
                for node in nodes {
                    match Client::open(node.as_str()) {
                        Ok(client) => match client.get_async_pubsub().await {
                            Ok(p) => return Ok(p),
                            Err(e) => last = Some(e),
                        },
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "no cluster node",
                    ))
                }))
            }
        }
    }

    /// Plain connections to every configured node (to SCAN a queue's keys).
    pub(crate) fn node_clients(&self) -> Vec<Client> {
        match self {
            Self::Single(client) => vec![(**client).clone()],
            Self::Cluster { nodes, .. } => nodes
                .iter()
                .filter_map(|n| Client::open(n.as_str()).ok())
                .collect(),
        }
    }
}

fn cluster_builder(nodes: &[String], response_timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(response_timeout)
        .retries(6)
}
