//! The drill on PostgreSQL: a private server (fsync and synchronous commit on), worker
//! processes behind fault-injecting proxies (each with a pool smaller than its
//! concurrency, so it runs out), producers that enqueue under their own job ids (an
//! enqueue whose reply was lost is sent again and answered by the stored job), and faults
//! at random until the time is up: worker SIGKILL, the server crashed (`pg_ctl stop -m
//! immediate`) and started again, connections reset, latency, black holes longer than the
//! lease, replies dropped, a transaction holding the queue's row and some jobs locked, and a
//! statement timeout of a few milliseconds on every new connection. Then everything is
//! healed, the queue drained and checked (`pg_drill/check.rs`).

mod check;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use noxious::toxic::ToxicKind;
use queue_core::{JobId, NewJob, QueueConfig};
use queue_postgres::{PostgresBackend, PostgresConfig, sqlx, testing::PostgresServer};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::{faults::Proxy, history, worker::Task};

/// The schema the drill's queue lives in.
const SCHEMA: &str = "chaos";

/// The Postgres drill's settings.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct PgDrillArgs {
    /// How long faults are injected.
    #[arg(long, default_value_t = 60)]
    pub(crate) seconds: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub(crate) workers: usize,
    /// Producer tasks.
    #[arg(long, default_value_t = 2)]
    pub(crate) producers: usize,
    /// Seed of the random choices.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Where logs and histories go (default: a new directory under the temp dir).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// After the faults stop, how long the drain may go without a job finishing.
    #[arg(long, default_value_t = 120)]
    pub(crate) drain_seconds: u64,
    /// Keep injecting past `--seconds` until this many faults (for at most 3x as long).
    #[arg(long, default_value_t = 0)]
    pub(crate) min_faults: u64,
}

/// What the Postgres drill found.
#[derive(Debug, Serialize)]
pub(crate) struct PgReport {
    pub(crate) seed: u64,
    pub(crate) dir: String,
    pub(crate) seconds: u64,
    /// Jobs enqueued (accepted).
    pub(crate) enqueued: usize,
    /// Enqueues sent again after an error (each answered by the job it had stored, or
    /// stored then).
    pub(crate) enqueues_sent_again: u64,
    pub(crate) faults: BTreeMap<String, u64>,
    /// Handler executions.
    pub(crate) executions: usize,
    /// Jobs run more than once.
    pub(crate) rerun_jobs: usize,
    /// Executions whose process was killed mid-way.
    pub(crate) killed_executions: usize,
    /// Pairs of executions of one job that overlapped in time.
    pub(crate) double_runs: Vec<String>,
    /// Accepted jobs the database does not hold.
    pub(crate) lost: Vec<String>,
    /// Jobs not finished after the drain.
    pub(crate) stranded: Vec<String>,
    /// Finished jobs by status.
    pub(crate) statuses: BTreeMap<String, u64>,
    /// Figures of `stats` that disagree with the rows (name: stats vs rows).
    pub(crate) tallies_off: Vec<String>,
    /// Seconds the queue took to drain after the faults stopped.
    pub(crate) drain_seconds: f64,
}

impl PgReport {
    /// True when nothing was lost, stranded, run twice at once or miscounted.
    pub(crate) fn clean(&self) -> bool {
        self.double_runs.is_empty()
            && self.lost.is_empty()
            && self.stranded.is_empty()
            && self.tallies_off.is_empty()
    }
}

struct Slot {
    index: usize,
    incarnation: usize,
    child: Option<Child>,
    histories: Vec<(PathBuf, Option<u64>)>,
    proxy: Proxy,
}

struct PgDrill {
    args: PgDrillArgs,
    dir: PathBuf,
    queue: String,
    server: Arc<PostgresServer>,
    exe: PathBuf,
    slots: Vec<Slot>,
    faults: BTreeMap<String, u64>,
}

fn rand_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(fastrand::u64(lo..hi))
}

/// Runs the drill and returns its report (also written to `<dir>/report.json`).
pub(crate) async fn run(args: PgDrillArgs) -> anyhow::Result<PgReport> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    fastrand::seed(seed);
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dcs-pg-chaos-{}-{seed}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("postgres drill: seed {seed}, files in {}", dir.display());
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await?
        .context("starting a private PostgreSQL server")?;
    let mut slots = Vec::new();
    for index in 0..args.workers {
        let proxy = Proxy::start(
            &format!("pg-worker-{index}"),
            format!("127.0.0.1:{}", server.port),
        )
        .await?;
        slots.push(Slot {
            index,
            incarnation: 0,
            child: None,
            histories: Vec::new(),
            proxy,
        });
    }
    let drill = PgDrill {
        queue: format!("pgchaos{}", seed % 1_000_000),
        exe: std::env::current_exe()?,
        server: Arc::new(server),
        faults: BTreeMap::new(),
        slots,
        dir,
        args,
    };
    drill.go(seed).await
}

