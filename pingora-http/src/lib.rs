//! tmp
pub struct RequestHeader; pub struct ResponseHeader;
