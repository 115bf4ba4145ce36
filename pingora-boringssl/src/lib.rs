//! The BoringSSL TLS backend.
//!
//! This crate will expose, over BoringSSL, the same small TLS API as
//! `pingora-openssl`: an async TLS stream, the handshake as server and as
//! client, certificate and key loading, ALPN, SNI, verification settings and
//! key-exchange groups (including post-quantum hybrids). BoringSSL cannot be
//! linked into the same binary as OpenSSL, so exactly one of the two backend
//! crates is used by a build.
//!
//! The API is built by the TLS issue; today the crate holds only this
//! description, so that the workspace has its final shape.
#![warn(missing_docs)]
