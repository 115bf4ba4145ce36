//! HTTP/2 over the `h2` crate. [`server::HttpSession`] is one stream of a
//! server connection, with the same shape as an HTTP/1 session.

pub mod server;