impl PgDrill {
    fn config(&self) -> anyhow::Result<QueueConfig> {
        Ok(QueueConfig::builder()
            .queue_name(&self.queue)
            .retention(Duration::from_secs(3600))
            .build()?)
    }

    /// A backend straight to the server (producers, the operator, the checks).
    async fn direct(&self) -> anyhow::Result<PostgresBackend> {
        let pg = PostgresConfig::new(self.server.url())?.schema(SCHEMA)?;
        Ok(PostgresBackend::builder(pg)
            .queue(self.config()?)
            .migrate(true)
            .max_connections(8)
            .connect()
            .await?)
    }

    async fn spawn_worker(&mut self, slot: usize) -> anyhow::Result<()> {
        let s = &mut self.slots[slot];
        s.incarnation += 1;
        let history = self
            .dir
            .join(format!("worker-{}-{}.history", s.index, s.incarnation));
        let log = std::fs::File::create(
            self.dir
                .join(format!("worker-{}-{}.log", s.index, s.incarnation)),
        )?;
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", s.proxy.port);
        let child = Command::new(&self.exe)
            .arg("worker")
            .args(["--url", &url, "--schema", SCHEMA, "--queue", &self.queue])
            .args(["--concurrency", "16"])
            .arg("--history")
            .arg(&history)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        s.histories.push((history, None));
        s.child = Some(child);
        Ok(())
    }

