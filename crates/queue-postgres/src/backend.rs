//! The backend handle: the pool, the schema, the queue's settings, the clock and the
//! wake-ups (LISTEN/NOTIFY, with polling as the fallback).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use queue_core::backend::Millis;
use queue_core::{QueueConfig, Result, SharedClock};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;

use crate::config::PostgresConfig;
use crate::error::{db_error, secrets_of};
use crate::migrate;

/// The longest a waiting fetch sleeps without looking again, whatever wakes it: the
/// fallback when a notification is lost (the listener reconnecting).
pub const POLL: Duration = Duration::from_millis(500);

/// A queue on PostgreSQL. Cheap to clone (one pool, one listener).
#[derive(Clone)]
pub struct PostgresBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) config: PostgresConfig,
    pub(crate) queue: QueueConfig,
    /// The schema as SQL (quoted).
    pub(crate) schema: String,
    /// The NOTIFY channel of the schema (`<schema>_wake`; the payload is the queue name,
    /// and the lowest place a transaction made ready, if any: `floors::payload`).
    pub(crate) channel: String,
    /// The cancel channel of the schema (`<schema>_cancel`; the payload is
    /// `<queue> <job id>`).
    pub(crate) cancel_channel: String,
    /// Cancel requests heard on the cancel channel.
    pub(crate) cancels: tokio::sync::broadcast::Sender<queue_core::JobId>,
    /// The events channel of the schema (`<schema>_events`; the payload is the queue).
    pub(crate) events_channel: String,
    /// The queue's events as the log numbers them, to its subscribers.
    pub(crate) events: tokio::sync::broadcast::Sender<(i64, queue_core::JobEvent)>,
    /// Wakes the follower task (events were committed, or someone subscribed).
    pub(crate) follow: Arc<Notify>,
    pub(crate) secrets: Vec<String>,
    pub(crate) clock: Option<SharedClock>,
    pub(crate) wake: Arc<Notify>,
    /// The lowest place wake-ups announced since a claim last took it (`floors.rs`).
    pub(crate) hint: Arc<crate::floors::Hint>,
    /// Fetches waiting for work now.
    pub(crate) blocked: queue_core::backend::Blocked,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("config", &self.inner.config)
            .field("queue", &self.inner.queue.queue_name)
            .finish_non_exhaustive()
    }
}

/// Builds a [`PostgresBackend`]: see [`PostgresBackend::builder`].
#[derive(Debug)]
pub struct PostgresBackendBuilder {
    config: PostgresConfig,
    queue: QueueConfig,
    migrate: bool,
    max_connections: u32,
    clock: Option<SharedClock>,
}

impl PostgresBackendBuilder {
    /// The queue's settings (its name, retries, lease, limits).
    pub fn queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// Applies missing migrations when connecting (off by default: `queuectl migrate`
    /// applies them where deployments forbid schema changes from the application).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The pool's size (10 by default).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(2);
        self
    }

    /// Takes time from `clock` instead of the database's clock (tests that move time).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Connects, checks (or applies) the schema's migrations and starts listening for
    /// wake-ups.
    pub async fn connect(self) -> Result<PostgresBackend> {
        let secrets = secrets_of(self.config.url());
        let err = |e| db_error(e, &secrets);
        let options: PgConnectOptions = self.config.url().parse().map_err(err)?;
        let schema_name = self.config.schema_name().to_owned();
        // One direct connection first: an unreachable server or a refused login is
        // answered at once (a pool would retry until its timeout), and the schema is
        // checked (or migrated) before any statement runs.
        let mut conn = PgConnection::connect_with(&options).await.map_err(err)?;
        let checked = async {
            if self.migrate {
                migrate::migrate(&mut conn, &schema_name, &secrets).await?;
            }
            let version = migrate::version(&mut conn, &schema_name, &secrets).await?;
            if version != migrate::LATEST {
                return Err(queue_core::Error::config(format!(
                    "schema `{schema_name}` is at migration {version}, this build needs {}: run \
                     `queuectl migrate` or connect with `.migrate(true)`",
                    migrate::LATEST
                )));
            }
            // The queue's row: claims take turns on it.
            sqlx::query(&format!(
                "INSERT INTO {}.queues (queue) VALUES ($1) ON CONFLICT DO NOTHING",
                migrate::quoted(&schema_name)
            ))
            .bind(&self.queue.queue_name)
            .execute(&mut conn)
            .await
            .map_err(err)?;
            Ok(())
        }
        .await;
        let _ = conn.close().await;
        checked?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let channel = format!("{schema_name}_wake");
        let cancel_channel = format!("{schema_name}_cancel");
        let events_channel = format!("{schema_name}_events");
        let wake = Arc::new(Notify::new());
        let hint = Arc::new(crate::floors::Hint::default());
        let follow = Arc::new(Notify::new());
        let (cancels, _) = tokio::sync::broadcast::channel(1024);
        let (events, _) = tokio::sync::broadcast::channel(16 * 1024);
        let listener = tokio::spawn(listen(
            pool.clone(),
            [
                channel.clone(),
                cancel_channel.clone(),
                events_channel.clone(),
            ],
            self.queue.queue_name.clone(),
            [Arc::clone(&wake), Arc::clone(&follow)],
            Arc::clone(&hint),
            cancels.clone(),
        ));
        let backend = PostgresBackend {
            inner: Arc::new(Inner {
                pool,
                schema: migrate::quoted(&schema_name),
                config: self.config,
                queue: self.queue,
                channel,
                cancel_channel,
                cancels,
                events_channel,
                events,
                follow: Arc::clone(&follow),
                secrets,
                clock: self.clock,
                wake,
                hint,
                blocked: Default::default(),
                listener,
            }),
        };
        // Background tasks hold the backend weakly: they end once it is dropped.
        let weak = Arc::downgrade(&backend.inner);
        let upgrade = move || weak.upgrade().map(|inner| PostgresBackend { inner });
        tokio::spawn(crate::events::follower(upgrade.clone(), follow));
        tokio::spawn(crate::retention::folder(upgrade));
        Ok(backend)
    }
}

