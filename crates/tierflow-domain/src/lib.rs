//! Entitlement rules as pure functions: no I/O, no async, no clock reads.
//!
//! This crate is the vocabulary and the rule book of tierflow. Every function here takes the
//! current time as an argument (`now`), so a test can stand at any instant of a grace period, and
//! every input arrives as a parsed newtype, so a rule never meets an empty tenant id or a negative
//! grace. The store (`tierflow-store`) reads state, asks these rules what to do, and writes the
//! answer in one transaction.
//!
//! # Layout
//! - [`ids`] — parsed identifiers and short texts (`TenantId`, `TierId`, `Actor`, `Reason`, …).
//! - [`clock`] — the injectable clock the store and worker read time from.
//! - [`tier`] — tiers, their categories and ranks, and the canonical set that `tiers seed` writes.
//! - [`restriction`] — the four restriction flags and the sources that hold them.
//! - [`transition`] — classification by rank and the plan of a transition (state changes + jobs).
//! - [`limit_override`] — temporary limit overrides and when they are active.
//! - [`effective`] — the effective entitlement with the provenance of every value.
//! - [`error`] — [`DomainError`], every way a rule can say no.

pub mod clock;
pub mod effective;
pub mod error;
pub mod ids;
pub mod limit_override;
pub mod restriction;
pub mod tier;
pub mod transition;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::DomainError;
