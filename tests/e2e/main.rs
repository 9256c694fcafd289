//! End-to-end tests of the `tierflow` binary. See `tests/README.md`.

mod cli;
mod fleet;
mod support;
