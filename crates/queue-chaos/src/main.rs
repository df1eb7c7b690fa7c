//! The chaos drill of the queue: the promise (nothing lost, stranded or run twice at once)
//! checked under injected faults.
//!
//! ```text
//! cargo run --release -p queue-chaos -- drill --seconds 600           # a soak on standalone Redis
//! cargo run --release -p queue-chaos -- drill --cluster --seconds 300 # failovers and resharding
//! cargo run --release -p queue-chaos -- soak --jobs 200000            # retention returns memory
//! cargo run --release -p queue-chaos -- pg-drill --seconds 300         # on a private PostgreSQL
//! ```
//!
//! `drill` starts a private Redis (AOF, fsync always), worker processes behind TCP proxies,
//! producers and an operator, then injects faults at random: worker SIGKILL, Redis crash
//! and restart, SCRIPT/FUNCTION FLUSH, latency, black holes longer than the lease, dropped
//! replies, connection resets (on a cluster: master failovers and slot migrations). Every
//! handler execution is logged; afterwards the checker reports lost, stranded and
//! concurrently double-run jobs and index inconsistencies, and the exit code is non-zero
//! when any is found.

mod big;
mod check;
mod drill;
mod faults;
mod history;
mod pg_drill;
mod soak;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Chaos drill and retention soak of the dcs job queue")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Faults at random against a running queue, then the checks.
    Drill(drill::DrillArgs),
    /// Jobs through at full speed with a short retention; memory must come back.
    Soak(soak::SoakArgs),
    /// The drill on a private PostgreSQL server: its crashes, proxies, locks and timeouts.
    PgDrill(pg_drill::PgDrillArgs),
    /// One worker process (started by the drill).
    Worker(worker::WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Worker(args) => worker::run(args).await,
            Command::Soak(args) => {
                let report = soak::run(args).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.clean() {
                    anyhow::bail!(
                        "memory or keys did not return to the baseline, or the charts' buckets outgrew their bound"
                    );
                }
                Ok(())
            }
            Command::PgDrill(args) => {
                let report = pg_drill::run(args).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.clean() {
                    anyhow::bail!(
                        "the Postgres drill found {} lost, {} stranded, {} double runs and {} miscounted figures",
                        report.lost.len(),
                        report.stranded.len(),
                        report.double_runs.len(),
                        report.tallies_off.len()
                    );
                }
                Ok(())
            }
            Command::Drill(args) => {
                let report = drill::run(args).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                if !report.clean() {
                    anyhow::bail!(
                        "the drill found {} lost, {} stranded, {} double runs, {} dangling and {} unindexed entries, {} schedule problems, {} undelivered webhooks, {} bad signatures",
                        report.state.lost.len(),
                        report.state.stranded.len(),
                        report.double_runs.len(),
                        report.state.dangling.len(),
                        report.state.unindexed.len(),
                        report.schedule.problems.len(),
                        report.webhook.missing.len(),
                        report.webhook.bad_signatures
                    );
                }
                Ok(())
            }
        }
    })
}
