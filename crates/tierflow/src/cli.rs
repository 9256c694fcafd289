//! The command line: every subcommand and flag, each flag also read from `TIERFLOW_<FLAG>`
//! (shown in `--help`); the database from `DATABASE_URL`.

use clap::{Args, Parser, Subcommand};

use crate::commands::{
    api, audit, bench, clock, demo, jobs, migrate, tenants, tiers, webhooks, worker,
};
use crate::telemetry::LogArgs;

/// tierflow: the entitlement lifecycle service.
///
/// It owns which tier each tenant is on, what that tier allows right now, and the timed
/// consequences of changing it (grace periods, expiring overrides), run as jobs in a PostgreSQL
/// queue.
#[derive(Debug, Parser)]
#[command(name = "tierflow", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the queue's and tierflow's database migrations and seed the canonical tiers.
    ///
    /// Safe to run from several replicas at once (one applies, the others wait and find nothing
    /// to do) and safe to re-run. Run it once per release, before rolling out new pods.
    Migrate(migrate::MigrateArgs),
    /// List, show and seed tiers.
    Tiers(tiers::TiersArgs),
    /// Provision a tenant, or show its effective entitlement.
    Tenants(tenants::TenantsArgs),
    /// A tenant's transition history.
    Transitions(tenants::TransitionsArgs),
    /// A tenant's audit trail, oldest first: every change with its actor, principal and reason.
    Audit(audit::AuditArgs),
    /// Serve the HTTP API for upstream services (needs tokens; see --help).
    Api(api::ApiArgs),
    /// Serve the API and run the worker in one process (small installations, the demo).
    Run(api::RunArgs),
    /// Run jobs: a worker process of the fleet (run as many as needed, on any hosts).
    ///
    /// Claims due jobs of every kind, runs them with retry and backoff, rescues jobs of workers
    /// that died, and stops gracefully on SIGTERM or Ctrl-C: no new jobs, in-flight ones finish
    /// within the drain timeout, the rest go back to the queue.
    Worker(worker::WorkerArgs),
    /// Walk through tierflow's story end to end: API, workers and a webhook receiver in one
    /// process, on the embedded PostgreSQL unless DATABASE_URL is set; ends by itself.
    Demo(demo::DemoArgs),
    /// Measure throughput and latency on this machine, in a database it creates and drops.
    Bench(bench::BenchArgs),
    /// A worker process of `tierflow bench` (started by the benchmark).
    #[command(hide = true)]
    BenchWorker(bench::BenchWorkerArgs),
    /// Inspect and manage queued jobs: stats, list, dead, retry, cancel.
    Jobs(jobs::JobsArgs),
    /// Test clocks: tenants that live by a frozen time, advanced on demand with their jobs.
    Clock(clock::ClockArgs),
    /// Webhook endpoints: where `entitlement.changed` events go, each with its own Standard
    /// Webhooks secret (list, create, disable, enable, rotate-secret, new-secret).
    Webhooks(webhooks::WebhooksArgs),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://tierflow:secret@db:5432/tierflow. Never logged. Without it,
    /// tierflow runs a private PostgreSQL from this machine's server binaries in --data-dir.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
    /// Data folder of the embedded PostgreSQL used when DATABASE_URL is unset [default:
    /// $XDG_DATA_HOME/tierflow/postgres, or ~/.local/share/tierflow/postgres; as root
    /// /var/lib/tierflow/postgres].
    #[arg(long, env = "TIERFLOW_DATA_DIR", global = true)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Largest number of connections this process opens [default: 20 for `api`; 16 for
    /// `worker`: 12 shared by the running jobs (fewer if there are fewer job slots) plus 4, two
    /// of which are reserved for the heartbeat and the maintenance lease; 26 for `run` (10 more
    /// for its API); 10 for the other commands].
    #[arg(long, env = "TIERFLOW_DB_POOL_SIZE", global = true)]
    pub db_pool_size: Option<u32>,
    /// Seconds to wait for the database before giving up.
    #[arg(
        long,
        env = "TIERFLOW_DB_CONNECT_TIMEOUT",
        default_value_t = 10,
        global = true
    )]
    pub db_connect_timeout: u64,
}

/// Where `entitlement.changed` events go (every process that changes tenants needs the same).
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// A webhook endpoint configured by environment, receiving every `entitlement.changed` event
    /// beside the endpoints managed with `tierflow webhooks` / `/v1/webhook-endpoints`; repeat
    /// the flag or separate URLs with commas in the variable.
    #[arg(
        long = "webhook-url",
        env = "TIERFLOW_WEBHOOK_URLS",
        value_delimiter = ',',
        global = true
    )]
    pub webhook_urls: Vec<String>,
    /// The Standard Webhooks secret (`whsec_…`, make one with `tierflow webhooks new-secret`)
    /// signing deliveries to the endpoints given by --webhook-url; required with them. Never
    /// logged. Managed endpoints have secrets of their own.
    #[arg(
        long,
        env = "TIERFLOW_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub webhook_secret: Option<String>,
}

impl EventArgs {
    /// Checks the endpoints and the secret together.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (i, url) in self.webhook_urls.iter().enumerate() {
            tierflow_store::webhooks::check_url(url)
                .map_err(|e| anyhow::anyhow!("TIERFLOW_WEBHOOK_URLS, URL {}: {e}", i + 1))?;
        }
        if !self.webhook_urls.is_empty() && self.webhook_secret.as_deref().unwrap_or("").is_empty()
        {
            anyhow::bail!(
                "TIERFLOW_WEBHOOK_SECRET must be set when webhook URLs are configured (deliveries are signed)"
            );
        }
        self.secret()?;
        Ok(())
    }

    /// The parsed secret for the environment's endpoints, if one is set.
    pub fn secret(&self) -> anyhow::Result<Option<tierflow_worker::webhook::Secret>> {
        self.webhook_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(tierflow_worker::webhook::Secret::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("TIERFLOW_WEBHOOK_SECRET: {e}"))
    }
}

/// The operations endpoint (`/metrics`, `/healthz`, `/readyz`) every long-running process serves.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Address of /metrics, /healthz and /readyz (port 0 picks a free port; the log says which).
    #[arg(
        long,
        env = "TIERFLOW_METRICS_LISTEN",
        default_value = "0.0.0.0:9464",
        global = true
    )]
    pub metrics_listen: std::net::SocketAddr,
}

/// Output format of listing commands.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print JSON instead of a table (for scripts).
    #[arg(long, env = "TIERFLOW_JSON")]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every flag of every subcommand documents itself and names its environment variable.
    #[test]
    fn every_flag_has_help_and_an_env_var() {
        fn walk(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_positional() {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} --{id} has no help");
                assert!(arg.get_env().is_some(), "{path} --{id} has no env var");
            }
            for sub in cmd.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {} has no about",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        walk(&Cli::command(), "tierflow");
    }
}
