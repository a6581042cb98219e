//! WebSocket wire layer (RFC 6455), pure: no runtime, no I/O. Everything here sees hostile
//! client bytes and is unit-tested, property-tested and fuzzed on its own.
//!
//! - [`http`]: HTTP/1.1 request parsing (httparse) and response building, including the upgrade.
//! - [`frame`]: server frame encoding and the incremental client frame decoder.
//! - [`mask`]: client payload unmasking.
//! - [`utf8`]: incremental UTF-8 validation for fragmented text messages.
//! - [`close`]: close frame payload validation and close codes.
//! - [`deflate`]: `permessage-deflate` (RFC 7692): negotiation, compression, inflation.
//! - [`proxy`]: the client's address behind proxies: PROXY protocol headers, forwarded headers.

pub mod close;
pub mod deflate;
pub mod frame;
pub mod http;
pub mod mask;
pub mod proxy;
pub mod utf8;
