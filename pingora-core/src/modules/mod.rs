//! Modules: reusable filters that run in every request's pipeline
//! alongside the user's own phases (Pingora's module system).
//!
//! [`http`] holds the HTTP modules: a [`HttpModule`](http::HttpModule)
//! sees the request header and body and the response header, body and
//! trailers of each request; [`HttpModules`](http::HttpModules) lists the
//! builders a service makes one of each per request from.

pub mod http;
