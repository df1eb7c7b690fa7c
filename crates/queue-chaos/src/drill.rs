//! The drill: a private Redis (standalone with AOF, or a cluster with replicas), worker
//! processes behind fault-injecting proxies, producers and an operator, and faults at
//! random until the time is up; then everything is healed, the queue drained, and the
//! history and the final state checked.

mod features;
mod inject;
mod load;

use features::*;
use load::*;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use noxious::toxic::ToxicKind;
use queue_core::backend::MAX_CATCH_UP;
use queue_core::{
    ChildPolicy, Error, Flow, JobId, JobStatus, ListQuery, NewJob, Priority, QueueConfig,
    SharedBackend,
};
use queue_core::{MissedTicks, Schedule, Schedules};
use queue_redis::RedisBackend;
use queue_worker::CancellationToken;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::{
    check::{self, StateReport},
    faults::{Cluster, Proxy, Standalone},
    history::{self, Run},
    worker::Task,
};

/// The drill's settings.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct DrillArgs {
    /// How long faults are injected.
    #[arg(long, default_value_t = 60)]
    pub(crate) seconds: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    pub(crate) workers: usize,
    /// Producer tasks.
    #[arg(long, default_value_t = 2)]
    pub(crate) producers: usize,
    /// Run on a 3-master cluster with replicas (failovers and slot migrations instead of
    /// proxies and restarts).
    #[arg(long)]
    pub(crate) cluster: bool,
    /// Seed of the random choices (printed, to replay a run's choices).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Where logs, histories and the report go (default: a new directory under the
    /// system's temp dir).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// After the faults stop, how long the drain may go without a job finishing before
    /// what is left counts as lost.
    #[arg(long, default_value_t = 120)]
    pub(crate) drain_seconds: u64,
    /// Keep injecting past `--seconds` until this many faults were injected (a loaded
    /// machine injects fewer per second: failovers take longer), for at most 3x as long.
    #[arg(long, default_value_t = 0)]
    pub(crate) min_faults: u64,
    /// Add the big-batch phase: a 10,000-job flow cancelled mid-run, a batch of 20,000
    /// members, and one worker at the most concurrency (see `big.rs`).
    #[arg(long)]
    pub(crate) big: bool,
    /// Run on a queue of this many partitions (README "Partitions").
    #[arg(long, default_value_t = 1)]
    pub(crate) partitions: u32,
    /// With `--partitions`: resizing the queue (to 1 up to P + 2) is one of the faults. A
    /// sequence (or a key, or a group) that the new layout routes elsewhere is split
    /// while its older members drain (README "Resizing"), which the checker reports.
    #[arg(long)]
    pub(crate) resize: bool,
}

/// What the drill found.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The seed of the run.
    pub(crate) seed: u64,
    /// Where its files are.
    pub(crate) dir: String,
    /// Seconds of faults.
    pub(crate) seconds: u64,
    /// Jobs enqueued (accepted).
    pub(crate) enqueued: usize,
    /// Enqueues refused because the unique key was taken.
    pub(crate) refused_duplicates: u64,
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<String, u64>,
    /// Handler executions.
    pub(crate) executions: usize,
    /// Jobs run more than once (after a crash, a lost lease, a retry).
    pub(crate) rerun_jobs: usize,
    /// Executions whose process was killed mid-way.
    pub(crate) killed_executions: usize,
    /// Pairs of executions of one job that overlapped in time.
    pub(crate) double_runs: Vec<String>,
    /// Jobs enqueued into ordered sequences, and the sequences' members that started out
    /// of order or ran at once.
    pub(crate) sequenced: usize,
    pub(crate) sequence_problems: Vec<String>,
    /// The final state.
    pub(crate) state: StateReport,
    /// Seconds the queue took to drain after the faults stopped.
    pub(crate) drain_seconds: f64,
    /// The one-second schedule every worker fired throughout.
    pub(crate) schedule: ScheduleReport,
    /// The webhook every finished job was delivered to.
    pub(crate) webhook: WebhookReport,
    /// The big-batch phase, when it ran (its jobs are in every count above).
    pub(crate) big: Option<crate::big::BigReport>,
}

