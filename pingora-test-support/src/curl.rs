//! curl as the client: the one real clients are most often compared with.

use std::process::Command;

/// `curl -sS` (2 minutes at most) with `args`; its stdout as bytes. Fails
/// the test, with curl's message, if curl fails.
///
/// # Panics
///
/// If curl cannot be run (not installed), or exits with a failure status
/// (an error, or the 2-minute limit passed).
pub fn curl_raw(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .output()
        .expect("run curl (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`curl_raw`], its stdout as text (invalid UTF-8 replaced).
pub fn curl_text(args: &[&str]) -> String {
    String::from_utf8_lossy(&curl_raw(args)).into_owned()
}
