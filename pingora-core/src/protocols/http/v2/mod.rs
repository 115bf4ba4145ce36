//! HTTP/2 over the `h2` crate. [`server::HttpSession`] is one stream of a
//! server connection, with the same shape as an HTTP/1 session;
//! [`client::H2Connection`] is an upstream connection shared by many
//! [`client::Http2Session`]s.

pub mod client;
pub mod server;