impl Report {
    /// True when nothing was lost, stranded, run twice at once or left inconsistent.
    pub(crate) fn clean(&self) -> bool {
        self.double_runs.is_empty()
            && self.sequence_problems.is_empty()
            && self.state.clean()
            && self.schedule.problems.is_empty()
            && self.webhook.missing.is_empty()
            && self.webhook.bad_signatures == 0
    }
}

enum Deployment {
    Standalone(Standalone),
    Cluster(Cluster),
}

struct WorkerSlot {
    index: usize,
    incarnation: usize,
    child: Option<Child>,
    /// Each incarnation's history file and, when it was killed, the time of the kill.
    histories: Vec<(PathBuf, Option<u64>)>,
    proxy: Option<Proxy>,
}

struct Drill {
    args: DrillArgs,
    dir: PathBuf,
    queue: String,
    deployment: Deployment,
    exe: PathBuf,
    slots: Vec<WorkerSlot>,
    faults: BTreeMap<String, u64>,
    /// The queue when it has partitions (`--partitions`).
    partitioned: Option<queue_redis::PartitionedBackend>,
}

/// What the run's last phase hands to the report.
struct Ending {
    seed: u64,
    enqueued: Vec<JobId>,
    refused: u64,
    drain_seconds: f64,
    schedule: Option<queue_core::ScheduleRecord>,
    received: Vec<queue_testkit::receiver::Received>,
    /// Deliveries still in the outbox when the drain ended.
    outbox_left: usize,
    big: Option<crate::big::BigReport>,
}

fn rand_ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(fastrand::u64(lo..hi))
}

/// Runs a drill and returns its report (also written to `<dir>/report.json`).
pub(crate) async fn run(args: DrillArgs) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    fastrand::seed(seed);
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("dcs-chaos-{}-{seed}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("chaos drill: seed {seed}, files in {}", dir.display());
    let deployment = if args.cluster {
        let d = dir.join("cluster");
        Deployment::Cluster(
            tokio::task::spawn_blocking(move || Cluster::start(d))
                .await
                .context("cluster task")??,
        )
    } else {
        let d = dir.join("redis");
        Deployment::Standalone(tokio::task::spawn_blocking(move || Standalone::start(d)).await?)
    };
    let drill = Drill {
        queue: format!("chaos{}", seed % 1_000_000),
        exe: std::env::current_exe()?,
        slots: Vec::new(),
        faults: BTreeMap::new(),
        partitioned: None,
        deployment,
        dir,
        args,
    };
    drill.go(seed).await
}

impl Drill {
    fn direct_url(&self) -> String {
        match &self.deployment {
            Deployment::Standalone(s) => s.url(),
            Deployment::Cluster(c) => c.url(),
        }
    }

    /// The hash tag of every partition of the queue (its name alone without partitions).
    fn tags(&self) -> Vec<String> {
        match &self.partitioned {
            Some(queue) => queue.partition_tags(),
            None => vec![self.queue.clone()],
        }
    }

    fn node_urls(&self) -> Vec<String> {
        match &self.deployment {
            Deployment::Standalone(s) => vec![s.url()],
            Deployment::Cluster(c) => c
                .ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
        }
    }

