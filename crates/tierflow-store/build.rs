//! `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know it reads that
//! directory: without this, a new migration file is left out until something else in the crate
//! changes.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
