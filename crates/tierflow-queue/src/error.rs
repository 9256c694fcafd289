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
}
