//! `tierflow tiers list|show|seed`.

use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, Subcommand};
use tierflow_domain::ids::TierId;
use tierflow_domain::tier::Tier;

use crate::cli::{DatabaseArgs, OutputArgs};
use crate::database;

#[derive(Debug, Args)]
pub struct TiersArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub command: TiersCommand,
}

#[derive(Debug, Subcommand)]
pub enum TiersCommand {
    /// List every tier by rank.
    List(OutputArgs),
    /// Show one tier with its features and limits.
    Show {
        /// The tier's id, e.g. `professional`.
        tier_id: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Insert the canonical tiers that are missing (never changes existing tiers).
    Seed,
}

pub async fn run(args: TiersArgs) -> anyhow::Result<()> {
    let db = database::connect(&args.db).await?;
    let mut conn = db.pool.acquire().await?;
    match args.command {
        TiersCommand::List(out) => {
            let tiers = tierflow_store::tiers::list(&mut conn).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&tiers)?);
            } else {
                print_table(&tiers);
            }
        }
        TiersCommand::Show { tier_id, out } => {
            let id = TierId::parse(tier_id)?;
            let tier = tierflow_store::tiers::get(&mut conn, &id)
                .await?
                .with_context(|| format!("tier '{id}' is not known; see `tierflow tiers list`"))?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&tier)?);
            } else {
                print_table(std::slice::from_ref(&tier));
                println!("\nfeatures:");
                for (name, on) in &tier.features {
                    println!("  {name:<18} {}", if *on { "on" } else { "off" });
                }
                println!("limits:");
                for (name, limit) in &tier.limits {
                    let v = limit.map_or("unlimited".to_owned(), |l| l.to_string());
                    println!("  {name:<18} {v}");
                }
            }
        }
        TiersCommand::Seed => {
            let n = tierflow_store::tiers::seed_canonical(&mut conn, Utc::now()).await?;
            println!("canonical tiers inserted: {n} (existing tiers left unchanged)");
        }
    }
    Ok(())
}

fn print_table(tiers: &[Tier]) {
    println!(
        "{:<16} {:<20} {:<11} {:>5} {:<7} features on",
        "TIER", "NAME", "CATEGORY", "RANK", "ACTIVE"
    );
    for t in tiers {
        let on: Vec<&str> = t
            .features
            .iter()
            .filter(|(_, on)| **on)
            .map(|(f, _)| f.as_str())
            .collect();
        println!(
            "{:<16} {:<20} {:<11} {:>5} {:<7} {}",
            t.tier_id.as_str(),
            t.name,
            t.category.as_str(),
            t.rank,
            if t.active { "yes" } else { "no" },
            on.join(",")
        );
    }
}
