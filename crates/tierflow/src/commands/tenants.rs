//! `tierflow tenants provision|hold|release|show` and `tierflow transitions list`.

use clap::{Args, Subcommand};
use tierflow_domain::ids::{Actor, HoldName, Reason, TenantId, TierId};
use tierflow_domain::restriction::Restriction;
use tierflow_store::holds::{HoldRequest, lift_hold, place_hold};
use tierflow_store::transitions::{ProvisionRequest, history, provision_tenant};

use super::worker::store_context;
use crate::cli::{DatabaseArgs, EventArgs, OutputArgs};
use crate::database;

#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(subcommand)]
    pub command: TenantsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant on its first tier.
    Provision {
        /// The tenant's id, e.g. acme-42.
        tenant_id: String,
        /// The first tier.
        #[arg(long, env = "TIERFLOW_TIER")]
        tier: String,
        /// Who asks (for the audit trail).
        #[arg(long, env = "TIERFLOW_ACTOR", default_value = "cli")]
        actor: String,
        /// Why (for the audit trail).
        #[arg(long, env = "TIERFLOW_REASON")]
        reason: Option<String>,
        /// When the entitlement expires (RFC 3339): then status `expired`, every restriction on.
        #[arg(long, env = "TIERFLOW_EXPIRES_AT")]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// A test clock for the tenant to live by (`tierflow clock create`).
        #[arg(long, env = "TIERFLOW_TEST_CLOCK")]
        test_clock: Option<uuid::Uuid>,
    },
    /// Place a named hold (compliance, fraud review): its flags stay on through every transition
    /// until it is released.
    Hold {
        /// The tenant's id.
        tenant_id: String,
        /// The hold's name: lowercase letters, digits, '-' and '_'.
        #[arg(long, env = "TIERFLOW_HOLD_NAME")]
        name: String,
        /// A flag to hold (repeat, or comma-separate): voice_disabled, sla_frozen,
        /// escalation_frozen, routing_degraded [default: all four].
        #[arg(
            long = "restrict",
            env = "TIERFLOW_HOLD_RESTRICT",
            value_delimiter = ','
        )]
        restrictions: Vec<String>,
        /// Why (for the audit trail; required).
        #[arg(long, env = "TIERFLOW_REASON")]
        reason: String,
        /// Who asks (for the audit trail).
        #[arg(long, env = "TIERFLOW_ACTOR", default_value = "cli")]
        actor: String,
    },
    /// Release a named hold: only its own flags go off.
    Release {
        /// The tenant's id.
        tenant_id: String,
        /// The hold's name.
        #[arg(long, env = "TIERFLOW_HOLD_NAME")]
        name: String,
        /// Why (for the audit trail).
        #[arg(long, env = "TIERFLOW_REASON")]
        reason: Option<String>,
        /// Who asks (for the audit trail).
        #[arg(long, env = "TIERFLOW_ACTOR", default_value = "cli")]
        actor: String,
    },
    /// Show what a tenant may do now, with the source of every value.
    Show {
        /// The tenant's id.
        tenant_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub async fn run(args: TenantsArgs) -> anyhow::Result<()> {
    let db = database::connect(&args.db).await?;
    let ctx = store_context(&args.events).acting_as(super::operator());
    let mut conn = db.pool.acquire().await?;
    match args.command {
        TenantsCommand::Provision {
            tenant_id,
            tier,
            actor,
            reason,
            expires_at,
            test_clock,
        } => {
            let out = provision_tenant(
                &mut conn,
                &ctx,
                ProvisionRequest {
                    tenant_id: TenantId::parse(tenant_id)?,
                    tier_id: TierId::parse(tier)?,
                    reason: reason.map(Reason::parse).transpose()?,
                    requested_by: Actor::parse(actor)?,
                    expires_at,
                    test_clock_id: test_clock,
                },
            )
            .await?;
            println!(
                "tenant {} provisioned on {} (transition {})",
                out.entitlement.tenant_id, out.entitlement.tier_id, out.transition.id
            );
        }
        TenantsCommand::Hold {
            tenant_id,
            name,
            restrictions,
            reason,
            actor,
        } => {
            let out = place_hold(
                &mut conn,
                &ctx,
                HoldRequest {
                    tenant_id: TenantId::parse(tenant_id)?,
                    name: HoldName::parse(name)?,
                    restrictions: restrictions
                        .iter()
                        .map(|r| Restriction::parse(r.trim()))
                        .collect::<Result<_, _>>()?,
                    reason: Reason::parse(reason)?,
                    requested_by: Actor::parse(actor)?,
                },
            )
            .await?;
            let flags: Vec<&str> = out.hold.restrictions.iter().map(|r| r.as_str()).collect();
            println!(
                "hold {} placed on {} ({}); version {}",
                out.hold.name,
                out.entitlement.tenant_id,
                flags.join(", "),
                out.entitlement.version
            );
        }
        TenantsCommand::Release {
            tenant_id,
            name,
            reason,
            actor,
        } => {
            let out = lift_hold(
                &mut conn,
                &ctx,
                &TenantId::parse(tenant_id)?,
                &HoldName::parse(name)?,
                &Actor::parse(actor)?,
                reason.map(Reason::parse).transpose()?.as_ref(),
            )
            .await?;
            let still: Vec<&str> = out
                .entitlement
                .restriction_sources
                .keys()
                .map(|r| r.as_str())
                .collect();
            println!(
                "hold {} released from {}; version {}; restrictions still on: {}",
                out.hold.name,
                out.entitlement.tenant_id,
                out.entitlement.version,
                if still.is_empty() {
                    "none".to_owned()
                } else {
                    still.join(", ")
                }
            );
        }
        TenantsCommand::Show { tenant_id, out } => {
            let id = TenantId::parse(tenant_id)?;
            let e = tierflow_store::tenants::effective(&mut conn, &ctx, &id).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
                return Ok(());
            }
            println!("tenant    {}", e.tenant_id);
            println!(
                "tier      {} ({}, {})",
                e.tier_id,
                e.tier_name,
                e.category.as_str()
            );
            println!(
                "status    {}   version {}   since {}",
                e.status, e.version, e.effective_at
            );
            if let Some(p) = &e.pending_downgrade {
                println!(
                    "pending   downgrade to {} at {} (transition {})",
                    p.to_tier, p.grace_ends_at, p.transition_id
                );
            }
            for (r, sources) in &e.restriction_sources {
                let held: Vec<String> = sources.iter().map(|s| s.key()).collect();
                println!("restricted {:<18} held by {}", r.as_str(), held.join(", "));
            }
            println!("\n{:<18} {:<10} SOURCE", "FEATURE", "VALUE");
            for (name, v) in &e.features {
                println!(
                    "{name:<18} {:<10} {}",
                    if v.value { "on" } else { "off" },
                    provenance(&v.provenance)
                );
            }
            println!("\n{:<18} {:<10} SOURCE", "LIMIT", "VALUE");
            for (name, v) in &e.limits {
                let value = v.value.map_or("unlimited".to_owned(), |l| l.to_string());
                println!("{name:<18} {value:<10} {}", provenance(&v.provenance));
            }
        }
    }
    Ok(())
}

