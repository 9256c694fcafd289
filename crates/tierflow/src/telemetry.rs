//! Logging: human-readable lines on stderr by default, JSON on request; level from `RUST_LOG` or
//! `--log-level`.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The default log filter.
pub const DEFAULT_LEVEL: &str = "info,sqlx=warn";

/// Log settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "TIERFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter when RUST_LOG is unset, e.g. `info` or `tierflow=debug,sqlx=warn`.
    #[arg(
        long,
        env = "TIERFLOW_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Installs the global subscriber, writing to stderr (stdout is for command output).
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
