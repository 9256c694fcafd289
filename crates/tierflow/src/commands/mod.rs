//! One module per subcommand.

pub mod jobs;
pub mod migrate;
pub mod tiers;
pub mod worker;
