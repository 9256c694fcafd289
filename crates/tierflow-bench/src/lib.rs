//! tierflow's benchmark and demo: the code behind the `tierflow` binary's `bench`,
//! `bench-worker` and `demo` subcommands.
//!
//! They drive the service from outside (a database they migrate, `tierflow api` and
//! `bench-worker` processes, an in-process API, workers and webhook receiver) and run job kinds of
//! their own, so they live in a crate of their own, beside the service's: the service's code is
//! what the service is built from. The binary parses the command line and opens the database
//! (`DATABASE_URL` or the embedded PostgreSQL); this crate takes it from there.
//!
//! # Layout
//! - [`bench`](mod@bench) — `tierflow bench`: throughput and latency in a database it creates and drops;
//!   [`bench::worker`] is the `tierflow bench-worker` process it starts.
//! - [`demo`] — `tierflow demo`: the whole product in one process, walking through a story.

pub mod bench;
pub mod demo;
