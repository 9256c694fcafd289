//! The end-to-end tests live outside this package (`tests/e2e` at the top of the repository), so
//! cargo records their paths as absolute ones — the paths of whichever checkout built them last.
//! Another checkout sharing the target directory (CI's fresh clone, with the shared
//! `CARGO_TARGET_DIR`) would then judge the test binary by the first checkout's files and could
//! run a stale one. A rerun of this script, keyed on this checkout's `tests/`, makes cargo
//! rebuild the package's targets whenever those files change here.
fn main() {
    println!("cargo:rerun-if-changed=../../tests");
}
