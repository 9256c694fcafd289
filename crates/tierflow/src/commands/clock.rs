//! `tierflow clock create|show|advance|delete`: test clocks, for tests of systems built on
//! tierflow — provision tenants on a clock (`tierflow tenants provision --test-clock <id>`), then
//! advance it to run their grace ends and expiries at once, in due order.

use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use tierflow_domain::ids::Actor;
use tierflow_store::test_clocks;
use uuid::Uuid;

use super::worker::store_context;
use crate::cli::{DatabaseArgs, EventArgs, OutputArgs};
use crate::database;

#[derive(Debug, Args)]
pub struct ClockArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(subcommand)]
    pub command: ClockCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClockCommand {
    /// Create a test clock (frozen at --at, or now).
    Create {
        /// A name for people.
        #[arg(long, env = "TIERFLOW_CLOCK_NAME")]
        name: String,
        /// Where the clock starts (RFC 3339) [default: now].
        #[arg(long, env = "TIERFLOW_CLOCK_AT")]
        at: Option<DateTime<Utc>>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Show a clock: its time, tenants, parked jobs and the next one due.
    Show {
        /// The clock's id.
        id: Uuid,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Move a clock forward, running every job of its tenants that becomes due, in order.
    Advance {
        /// The clock's id.
        id: Uuid,
        /// How far: a number with a unit, s, m, h or d (e.g. 7d, 36h).
        #[arg(
            long,
            env = "TIERFLOW_CLOCK_BY",
            conflicts_with = "to",
            required_unless_present = "to"
        )]
        by: Option<String>,
        /// Or to when (RFC 3339).
        #[arg(long, env = "TIERFLOW_CLOCK_TO")]
        to: Option<DateTime<Utc>>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Delete a clock with its tenants and everything that refers to them.
    Delete {
        /// The clock's id.
        id: Uuid,
    },
}

/// Parses `7d`, `36h`, `90m`, `45s`.
fn parse_span(s: &str) -> anyhow::Result<Duration> {
    let bad =
        || anyhow::anyhow!("--by '{s}' is not a duration: use a number and s, m, h or d (e.g. 7d)");
    let (n, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    anyhow::ensure!(n >= 0, bad());
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    anyhow::ensure!(secs <= 10 * 366 * 86_400, "--by {s} is more than ten years");
    Ok(Duration::seconds(secs))
}

pub async fn run(args: ClockArgs) -> anyhow::Result<()> {
    let db = database::connect(&args.db).await?;
    let ctx = store_context(&args.events).acting_as(super::operator());
    let mut conn = db.pool.acquire().await?;
    let print = |clock: &test_clocks::TestClock| {
        println!(
            "clock {} ({})\n  time        {}\n  tenants     {}\n  parked jobs {}{}",
            clock.id,
            clock.name,
            clock.frozen_time,
            clock.tenants,
            clock.parked_jobs,
            clock
                .next_due_at
                .map(|t| format!(", next due {t}"))
                .unwrap_or_default()
        )
    };
    match args.command {
        ClockCommand::Create { name, at, out } => {
            let now = Utc::now();
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty()
                    && name.chars().count() <= 100
                    && !name.chars().any(char::is_control),
                "--name must be 1 to 100 characters, none of them control characters"
            );
            let clock = test_clocks::create(
                &mut conn,
                name,
                at.unwrap_or(now),
                &Actor::parse(ctx.principal.name.clone())?,
                now,
            )
            .await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&clock)?);
            } else {
                print(&clock);
            }
        }
        ClockCommand::Show { id, out } => {
            let clock = test_clocks::get(&mut conn, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("test clock {id} is not known"))?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&clock)?);
            } else {
                print(&clock);
            }
        }
        ClockCommand::Advance { id, by, to, out } => {
            let to = match (to, by) {
                (Some(to), _) => to,
                (None, Some(by)) => {
                    let clock = test_clocks::get(&mut conn, id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("test clock {id} is not known"))?;
                    clock.frozen_time + parse_span(&by)?
                }
                (None, None) => anyhow::bail!("give --by or --to"),
            };
            drop(conn);
            let out_ = test_clocks::advance(&db.pool, &ctx, id, to).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&out_)?);
            } else {
                for j in &out_.ran {
                    println!(
                        "ran {:<18} tenant {:<16} due {}  {}",
                        j.kind, j.tenant_id, j.due_at, j.outcome
                    );
                }
                print(&out_.clock);
            }
        }
        ClockCommand::Delete { id } => {
            let n = test_clocks::delete(&mut conn, id).await?;
            println!("test clock {id} deleted with its {n} tenants");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_bad_ones_say_why() {
        assert_eq!(parse_span("7d").unwrap(), Duration::days(7));
        assert_eq!(parse_span("36h").unwrap(), Duration::hours(36));
        assert_eq!(parse_span("0s").unwrap(), Duration::zero());
        for bad in ["", "d", "7", "7w", "-1d", "x1h"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
