//! The programmable HTTP proxy.
//!
//! This crate will hold `ProxyHttp`, the trait whose methods are the phases
//! of a proxied request (`request_filter`, `upstream_peer`,
//! `response_filter`, `logging`, ...), and `HttpProxy`, the pipeline that
//! runs them over any mix of HTTP/1 and HTTP/2 on either side, with retries,
//! failover, WebSocket and gRPC.
//!
//! It arrives with the proxy issue; today the crate holds only this
//! description, so that the workspace has its final shape.
#![warn(missing_docs)]
