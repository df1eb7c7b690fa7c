//! A throwaway PostgreSQL in Docker for integration tests (feature `testcontainers`).
//!
//! Where no Docker engine runs, [`PostgresContainer::start`] fails at once; fall back to
//! `DCS_DATABASE_URL` or a private server from the installed binaries
//! ([`super::database_url`]), as this crate's own tests do.

use queue_core::{Error, Result};
use testcontainers::{
    ContainerAsync, GenericImage, ImageExt,
    core::{IntoContainerPort, WaitFor},
    runners::AsyncRunner,
};

/// A running `postgres:15-alpine` container (trust authentication); removed when dropped.
#[derive(Debug)]
pub struct PostgresContainer {
    _container: ContainerAsync<GenericImage>,
    url: String,
}

impl PostgresContainer {
    /// Starts the container and waits until PostgreSQL accepts connections.
    pub async fn start() -> Result<Self> {
        let unavailable = |e: testcontainers::TestcontainersError| Error::Unavailable {
            backend: "docker",
            source: Box::new(e),
        };
        let container = GenericImage::new("postgres", "15-alpine")
            .with_exposed_port(5432.tcp())
            // The server logs this twice: once for the init run, once for the real start.
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
            .start()
            .await
            .map_err(unavailable)?;
        let host = container.get_host().await.map_err(unavailable)?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            _container: container,
            url: format!("postgres://postgres@{host}:{port}/postgres"),
        })
    }

    /// The URL of the server.
    pub fn url(&self) -> &str {
        &self.url
    }
}
