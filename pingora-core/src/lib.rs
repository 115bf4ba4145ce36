//! The core of the framework.
//!
//! This crate will hold the `Server` (CLI, YAML conf, daemon mode, signals,
//! graceful shutdown and zero-downtime upgrade), listening and background
//! services, listeners (TCP, Unix sockets, TLS), protocols (L4 streams with
//! their digest, TLS, HTTP/1 and HTTP/2 sessions), connectors with pooling,
//! peers, and the app traits. It builds on `pingora-error`,
//! `pingora-timeout`, `pingora-pool`, `pingora-http` and one TLS backend.
//!
//! The TLS backend is chosen with a cargo feature: `openssl` (the default)
//! or `boringssl`. Enabling both is a compile error, because the two
//! libraries cannot be linked into one binary.
//!
//! The server arrives with the server issue; today the crate holds only this
//! description and the feature wiring, so that the workspace has its final
//! shape.
#![warn(missing_docs)]

#[cfg(all(feature = "openssl", feature = "boringssl"))]
compile_error!(
    "pingora-core: the `openssl` and `boringssl` features cannot both be enabled; \
     BoringSSL and OpenSSL cannot be linked into one binary. \
     To use BoringSSL, turn off default features: \
     `pingora = { version = \"..\", default-features = false, features = [\"boringssl\", \"proxy\", \"lb\"] }` \
     (or `cargo build --no-default-features --features boringssl,proxy,lb`)."
);
