//! Queue upkeep that runs once per fleet: the [`elector`] picks one replica, which runs the
//! [`rescuer`] and the [`cleaner`]. Every statement is safe to run on several replicas at once
//! (`SKIP LOCKED`), so a brief overlap during a leadership change does no harm.

pub mod cleaner;
pub mod elector;
pub mod rescuer;
