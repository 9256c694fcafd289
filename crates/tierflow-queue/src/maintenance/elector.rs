//! Picks the replica that runs maintenance: whoever holds the lease row `tierflow_leadership`
//! named [`MAINTENANCE`], fenced by a term.
//!
//! The lease has an expiry by the database clock. The leader renews it every `renew_every`; any
//! replica may take it once it has expired, and taking it bumps the term. A leader that is frozen
//! (SIGSTOP, a VM pause) or cut off by a partition cannot renew, so it loses leadership within the
//! TTL whatever its TCP session does — a session advisory lock, which this replaced, stayed held
//! for as long as the session lived (hours, behind a partition). When the old leader wakes up:
//! - it stops acting at once: its own view of the lease ([`Lead::valid_until`], a monotonic
//!   deadline a little shorter than the database's) has passed, so [`Leadership::current`] says
//!   nobody leads here; its next renewal finds another leader and steps down;
//! - anything it had already sent changes nothing: every maintenance statement carries its
//!   [`Fence`] (leader id and term) and runs only while that lease is the live one, share-locking
//!   the row so a takeover cannot slip in while the statement runs (`lead_cte!`).
//!
//! This is River's `internal/leadership` design: the database lease expiry is the safety net, the
//! local deadline only makes stepping down prompt.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::QueueError;

/// The name of the maintenance lease row.
pub const MAINTENANCE: &str = "maintenance";
/// How long a lease lasts without renewal: a frozen or cut-off leader is replaced within it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How often the leader renews (and a follower tries to take an expired lease).
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(1);

/// The SQL of the `WITH` item `lead` a fenced maintenance statement starts with: it yields a row
/// only while lease `$1` is held by leader `$2` under term `$3` and has not expired, and
/// share-locks that row, so the lease cannot change hands until the statement's transaction ends.
/// A statement uses it as `concat!("WITH ", lead_cte!(), ", … WHERE EXISTS (SELECT 1 FROM lead)")`
/// and binds [`Fence::bind`] first.
macro_rules! lead_cte {
    () => {
        "lead AS (SELECT 1 FROM tierflow_leadership
                   WHERE name = $1 AND leader_id = $2 AND term = $3 AND expires_at > now()
                   FOR SHARE)"
    };
}
pub(crate) use lead_cte;

/// A leader's right to run maintenance: its id and the term it was elected in. Statements carry
/// it (binds `$1`–`$3` of `lead_cte!`) so that a deposed leader's late writes change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub leader_id: Arc<str>,
    pub term: i64,
}

impl Fence {
    /// Binds the fence as parameters `$1`–`$3` of `query`.
    pub fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(MAINTENANCE)
            .bind(self.leader_id.as_ref())
            .bind(self.term)
    }

    /// [`Fence::bind`] for a query without typed output.
    pub fn bind_query<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(MAINTENANCE)
            .bind(self.leader_id.as_ref())
            .bind(self.term)
    }
}

impl Fence {
    /// Takes the lease row `FOR SHARE` in the caller's transaction if this fence still leads:
    /// until that transaction ends no other replica can take the lease over, so every statement
    /// the caller runs after a `true` is the leader's. For maintenance outside this crate (a
    /// domain reconciler) whose statements cannot each carry `lead_cte!`.
    pub async fn hold(&self, conn: &mut sqlx::PgConnection) -> Result<bool, crate::QueueError> {
        let held: Option<i32> = self
            .bind(sqlx::query_as(concat!(
                "WITH ",
                lead_cte!(),
                " SELECT 1 FROM lead"
            )))
            .fetch_optional(conn)
            .await?
            .map(|(one,): (i32,)| one);
        Ok(held.is_some())
    }
}

/// This replica's lead, while it has one.
#[derive(Debug, Clone)]
pub struct Lead {
    pub fence: Fence,
    /// Past this instant (monotonic, so it runs on while the process is frozen) the lead is not
    /// trusted until renewed.
    pub valid_until: Instant,
}

/// What the maintenance services read: whether this replica leads right now, and under which
/// term.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Lead>>,
}

impl Leadership {
    /// The fence to run maintenance under, if this replica leads now.
    pub fn current(&self) -> Option<Fence> {
        self.rx
            .borrow()
            .as_ref()
            .filter(|l| Instant::now() < l.valid_until)
            .map(|l| l.fence.clone())
    }
}

/// Elector settings.
#[derive(Debug, Clone)]
pub struct ElectorConfig {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl Default for ElectorConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            renew_every: DEFAULT_RENEW_EVERY,
        }
    }
}

impl ElectorConfig {
    /// Checks the settings: the lease must survive a couple of missed renewals.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_every.is_zero() || self.ttl < self.renew_every * 2 {
            return Err(format!(
                "the leadership lease ({:?}) must last at least two renewals ({:?})",
                self.ttl, self.renew_every
            ));
        }
        Ok(())
    }
}

