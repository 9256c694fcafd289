//! The job states stored in `apalis.jobs.status`.
//!
//! apalis-postgres's own vocabulary is `Pending | Queued | Running | Done | Failed | Killed`.
//! tierflow uses `Pending`, `Running`, `Done` and `Failed` in apalis's sense and adds two terminal
//! states apalis lacks: `Cancelled` (superseded work that must never run) and `Dead` (attempts
//! spent; kept with its last error until an operator re-drives it).
//!
//! ```text
//! Pending ──claim──▶ Running ──ok──▶ Done
//!    ▲                  │ error, attempts left
//!    └──── Failed ◀─────┘ (run_at moved by backoff)
//! Pending/Failed ──cancel──▶ Cancelled          Running ──last attempt fails──▶ Dead
//! ```

use std::fmt;

/// A job's state, as stored and as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub enum JobState {
    /// Waiting for its `run_at`.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Finished.
    Done,
    /// Failed an attempt; waits for its backoff `run_at`.
    Failed,
    /// Superseded before it ran; never runs.
    Cancelled,
    /// Attempts spent; never retried automatically.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        Self::Pending,
        Self::Running,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
        Self::Dead,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Done => "Done",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
            Self::Dead => "Dead",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// States a job has not yet started from: the ones cancel may take.
    pub fn not_started() -> [&'static str; 2] {
        [Self::Pending.as_str(), Self::Failed.as_str()]
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: the CLI's table aligns states with `{:<9}`.
        f.pad(self.as_str())
    }
}

/// For reading `apalis.jobs.status` (`#[sqlx(try_from = "String")]`): a state tierflow never
/// writes is an error, not a silent string.
impl TryFrom<String> for JobState {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("unknown job state '{s}'"))
    }
}
