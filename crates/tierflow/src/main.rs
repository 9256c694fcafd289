//! The `tierflow` binary: parses the command line and hands off to one command module.
//!
//! Exit codes scripts can rely on: 0 success, 1 the command failed (the message says why and
//! what to do), 2 the command line was wrong (clap prints usage).

mod cli;
mod commands;
mod database;
mod ops;
mod shutdown;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // One TLS stack (rustls + ring) for PostgreSQL and webhooks; reqwest needs it installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cli = Cli::parse();
    // The benchmark's own progress lines go to stderr; its processes log only problems, so that
    // logging does not weigh on what it measures.
    if matches!(cli.command, Command::Bench(_) | Command::BenchWorker(_))
        && cli.log.log_level == telemetry::DEFAULT_LEVEL
    {
        cli.log.log_level = "warn".to_owned();
    }
    telemetry::init(&cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate(args) => commands::migrate::run(args).await,
            Command::Tiers(args) => commands::tiers::run(args).await,
            Command::Tenants(args) => commands::tenants::run(args).await,
            Command::Transitions(args) => commands::tenants::run_transitions(args).await,
            Command::Audit(args) => commands::audit::run(args).await,
            Command::Worker(args) => commands::worker::run(args).await,
            Command::Api(args) => commands::api::run_api(args).await,
            Command::Run(args) => commands::api::run_both(args).await,
            Command::Jobs(args) => commands::jobs::run(args).await,
            Command::Clock(args) => commands::clock::run(args).await,
            Command::Webhooks(args) => commands::webhooks::run(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::BenchWorker(args) => commands::bench::run_worker(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
