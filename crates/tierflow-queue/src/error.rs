//! [`QueueError`]: what can go wrong writing the queue.

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The payload could not be encoded as JSON (a bug in a payload type).
    #[error("could not encode the {kind} job payload: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The database refused or could not be reached.
    #[error("queue database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A maintenance service registered by the fleet's user failed for its own reason.
    #[error("maintenance service failed: {0}")]
    Service(String),
    /// The database did not answer in time.
    #[error("the database did not answer the {0} in time")]
    Timeout(&'static str),
}

impl QueueError {
    /// Whether retrying cannot help: the database refused the statement for what it is (a missing
    /// table or column, no privilege: SQLSTATE class 42) or who sent it (class 28: the
    /// credentials). Connection trouble and server restarts are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            QueueError::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| c.starts_with("42") || c.starts_with("28")),
            _ => false,
        }
    }
}