impl PostgresBackend {
    /// A builder for the database and schema of `config`, with the default queue
    /// settings.
    pub fn builder(config: PostgresConfig) -> PostgresBackendBuilder {
        PostgresBackendBuilder {
            config,
            queue: QueueConfig::default(),
            migrate: false,
            max_connections: 10,
            clock: None,
        }
    }

    /// Connects with `DCS_DATABASE_URL` (and `DCS_DATABASE_SCHEMA`), the queue settings
    /// from the `DCS_QUEUE_*` variables, applying missing migrations.
    pub async fn from_env() -> Result<Self> {
        Self::builder(PostgresConfig::from_env()?)
            .queue(QueueConfig::from_env()?)
            .migrate(true)
            .connect()
            .await
    }

    /// Applies the migrations `config`'s schema lacks (creating it when missing), under an
    /// advisory lock; returns the versions applied now (`queuectl migrate`).
    pub async fn migrate(config: &PostgresConfig) -> Result<Vec<i32>> {
        let secrets = secrets_of(config.url());
        let options: PgConnectOptions = config.url().parse().map_err(|e| db_error(e, &secrets))?;
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| db_error(e, &secrets))?;
        let applied = migrate::migrate(&mut conn, config.schema_name(), &secrets).await;
        let _ = conn.close().await;
        applied
    }

    /// The pool (for the application's own statements and transactions).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// How many fetches are waiting for work now (a gauge, and what tests wait for).
    pub fn blocked_fetches(&self) -> usize {
        self.inner.blocked.count()
    }

    /// How many event streams (subscribers, and `wait` calls following a job) are open.
    pub fn subscribers(&self) -> usize {
        self.inner.events.receiver_count()
    }

    /// The queue's settings.
    pub fn queue_config(&self) -> &QueueConfig {
        &self.inner.queue
    }

    /// Now on the queue's one clock: the database's (or the clock given to the builder).
    pub(crate) async fn now(&self, conn: &mut PgConnection) -> Result<Millis> {
        if let Some(clock) = &self.inner.clock {
            return Ok(clock.now_ms());
        }
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8")
            .fetch_one(conn)
            .await
            .map_err(|e| self.db(e))
    }

    /// Ends a transaction: committed when `out` is a success, else rolled back at once
    /// (never left to the pool, holding its row locks meanwhile).
    pub(crate) async fn close<T>(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Postgres>,
        out: Result<T>,
    ) -> Result<T> {
        match out {
            Ok(v) => {
                tx.commit().await.map_err(|e| self.db(e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    pub(crate) fn db(&self, e: sqlx::Error) -> queue_core::Error {
        db_error(e, &self.inner.secrets)
    }
}

/// Listens on the schema's channels: wakes waiting fetches of `queue` on its wake-ups and
/// passes its cancel requests on; reconnects after an error (waiters poll meanwhile, every
/// [`POLL`]).
async fn listen(
    pool: PgPool,
    channels: [String; 3],
    queue: String,
    [wake, follow]: [Arc<Notify>; 2],
    hint: Arc<crate::floors::Hint>,
    cancels: tokio::sync::broadcast::Sender<queue_core::JobId>,
) {
    let [wake_channel, cancel_channel, _] = &channels;
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(_) => {
                tracing::debug!("postgres listener: connecting failed, retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if listener
            .listen_all(channels.iter().map(String::as_str))
            .await
            .is_err()
        {
            tokio::time::sleep(POLL).await;
            continue;
        }
        // Anything may have happened while it was not listening (a place announced then
        // is found by the next sweep, `floors::SWEEP`).
        wake.notify_waiters();
        follow.notify_one();
        while let Ok(n) = listener.recv().await {
            if n.channel() == cancel_channel.as_str() {
                if let Some((q, id)) = n.payload().split_once(' ')
                    && q == queue
                    && let Ok(id) = id.parse()
                {
                    let _ = cancels.send(id);
                }
            } else if n.channel() == wake_channel.as_str() {
                if let Some(place) = crate::floors::read_payload(&queue, n.payload()) {
                    if let Some(place) = place {
                        hint.announce(place);
                    }
                    wake.notify_waiters();
                }
            } else if n.payload() == queue {
                follow.notify_one();
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
