//! One module per subcommand.

pub mod migrate;
pub mod tiers;