fn provenance(p: &tierflow_domain::effective::Provenance) -> String {
    use tierflow_domain::effective::Provenance::*;
    match p {
        Plan { tier_id } => format!("plan {tier_id}"),
        Override {
            override_id,
            expires_at,
        } => format!("override {override_id} until {expires_at}"),
        Restriction {
            restriction,
            held_by,
        } => {
            let held: Vec<String> = held_by.iter().map(|s| s.key()).collect();
            format!("restriction {} ({})", restriction.as_str(), held.join(", "))
        }
    }
}

#[derive(Debug, Args)]
pub struct TransitionsArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub command: TransitionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TransitionsCommand {
    /// A tenant's transitions, newest first.
    List {
        /// The tenant's id.
        tenant_id: String,
        /// At most this many rows.
        #[arg(long, env = "TIERFLOW_TRANSITIONS_LIMIT", default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        out: OutputArgs,
    },
}

pub async fn run_transitions(args: TransitionsArgs) -> anyhow::Result<()> {
    let db = database::connect(&args.db).await?;
    let mut conn = db.pool.acquire().await?;
    let TransitionsCommand::List {
        tenant_id,
        limit,
        out,
    } = args.command;
    let id = TenantId::parse(tenant_id)?;
    if !tierflow_store::tenants::exists(&mut conn, &id).await? {
        anyhow::bail!("tenant '{id}' is not known");
    }
    let rows = history(&mut conn, &id, limit.clamp(1, 1000), None).await?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<36} {:<12} {:<9} {:<24} {:<26} {:>7}",
        "ID", "KIND", "STATUS", "FROM → TO", "REQUESTED AT", "VERSION"
    );
    for t in rows {
        let from = t
            .from_tier
            .as_ref()
            .map_or("-".to_owned(), |f| f.to_string());
        println!(
            "{:<36} {:<12} {:<9} {:<24} {:<26} {:>7}",
            t.id.to_string(),
            t.kind.as_str(),
            t.status.as_str(),
            format!("{from} → {}", t.to_tier),
            t.requested_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            t.tenant_version
        );
    }
    Ok(())
}