    fn config(&self) -> anyhow::Result<QueueConfig> {
        Ok(QueueConfig::builder()
            .redis_url(&self.direct_url())?
            .queue_name(&self.queue)
            .retention(Duration::from_secs(3600))
            .build()?)
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
        let url = match (&s.proxy, &self.deployment) {
            (Some(proxy), _) => proxy.url(),
            (None, Deployment::Cluster(c)) => c.url(),
            (None, Deployment::Standalone(r)) => r.url(),
        };
        let mut command = Command::new(&self.exe);
        command
            .arg("worker")
            .args(["--url", &url, "--queue", &self.queue]);
        if self.args.big && s.index == 0 {
            // Its idle claims ask for far more jobs than one call takes.
            let most = queue_core::backend::MAX_CONCURRENCY.to_string();
            command.args(["--concurrency", &most]);
        }
        let child = command
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

    fn count(&mut self, fault: &str) {
        *self.faults.entry(fault.to_owned()).or_default() += 1;
    }

    async fn go(mut self, seed: u64) -> anyhow::Result<Report> {
        for index in 0..self.args.workers {
            let proxy = match &self.deployment {
                Deployment::Standalone(s) => Some(
                    Proxy::start(&format!("worker-{index}"), format!("127.0.0.1:{}", s.port))
                        .await?,
                ),
                Deployment::Cluster(_) => None,
            };
            self.slots.push(WorkerSlot {
                index,
                incarnation: 0,
                child: None,
                histories: Vec::new(),
                proxy,
            });
            self.spawn_worker(index).await?;
        }
        let cfg = self.config()?;
        let plain = RedisBackend::connect(&cfg).await?;
        let backend: SharedBackend = if self.args.partitions > 1 {
            let queue = plain.partitioned(self.args.partitions).await?;
            self.partitioned = Some(queue.clone());
            Arc::new(queue)
        } else {
            Arc::new(plain)
        };
        // Half the jobs belong to a publisher (a group); the first may run only two at
        // once: a lost slot or lane would leave its jobs unfinished, which the check sees.
        backend
            .set_group_concurrency(&publisher(0), Some(2))
            .await?;
        // A one-second schedule that every worker process fires through every fault: each
        // tick must end up with exactly one job (missed ticks all run: none may be lost).
        let tick = NewJob::new(
            "work",
            &Task {
                ms: 5,
                fail: false,
                progress: false,
            },
        )?;
        let schedule = Schedule::every(SCHEDULE, Duration::from_secs(1), tick)?
            .missed(MissedTicks::RunEach { max: MAX_CATCH_UP });
        backend.put_schedule(schedule).await?;
        // A webhook for every finished job, to a receiver that fails its first requests:
        // each job's final status must arrive, signed, through every fault.
        let receiver = queue_testkit::receiver::Receiver::start(20).await;
        let hook = queue_core::Webhook::new("chaos", receiver.url.as_str(), WEBHOOK_SECRET)
            .retries(30, Duration::from_millis(200));
        backend.put_webhook(&hook).await?;
        let stop = CancellationToken::new();
        let enqueued: Arc<Mutex<Vec<JobId>>> = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..self.args.producers {
            tasks.push(tokio::spawn(produce(
                backend.clone(),
                stop.clone(),
                Arc::clone(&enqueued),
                Arc::clone(&refused),
                self.partitioned.is_some(),
            )));
        }
        tasks.push(tokio::spawn(operate(
            backend.clone(),
            stop.clone(),
            Arc::clone(&enqueued),
        )));
        let big = self
            .args
            .big
            .then(|| tokio::spawn(crate::big::run(backend.clone())));

        let started = Instant::now();
        let until = started + Duration::from_secs(self.args.seconds);
        let at_most = started + Duration::from_secs(self.args.seconds * 3);
        while Instant::now() < until
            || (self.injected() < self.args.min_faults && Instant::now() < at_most)
        {
            tokio::time::sleep(rand_ms(1500, 3500)).await;
            if let Err(e) = self.inject().await {
                eprintln!("a fault could not be injected: {e:#}");
            }
        }
        // Heal: every proxy fresh, every worker up; stop producing.
        for slot in 0..self.slots.len() {
            if let Some(proxy) = self.slots[slot].proxy.as_mut() {
                proxy.reset(Duration::ZERO).await?;
            }
            if self.slots[slot].child.is_none() {
                self.spawn_worker(slot).await?;
            }
        }
        stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        let (big, big_ids) = match big {
            Some(task) => {
                let (report, ids) = task.await??;
                (Some(report), ids)
            }
            None => (None, Vec::new()),
        };
        enqueued.lock().unwrap().extend(big_ids);
        // No more ticks: the schedule's jobs so far drain with the rest.
        let mut schedule = None;
        for _ in 0..120 {
            match backend.pause_schedule(SCHEDULE).await {
                Ok(record) => {
                    schedule = Some(record);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let drained = Instant::now();
        let ids = enqueued.lock().unwrap().clone();
        self.drain(&backend, &ids).await;
        let drain_seconds = drained.elapsed().as_secs_f64();
        // Deliveries claimed by killed workers come back after their lease (12 s).
        let mut outbox_left = usize::MAX;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let pending = backend.deliveries(false, 1000).await.map(|d| d.len());
            let parked = backend.deliveries(true, 1000).await.map(|d| d.len());
            if let (Ok(p), Ok(k)) = (pending, parked) {
                outbox_left = p + k;
                if outbox_left == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for slot in 0..self.slots.len() {
            self.stop_worker(slot).await;
        }
        self.report(Ending {
            seed,
            enqueued: ids,
            refused: refused.load(Ordering::Relaxed),
            drain_seconds,
            schedule,
            received: receiver.received(),
            outbox_left,
            big,
        })
        .await
    }

    /// Waits until every enqueued job is finished, for as long as the queue keeps draining:
    /// it gives up (and the report says what is left) once its count of unfinished jobs
    /// has not gone down for `--drain-seconds`. A long run leaves a long backlog (the
    /// first publisher runs two jobs at a time), so a fixed limit would call a slow drain
    /// a loss; a stalled one is what the drill is looking for.
    async fn drain(&self, backend: &SharedBackend, ids: &[JobId]) {
        let stall = Duration::from_secs(self.args.drain_seconds);
        let mut fewest = u64::MAX;
        let mut progressed = Instant::now();
        loop {
            if let Ok(s) = backend.stats().await {
                let left = s.queued + s.processing;
                if left < fewest {
                    fewest = left;
                    progressed = Instant::now();
                }
                if left == 0 {
                    let mut all = true;
                    for id in ids.iter().rev().take(200) {
                        if !backend.get(*id).await.is_ok_and(|r| r.status.is_terminal()) {
                            all = false;
                            break;
                        }
                    }
                    if all {
                        return;
                    }
                }
            }
            if progressed.elapsed() > stall {
                eprintln!(
                    "the queue stopped draining: {fewest} jobs unfinished, none finished for {stall:?}"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop_worker(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let Some(mut child) = s.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(last) = s.histories.last_mut() {
                last.1 = Some(history::now_us());
            }
        }
    }

    async fn report(&self, ending: Ending) -> anyhow::Result<Report> {
        let Ending {
            seed,
            enqueued,
            refused,
            drain_seconds,
            schedule,
            received,
            outbox_left,
            big,
        } = ending;
        let mut runs: Vec<Run> = Vec::new();
        for slot in &self.slots {
            for (path, killed) in &slot.histories {
                if path.exists() {
                    runs.extend(history::read(path, *killed)?);
                }
            }
        }
        let double_runs: Vec<String> = history::overlaps(&runs)
            .into_iter()
            .map(|(a, b)| {
                format!(
                    "job {}: {} [{}..{}] and {} from {} (overlap {} µs)",
                    a.job,
                    a.token,
                    a.start,
                    a.end,
                    b.token,
                    b.start,
                    a.end.saturating_sub(b.start)
                )
            })
            .collect();
        let mut per_job: std::collections::HashMap<&str, usize> = Default::default();
        for r in &runs {
            *per_job.entry(r.job.as_str()).or_default() += 1;
        }
        let mut dump = check::Dump::default();
        for tag in self.tags() {
            let prefix = format!("dcs:{{{tag}}}:");
            dump.merge(check::dump(&self.node_urls(), &prefix).await?);
        }
        let mut all: Vec<JobId> = enqueued.clone();
        all.extend(dump.jobs.keys().filter_map(|k| k.parse::<JobId>().ok()));
        all.sort();
        all.dedup();
        let state = check::check(&dump, &all);
        let sequence_problems = check::sequence_order(&dump, &runs);
        let schedule = check_schedule(&dump, schedule.as_ref());
        let webhook = check_webhook(&dump, &received, outbox_left);
        let report = Report {
            seed,
            dir: self.dir.display().to_string(),
            seconds: self.args.seconds,
            enqueued: enqueued.len(),
            refused_duplicates: refused,
            faults: self.faults.clone(),
            executions: runs.len(),
            rerun_jobs: per_job.values().filter(|n| **n > 1).count(),
            killed_executions: runs.iter().filter(|r| !r.finished).count(),
            double_runs,
            sequenced: dump
                .jobs
                .values()
                .filter(|f| f.contains_key("sequence"))
                .count(),
            sequence_problems,
            state,
            drain_seconds,
            schedule,
            webhook,
            big,
        };
        std::fs::write(
            self.dir.join("report.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        Ok(report)
    }
}
