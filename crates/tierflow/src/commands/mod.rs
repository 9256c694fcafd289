//! One module per subcommand.

pub mod api;
pub mod bench;
pub mod demo;
pub mod jobs;
pub mod migrate;
pub mod tenants;
pub mod tiers;
pub mod worker;