    async fn kill_worker(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if let Some(mut child) = s.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(last) = s.histories.last_mut() {
                last.1 = Some(history::now_us());
            }
        }
    }

    fn injected(&self) -> u64 {
        self.faults.values().sum()
    }

    async fn go(mut self, seed: u64) -> anyhow::Result<PgReport> {
        let direct = self.direct().await?;
        for slot in 0..self.slots.len() {
            self.spawn_worker(slot).await?;
        }
        let stop = queue_worker::CancellationToken::new();
        let accepted = Arc::new(Mutex::new(Vec::<JobId>::new()));
        let again = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let producers: Vec<_> = (0..self.args.producers)
            .map(|_| {
                tokio::spawn(produce(
                    direct.clone(),
                    stop.clone(),
                    Arc::clone(&accepted),
                    Arc::clone(&again),
                ))
            })
            .collect();
        let started = Instant::now();
        let planned = Duration::from_secs(self.args.seconds);
        while started.elapsed() < planned
            || (self.injected() < self.args.min_faults && started.elapsed() < planned * 3)
        {
            tokio::time::sleep(rand_ms(500, 1500)).await;
            self.inject(&direct).await?;
        }
        stop.cancel();
        for p in producers {
            p.await?;
        }
        // Heal: every proxy clean, every worker running, the server up.
        let _ = tokio::task::spawn_blocking({
            let server = Arc::clone(&self.server);
            move || server.up()
        })
        .await?;
        for slot in 0..self.slots.len() {
            self.slots[slot].proxy.reset(Duration::ZERO).await?;
            if self.slots[slot].child.is_none() {
                self.spawn_worker(slot).await?;
            }
        }
        let enqueued = accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let drain_started = Instant::now();
        check::drain(&direct, Duration::from_secs(self.args.drain_seconds)).await?;
        let drain_seconds = drain_started.elapsed().as_secs_f64();
        for slot in 0..self.slots.len() {
            self.kill_worker(slot).await;
        }
        let mut report = check::report(&direct, &enqueued, self.histories()).await?;
        report.seed = seed;
        report.dir = self.dir.display().to_string();
        report.seconds = started.elapsed().as_secs();
        report.enqueues_sent_again = again.load(std::sync::atomic::Ordering::Relaxed);
        report.faults = self.faults.clone();
        report.drain_seconds = drain_seconds;
        std::fs::write(
            self.dir.join("report.json"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        Ok(report)
    }

    fn histories(&self) -> Vec<(PathBuf, Option<u64>)> {
        self.slots
            .iter()
            .flat_map(|s| s.histories.iter().cloned())
            .collect()
    }

    /// One fault, chosen at random.
    async fn inject(&mut self, direct: &PostgresBackend) -> anyhow::Result<()> {
        let slot = fastrand::usize(..self.slots.len());
        let name = match fastrand::u32(..100) {
            0..=19 => {
                self.kill_worker(slot).await;
                tokio::time::sleep(rand_ms(200, 1000)).await;
                self.spawn_worker(slot).await?;
                "worker SIGKILL"
            }
            20..=31 => {
                let server = Arc::clone(&self.server);
                tokio::task::spawn_blocking(move || -> queue_core::Result<()> {
                    server.crash()?;
                    std::thread::sleep(rand_ms(300, 1500));
                    server.up()
                })
                .await??;
                "server crash (stop -m immediate) and restart"
            }
            32..=45 => {
                let kind = ToxicKind::Latency {
                    latency: 300,
                    jitter: 200,
                };
                self.slots[slot]
                    .proxy
                    .toxic(kind, true, rand_ms(1000, 3000))
                    .await?;
                "latency, then reset"
            }
            46..=57 => {
                let kind = ToxicKind::Timeout { timeout: 600_000 };
                self.slots[slot]
                    .proxy
                    .toxic(kind, true, rand_ms(2500, 5000))
                    .await?;
                "black hole longer than the lease, then reset"
            }
            58..=67 => {
                let kind = ToxicKind::Timeout { timeout: 600_000 };
                self.slots[slot]
                    .proxy
                    .toxic(kind, false, rand_ms(500, 2500))
                    .await?;
                "replies dropped, then reset"
            }
            68..=79 => {
                hold_locks(direct, &self.queue, rand_ms(1000, 3000)).await?;
                "a transaction holding the queue's row and jobs locked"
            }
            80..=89 => {
                self.statement_timeout(rand_ms(1000, 2500)).await?;
                "statement timeout of 3 ms on new connections"
            }
            _ => {
                self.slots[slot].proxy.reset(rand_ms(100, 1000)).await?;
                "connections reset"
            }
        };
        *self.faults.entry(name.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Every new session gets a 3 ms statement timeout for `period`; the workers'
    /// connections are reset at its start and its end, so theirs do.
    async fn statement_timeout(&mut self, period: Duration) -> anyhow::Result<()> {
        let admin = |sql: &'static str| {
            let url = self.server.url();
            async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query(sql).execute(&mut conn).await?;
                conn.close().await?;
                anyhow::Ok(())
            }
        };
        admin("ALTER DATABASE postgres SET statement_timeout = '3ms'").await?;
        for s in &mut self.slots {
            s.proxy.reset(Duration::ZERO).await?;
        }
        tokio::time::sleep(period).await;
        admin("ALTER DATABASE postgres RESET statement_timeout").await?;
        for s in &mut self.slots {
            s.proxy.reset(Duration::ZERO).await?;
        }
        Ok(())
    }
}

/// Locks the queue's row (claims wait on it) and a few queued jobs for `period`, then
/// rolls back.
async fn hold_locks(b: &PostgresBackend, queue: &str, period: Duration) -> anyhow::Result<()> {
    let Ok(mut tx) = b.pool().begin().await else {
        return Ok(());
    };
    let held: anyhow::Result<()> = async {
        sqlx::query(&format!(
            "SELECT 1 FROM \"{SCHEMA}\".queues WHERE queue = $1 FOR UPDATE"
        ))
        .bind(queue)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "SELECT 1 FROM \"{SCHEMA}\".jobs WHERE queue = $1 AND finished_ms IS NULL \
             LIMIT 5 FOR UPDATE SKIP LOCKED"
        ))
        .bind(queue)
        .execute(&mut *tx)
        .await?;
        tokio::time::sleep(period).await;
        Ok(())
    }
    .await;
    let _ = tx.rollback().await;
    // A server crash under it is a fault of its own, not the drill's failure.
    if let Err(e) = held {
        tracing::warn!(error = %e, "the lock holder's transaction failed");
    }
    Ok(())
}

/// Enqueues drill jobs until `stop`, each under an id of its own, sent again after an
/// error until it is answered.
async fn produce(
    b: PostgresBackend,
    stop: queue_worker::CancellationToken,
    accepted: Arc<Mutex<Vec<JobId>>>,
    again: Arc<std::sync::atomic::AtomicU64>,
) {
    while !stop.is_cancelled() {
        let task = Task {
            ms: fastrand::u64(5..150),
            fail: fastrand::u32(..10) == 0,
            progress: fastrand::u32(..5) == 0,
        };
        let id = JobId::new();
        let job = NewJob::new("work", &task)
            .expect("a task encodes")
            .job_id(id);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match b.enqueue(job.clone()).await {
                Ok(_) => {
                    accepted.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "enqueue failed; sent again");
                    again.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "enqueue failed for a minute; giving up on it");
                    break;
                }
            }
        }
        tokio::time::sleep(rand_ms(5, 25)).await;
    }
}
