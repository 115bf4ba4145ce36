//! The OpenSSL TLS backend.
//!
//! This crate will expose, over the system OpenSSL, the small TLS API that
//! pingora-core uses: an async TLS stream over any `AsyncRead + AsyncWrite`,
//! the handshake as server and as client, certificate and key loading,
//! ALPN, SNI, verification settings and key-exchange groups. Its twin,
//! `pingora-boringssl`, exposes the same API over BoringSSL; pingora-core
//! picks one through its `openssl` / `boringssl` features.
//!
//! The API is built by the TLS issue; today the crate holds only this
//! description, so that the workspace has its final shape.
#![warn(missing_docs)]
