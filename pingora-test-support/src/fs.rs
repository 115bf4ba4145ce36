//! Files of one test.

use std::path::PathBuf;

/// A fresh, empty directory for one test's files (conf, logs, pid file):
/// `pingora-test-TAG-PID` in the system's temp dir. The process id keeps
/// concurrent test binaries apart; within one binary each test gives its
/// own `tag`. What an earlier run with the same pid left is removed first.
///
/// # Panics
///
/// If the directory cannot be created.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pingora-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}
