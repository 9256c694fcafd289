//! Queue upkeep that runs once per fleet, on the replica that holds the maintenance lease
//! ([`elector`]): the [`rescuer`] (orphaned and lost jobs), the [`cleaner`] (retention) and the
//! [`sampler`] (depth gauges).
//!
//! Each service is its own task on its own schedule, with a jittered first start, and does a
//! bounded amount of work per round, so none waits on another: a prune of a million rows does not
//! delay a rescue. Every statement carries the leader's [`elector::Fence`], so a replica that lost
//! the lease (frozen, partitioned) changes nothing when it wakes, and is safe to overlap with
//! another replica's (`SKIP LOCKED`).

pub mod cleaner;
pub mod elector;
pub mod rescuer;
pub mod sampler;

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::QueueError;
use elector::{Fence, Leadership};

/// What one round of a service reports: whether work was left for an immediate next round.
pub(crate) enum Round {
    Finished,
    MoreLeft,
}

impl Round {
    /// [`Round::MoreLeft`] when `more` is true.
    pub(crate) fn more_left_if(more: bool) -> Round {
        if more {
            Round::MoreLeft
        } else {
            Round::Finished
        }
    }
}

/// Runs `round` every `interval` while this replica leads (at once again while it reports
/// [`Round::MoreLeft`]), from a random point in the first interval, until `stop`.
pub(crate) fn spawn_service<F, Fut>(
    set: &mut JoinSet<()>,
    name: &'static str,
    leadership: Leadership,
    interval: Duration,
    stop: CancellationToken,
    mut round: F,
) where
    F: FnMut(Fence) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Round, QueueError>> + Send,
{
    set.spawn(async move {
        // Jitter: replicas that start together do not all hit the database in the same instant.
        let mut wait = interval.mul_f64(rand::random::<f64>());
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = interval;
            let Some(fence) = leadership.current() else {
                continue;
            };
            match round(fence).await {
                Ok(Round::MoreLeft) => wait = Duration::ZERO,
                Ok(Round::Finished) if failing => {
                    tracing::info!(service = name, "maintenance round succeeded again");
                    failing = false;
                }
                Ok(Round::Finished) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(service = name, error = %e, "maintenance round failed; retrying next round");
                    }
                    failing = true;
                }
            }
        }
    });
}
