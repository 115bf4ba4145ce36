//! Helpers shared by the integration tests: the example binaries as child
//! processes. The rest (free ports, temp dirs, polling with a deadline,
//! `Proc`, curl, nginx, the gRPC peer) is pingora-test-support's,
//! re-exported here so that the test files' `use common::*` brings it.
// Test helpers: `pub` for the test files, which are crates of their own;
// each uses some of them.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};

pub use pingora_test_support::*;

/// The example binary, built by `cargo test` beside this test.
pub fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

/// Start example `name` with `args`, its stderr appended to `log`.
pub fn start_example(name: &str, args: &[&str], log: &Path) -> Proc {
    start_example_env(name, args, log, &[])
}

/// As [`start_example`], with environment variables set (`Some`) or
/// removed (`None`).
pub fn start_example_env(
    name: &str,
    args: &[&str],
    log: &Path,
    env: &[(&str, Option<&str>)],
) -> Proc {
    Proc::start_logged(example(name), args, log, env)
}

/// The example starters as `Proc::start_example(..)`, the way the tests
/// call them: `Proc` is the support crate's type, so they come as a trait
/// (in scope through `use common::*`) rather than inherent functions.
pub trait ExampleProc {
    /// Start the `server` example.
    fn start(args: &[&str], log: &Path) -> Proc;
    /// [`start_example`].
    fn start_example(name: &str, args: &[&str], log: &Path) -> Proc;
    /// [`start_example_env`].
    fn start_example_env(
        name: &str,
        args: &[&str],
        log: &Path,
        env: &[(&str, Option<&str>)],
    ) -> Proc;
}

impl ExampleProc for Proc {
    fn start(args: &[&str], log: &Path) -> Proc {
        start_example("server", args, log)
    }

    fn start_example(name: &str, args: &[&str], log: &Path) -> Proc {
        start_example(name, args, log)
    }

    fn start_example_env(
        name: &str,
        args: &[&str],
        log: &Path,
        env: &[(&str, Option<&str>)],
    ) -> Proc {
        start_example_env(name, args, log, env)
    }
}
