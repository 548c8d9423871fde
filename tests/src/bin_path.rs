//! Paths of the workspace's binaries, for tests that run them as real processes.

use std::path::PathBuf;

/// `target/debug/<name>`, built by `scripts/test.sh` before the tests run (building from inside
/// a test would wait on the build lock `cargo test` holds). `AGOG_BIN_DIR` points elsewhere,
/// e.g. at `target/release` for benches.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("AGOG_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.exists(),
            "{} is missing (AGOG_BIN_DIR)",
            path.display()
        );
        return path;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, or `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}
