//! Faults injected into a running drill: a proxy's toxics, killed servers and workers.

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) enum Fault {
    KillWorker,
    RestartRedis,
    FlushScripts,
    Latency,
    BlackHole,
    DropReplies,
    Reset,
    Failover,
    Migrate,
    Resize,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::KillWorker => "worker SIGKILL",
            Self::RestartRedis => "redis crash and restart",
            Self::FlushScripts => "scripts and functions flushed",
            Self::Latency => "latency, then reset",
            Self::BlackHole => "black hole longer than the lease, then reset",
            Self::DropReplies => "replies dropped, then reset",
            Self::Reset => "connections reset",
            Self::Failover => "master failover",
            Self::Migrate => "slot migration",
            Self::Resize => "partitions resized",
        }
    }
}

impl Drill {
    /// Faults injected so far (keys moved by a slot migration are not faults of their own).
    pub(super) fn injected(&self) -> u64 {
        self.faults
            .iter()
            .filter(|(k, _)| k.as_str() != "keys migrated")
            .map(|(_, v)| v)
            .sum()
    }

    /// One fault, chosen at random among what this deployment allows.
    pub(super) async fn inject(&mut self) -> anyhow::Result<()> {
        let slot = fastrand::usize(..self.slots.len());
        let roll = fastrand::u32(..100);
        let fault = match (&self.deployment, roll) {
            (_, 0..=19) => Fault::KillWorker,
            (Deployment::Standalone(_), 20..=29) => Fault::RestartRedis,
            (Deployment::Standalone(_), 30..=39) => Fault::FlushScripts,
            (Deployment::Standalone(_), 40..=54) => Fault::Latency,
            (Deployment::Standalone(_), 55..=69) => Fault::BlackHole,
            (Deployment::Standalone(_), 70..=84) => Fault::DropReplies,
            (Deployment::Standalone(_), _) => Fault::Reset,
            (Deployment::Cluster(_), 20..=29) if self.partitioned.is_some() && self.args.resize => {
                Fault::Resize
            }
            (Deployment::Cluster(_), 20..=49) => Fault::Failover,
            (Deployment::Cluster(_), 50..=84) => Fault::Migrate,
            (Deployment::Cluster(_), _) => Fault::FlushScripts,
        };
        self.count(fault.name());
        // One partition's slot (the queue's own without partitions).
        let tags = self.tags();
        let queue_key = format!("dcs:{{{}}}:st:queued", tags[fastrand::usize(..tags.len())]);
        match fault {
            Fault::KillWorker => {
                self.kill_worker(slot).await;
                tokio::time::sleep(rand_ms(200, 1000)).await;
                self.spawn_worker(slot).await?;
            }
            Fault::RestartRedis => {
                if let Deployment::Standalone(redis) = &mut self.deployment {
                    redis.crash_and_restart(rand_ms(300, 1500)).await;
                }
            }
            Fault::FlushScripts => match &self.deployment {
                Deployment::Standalone(redis) => redis.flush_scripts(),
                Deployment::Cluster(cluster) => cluster.flush_scripts(),
            },
            Fault::Latency => {
                let kind = ToxicKind::Latency {
                    latency: 400,
                    jitter: 300,
                };
                self.toxic(slot, kind, true, rand_ms(1000, 3000)).await?;
            }
            Fault::BlackHole => {
                let kind = ToxicKind::Timeout { timeout: 600_000 };
                self.toxic(slot, kind, true, rand_ms(2500, 5000)).await?;
            }
            Fault::DropReplies => {
                let kind = ToxicKind::Timeout { timeout: 600_000 };
                self.toxic(slot, kind, false, rand_ms(500, 2500)).await?;
            }
            Fault::Reset => {
                if let Some(proxy) = self.slots[slot].proxy.as_mut() {
                    proxy.reset(rand_ms(100, 1000)).await?;
                }
            }
            Fault::Failover => {
                if let Deployment::Cluster(cluster) = &self.deployment {
                    cluster.failover(cluster.slot(&queue_key)?).await?;
                }
            }
            Fault::Migrate => {
                if let Deployment::Cluster(cluster) = &self.deployment {
                    let moved = cluster.migrate(cluster.slot(&queue_key)?).await?;
                    *self.faults.entry("keys migrated".into()).or_default() += moved as u64;
                }
            }
            Fault::Resize => {
                if let Some(queue) = &self.partitioned {
                    queue
                        .resize(fastrand::u32(1..=self.args.partitions + 2))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// A toxic on one worker's proxy (both directions, or replies only) for `period`; it
    /// ends with the proxy's connections reset, as a real network fault would.
    pub(super) async fn toxic(
        &mut self,
        slot: usize,
        kind: ToxicKind,
        both: bool,
        period: Duration,
    ) -> anyhow::Result<()> {
        let Some(proxy) = self.slots[slot].proxy.as_mut() else {
            return Ok(());
        };
        proxy.toxic(kind, both, period).await
    }
}
