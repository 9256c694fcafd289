//! `tierflow jobs stats|list|dead|retry|cancel`.

use anyhow::bail;
use clap::{Args, Subcommand};
use tierflow_queue::JobState;
use tierflow_queue::admin::{self, JobRow};
use tierflow_store::job_actions::{self, JobActionRefusal};

use crate::cli::{DatabaseArgs, OutputArgs};
use crate::database;

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Job counts by kind and state (due, scheduled, running, retrying, done, dead, cancelled).
    Stats(OutputArgs),
    /// List jobs, most recently due first.
    List {
        /// Only jobs in this stored state: Pending, Running, Done, Failed, Dead, Cancelled.
        #[arg(long, env = "TIERFLOW_JOBS_STATE")]
        state: Option<String>,
        /// Only jobs of this kind, e.g. apply_downgrade.
        #[arg(long, env = "TIERFLOW_JOBS_KIND")]
        kind: Option<String>,
        /// At most this many rows.
        #[arg(long, env = "TIERFLOW_JOBS_LIMIT", default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// List dead jobs (attempts spent) with their last error.
    Dead {
        /// At most this many rows.
        #[arg(long, env = "TIERFLOW_JOBS_LIMIT", default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Re-drive a dead or cancelled job: due now, with a fresh set of attempts.
    Retry {
        /// The job's id (from `jobs dead` or `jobs list`).
        id: String,
    },
    /// Cancel a job that has not started.
    Cancel {
        /// The job's id.
        id: String,
    },
}

pub async fn run(args: JobsArgs) -> anyhow::Result<()> {
    let db = database::connect(&args.db).await?;
    let mut conn = db.pool.acquire().await?;
    let ctx = tierflow_store::Context::new(std::sync::Arc::new(tierflow_domain::SystemClock))
        .acting_as(super::operator());
    match args.command {
        JobsCommand::Stats(out) => {
            let rows = admin::stats(&mut conn).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<20} {:<10} {:>10}", "KIND", "STATE", "JOBS");
                for r in rows {
                    println!("{:<20} {:<10} {:>10}", r.kind, r.state, r.jobs);
                }
            }
        }
        JobsCommand::List {
            state,
            kind,
            limit,
            out,
        } => {
            if let Some(s) = &state
                && JobState::parse(s).is_none()
            {
                bail!(
                    "unknown state '{s}'; use one of Pending, Running, Done, Failed, Dead, Cancelled"
                );
            }
            let rows = admin::list(&mut conn, state.as_deref(), kind.as_deref(), limit).await?;
            print_jobs(&rows, out.json)?;
        }
        JobsCommand::Dead { limit, out } => {
            let rows = admin::list(&mut conn, Some("Dead"), None, limit).await?;
            print_jobs(&rows, out.json)?;
        }
        // Both audited with the operator's principal, like the API's and the console's.
        JobsCommand::Retry { id } => match job_actions::redrive(&mut conn, &ctx, &id).await? {
            Ok(row) => println!(
                "job {} ({}) is due again with {} attempts",
                row.id, row.kind, row.max_attempts
            ),
            Err(refusal) => bail!(refused(
                "re-drive",
                &id,
                refusal,
                "only Dead or Cancelled jobs"
            )),
        },
        JobsCommand::Cancel { id } => match job_actions::cancel(&mut conn, &ctx, &id).await? {
            Ok(row) => println!("job {} ({}) cancelled", row.id, row.kind),
            Err(refusal) => bail!(refused(
                "cancel",
                &id,
                refusal,
                "only Pending or Failed jobs"
            )),
        },
    }
    Ok(())
}

fn refused(action: &str, id: &str, refusal: JobActionRefusal, allowed: &str) -> String {
    match refusal {
        JobActionRefusal::NotFound => format!("no job with id '{id}'; see `tierflow jobs list`"),
        JobActionRefusal::WrongState(s) => {
            format!("cannot {action} job {id}: it is {s}; {allowed} can be")
        }
        JobActionRefusal::OwnedByTransition(why) => format!("cannot {action} job {id}: {why}"),
    }
}

fn print_jobs(rows: &[JobRow], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<26} {:<16} {:<9} {:>8} {:<25} LAST RESULT",
        "ID", "KIND", "STATE", "ATTEMPTS", "RUN AT"
    );
    for r in rows {
        let last = r
            .last_result
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        println!(
            "{:<26} {:<16} {:<9} {:>4}/{:<3} {:<25} {}",
            r.id,
            r.kind,
            r.status,
            r.attempts,
            r.max_attempts,
            r.run_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            last
        );
    }
    Ok(())
}
