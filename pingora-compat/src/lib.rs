//! Not shipped. The programs in `examples/` and `tests/` are written the
//! way Pingora 0.8's documentation writes them, with Pingora's crate names
//! and paths; CI compiles them (and runs the tests) against these crates.
//! A change that breaks one of them breaks the promise that a Pingora
//! program ports by changing only `Cargo.toml`. The items still missing
//! or intentionally different are listed in `docs/COMPATIBILITY.md`.
#![forbid(unsafe_code)]
