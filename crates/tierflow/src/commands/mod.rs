//! One module per subcommand.

pub mod api;
pub mod audit;
pub mod bench;
pub mod clock;
pub mod demo;
pub mod jobs;
pub mod migrate;
pub mod tenants;
pub mod tiers;
pub mod webhooks;
pub mod worker;

/// The principal of changes made from the CLI: the operator's login (`cli:<user>`), whatever
/// `--actor` says.
pub fn operator() -> tierflow_store::audit::Principal {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    tierflow_store::audit::Principal::new(
        format!("cli:{user}"),
        tierflow_store::audit::PrincipalRole::Operator,
    )
}
