//! Bridges between protocols that ride on HTTP: what a proxy rewrites so
//! that a client speaking one reaches an upstream speaking the other.
//!
//! [`grpc_web`]: gRPC-web (what browsers can send) to gRPC over HTTP/2.

pub mod grpc_web;
