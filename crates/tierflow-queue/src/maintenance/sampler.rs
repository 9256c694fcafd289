//! Samples gauges from the database for every replica to publish: queue depth
//! ([`crate::depth`]) and the extra gauges a fleet registers with `Fleet::sample_sql`.

use sqlx::PgPool;

use super::elector::Fence;
use crate::{QueueError, depth};

/// What the leader samples.
#[derive(Debug, Clone)]
pub struct Samplers {
    pub kinds: Vec<&'static str>,
    /// Extra gauges: a metric name and a query returning one `float8` row.
    pub sql: Vec<(&'static str, &'static str)>,
}

impl Samplers {
    /// One sampling round under `fence`; a failing extra gauge is logged and skipped.
    pub async fn run_once(&self, pool: &PgPool, fence: &Fence) -> Result<(), QueueError> {
        depth::sample(pool, &self.kinds, fence).await?;
        for (metric, sql) in &self.sql {
            let value: Result<f64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(*sql))
                .fetch_one(pool)
                .await;
            let stored = match value {
                Ok(v) => depth::store(pool, fence, &[(metric, serde_json::json!({}), v)]).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = stored {
                tracing::warn!(metric, error = %e, "sampling failed");
            }
        }
        Ok(())
    }
}
