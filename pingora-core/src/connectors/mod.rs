//! Connecting to upstreams. Today: TLS on top of a connected stream
//! ([`tls::TlsConnector`]); plain connects, pooling and HTTP on top come
//! with the connector issue.

pub mod tls;