/// Takes or renews the lease for `leader_id` in one statement; `Some(term)` if this replica
/// holds it now. A lease taken over (expired, or another holder) gets the next term; a renewal
/// of a live lease keeps its term.
pub async fn acquire_or_renew(
    pool: &PgPool,
    leader_id: &str,
    ttl: Duration,
) -> Result<Option<i64>, QueueError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO tierflow_leadership AS l (name, leader_id, term, elected_at, expires_at)
         VALUES ($1, $2, 1, now(), now() + make_interval(secs => $3))
         ON CONFLICT (name) DO UPDATE SET
                term = CASE WHEN l.leader_id = EXCLUDED.leader_id AND l.expires_at > now()
                            THEN l.term ELSE l.term + 1 END,
                elected_at = CASE WHEN l.leader_id = EXCLUDED.leader_id AND l.expires_at > now()
                                  THEN l.elected_at ELSE now() END,
                leader_id = EXCLUDED.leader_id,
                expires_at = EXCLUDED.expires_at
          WHERE l.leader_id = EXCLUDED.leader_id OR l.expires_at <= now()
         RETURNING term",
    )
    .bind(MAINTENANCE)
    .bind(leader_id)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?)
}

/// [`acquire_or_renew`] as a [`Fence`] to run maintenance statements under (tools and tests that
/// run a maintenance round by hand).
pub async fn try_lead(
    pool: &PgPool,
    leader_id: &str,
    ttl: Duration,
) -> Result<Option<Fence>, QueueError> {
    Ok(acquire_or_renew(pool, leader_id, ttl)
        .await?
        .map(|term| Fence {
            leader_id: leader_id.into(),
            term,
        }))
}

/// Ends `fence`'s lease now (on shutdown), so another replica takes over at its next try.
pub async fn resign(pool: &PgPool, fence: &Fence) -> Result<bool, QueueError> {
    let done = sqlx::query(
        "UPDATE tierflow_leadership SET expires_at = now()
          WHERE name = $1 AND leader_id = $2 AND term = $3",
    )
    .bind(MAINTENANCE)
    .bind(fence.leader_id.as_ref())
    .bind(fence.term)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Runs the election for this replica until `stop`, publishing its lead to the returned
/// [`Leadership`]; resigns on the way out.
pub fn start(
    pool: PgPool,
    leader_id: Arc<str>,
    config: ElectorConfig,
    stop: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(pool, leader_id, config, tx, stop));
    (Leadership { rx }, task)
}

async fn run(
    pool: PgPool,
    leader_id: Arc<str>,
    config: ElectorConfig,
    tx: watch::Sender<Option<Lead>>,
    stop: CancellationToken,
) {
    // Trust the lease for 90 % of its TTL from the moment the renewal was sent: the database
    // starts its TTL later than that, so the local view always ends first.
    let trusted_for = config.ttl.mul_f64(0.9);
    let mut held: Option<Lead> = None;
    loop {
        let sent = Instant::now();
        let attempt = tokio::time::timeout(
            config.renew_every.max(Duration::from_millis(500)),
            acquire_or_renew(&pool, &leader_id, config.ttl),
        )
        .await;
        let (next, lost_because) = match attempt {
            Ok(Ok(Some(term))) => {
                if held.as_ref().map(|l| l.fence.term) != Some(term) {
                    tracing::info!(
                        term,
                        "this replica now leads queue maintenance (rescuer, cleaner, sampler)"
                    );
                    metrics::gauge!(crate::metrics::LEADER).set(1.0);
                }
                let fence = Fence {
                    leader_id: leader_id.clone(),
                    term,
                };
                let lead = Lead {
                    fence,
                    valid_until: sent + trusted_for,
                };
                (Some(lead), "")
            }
            Ok(Ok(None)) => (None, "another replica holds the lease"),
            Ok(Err(e)) => {
                if held.is_some() {
                    tracing::warn!(error = %e, "could not renew the maintenance lease; leading until it lapses");
                }
                (
                    held.clone().filter(|l| Instant::now() < l.valid_until),
                    "the lease lapsed before it could be renewed",
                )
            }
            Err(_) => (
                held.clone().filter(|l| Instant::now() < l.valid_until),
                "the lease lapsed before it could be renewed (the database did not answer)",
            ),
        };
        if let (Some(old), None) = (&held, &next) {
            // Also what a replica frozen past its lease (SIGSTOP, a VM pause) says on waking.
            tracing::warn!(
                term = old.fence.term,
                reason = lost_because,
                "stepping down from queue maintenance"
            );
            metrics::gauge!(crate::metrics::LEADER).set(0.0);
        }
        held = next;
        tx.send_replace(held.clone());
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.renew_every) => {}
        }
    }
    tx.send_replace(None);
    if let Some(lead) = held {
        match resign(&pool, &lead.fence).await {
            Ok(true) => tracing::info!(
                term = lead.fence.term,
                "resigned queue maintenance leadership"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not resign the maintenance lease; it lapses by itself")
            }
        }
        metrics::gauge!(crate::metrics::LEADER).set(0.0);
    }
}
