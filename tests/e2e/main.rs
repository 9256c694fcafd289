//! End-to-end tests of the `tierflow` binary. See `tests/README.md`.

mod api;
mod api_support;
mod bench;
mod cli;
mod console;
mod contract;
mod degrade;
mod demo;
mod deploy;
mod faults;
mod fleet;
mod observability;
mod record;
mod support;
