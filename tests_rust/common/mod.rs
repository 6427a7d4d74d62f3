//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

/// Returns the folder with the shared tokenizers and data sets: `PYALIGN_SHARED` when set,
/// else `../shared` beside the repository. Prints why and returns `None` when `relative`
/// is missing under it, so the calling test can return early as a skip.
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    let root = match std::env::var_os("PYALIGN_SHARED") {
        Some(root) => PathBuf::from(root),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("shared"),
    };
    let path = root.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} not found (set PYALIGN_SHARED to the shared folder)",
            path.display()
        );
        None
    }
}
