//! A throwaway Redis in Docker for integration tests (feature `testcontainers`).
//!
//! Where no Docker engine runs, [`RedisContainer::start`] fails at once; fall back to
//! `REDIS_URL` or a local `redis-server`, as this crate's own tests do.

use queue_core::{Error, Result};
use testcontainers::{
    ContainerAsync, GenericImage,
    core::{IntoContainerPort, WaitFor},
    runners::AsyncRunner,
};

/// A running `redis:7.2-alpine` container; removed when dropped.
#[derive(Debug)]
pub struct RedisContainer {
    _container: ContainerAsync<GenericImage>,
    url: String,
}

impl RedisContainer {
    /// Starts the container and waits until Redis accepts connections.
    pub async fn start() -> Result<Self> {
        let unavailable = |e: testcontainers::TestcontainersError| Error::Unavailable {
            backend: "docker",
            source: Box::new(e),
        };
        let container = GenericImage::new("redis", "7.2-alpine")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .start()
            .await
            .map_err(unavailable)?;
        let host = container.get_host().await.map_err(unavailable)?;
        let port = container
            .get_host_port_ipv4(6379)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            _container: container,
            url: format!("redis://{host}:{port}"),
        })
    }

    /// The URL of the server.
    pub fn url(&self) -> &str {
        &self.url
    }
}
