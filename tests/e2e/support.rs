//! Running the built `tierflow` binary.

use std::process::{Command, Output};

/// Runs `tierflow args…` with `DATABASE_URL=url` and returns its output.
pub fn tierflow(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tierflow"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .output()
        .expect("start the tierflow binary")
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
