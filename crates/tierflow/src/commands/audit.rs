//! `tierflow audit <tenant>`: a tenant's audit trail, oldest first — what changed, who stated it,
//! who was authenticated for it, and why.

use chrono::{DateTime, Utc};
use clap::Args;
use tierflow_domain::ids::TenantId;
use tierflow_store::audit::{AuditFilter, page};

use crate::cli::{DatabaseArgs, OutputArgs};
use crate::database;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The tenant's id.
    pub tenant_id: String,
    /// Only this kind of change: a family (transition, override, action, hold, tier) or one
    /// action (transition.downgrade).
    #[arg(long, env = "TIERFLOW_AUDIT_KIND")]
    pub kind: Option<String>,
    /// Only changes at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, env = "TIERFLOW_AUDIT_SINCE")]
    pub since: Option<DateTime<Utc>>,
    /// Only changes before this time (RFC 3339).
    #[arg(long, env = "TIERFLOW_AUDIT_UNTIL")]
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows (the oldest first).
    #[arg(long, env = "TIERFLOW_AUDIT_LIMIT", default_value_t = 1000)]
    pub limit: i64,
    #[command(flatten)]
    pub out: OutputArgs,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let id = TenantId::parse(args.tenant_id)?;
    if !(1..=100_000).contains(&args.limit) {
        anyhow::bail!("--limit is {}; use 1 to 100000", args.limit);
    }
    let db = database::connect(&args.db).await?;
    let mut conn = db.pool.acquire().await?;
    if !tierflow_store::tenants::exists(&mut conn, &id).await? {
        anyhow::bail!("tenant '{id}' is not known");
    }
    let filter = AuditFilter {
        kind: args.kind,
        since: args.since,
        until: args.until,
    };
    let rows = page(&mut conn, id.as_str(), &filter, None, args.limit).await?;
    if args.out.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<26} {:<20} {:<28} REASON",
        "OCCURRED AT", "ACTION", "ACTOR", "PRINCIPAL"
    );
    for r in rows {
        println!(
            "{:<24} {:<26} {:<20} {:<28} {}",
            r.occurred_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            r.action,
            r.actor,
            format!("{} ({})", r.principal.name, r.principal.role.as_str()),
            r.reason.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
