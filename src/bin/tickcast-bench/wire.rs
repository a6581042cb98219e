//! The client's side of the wire, kept minimal so the load generator stays cheap. One file a
//! concern; this module re-exports what the engine uses.
//!
//! - `handshake.rs`: a normal RFC 6455 client handshake (random key, `Sec-WebSocket-Accept`
//!   checked).
//! - `frame.rs`: a frame reader over a borrowed byte slice: no allocation, no copy; the caller
//!   keeps any partial frame (RFC 6455 §5.2 framing; server frames are never masked, §5.1).
//!   Masked client frames written straight into an output buffer (§5.3).
//! - `deflate.rs`: permessage-deflate (RFC 7692) for `--deflate`: the offer, the check of the
//!   server's answer, and inflating compressed (RSV1) messages.
//! - `dialects.rs`: Centrifugo and Binance subscribers (`--dialect`): their subscribe requests
//!   and the byte-search classification of their server messages.
//! - `fields.rs`: byte search for the few fields the bench needs (`"seq":`, the send time
//!   `"t":`, the topic index of `bench.t<N>`, the welcome's `"shard":`) instead of a JSON parser.

mod deflate;
mod dialects;
mod fields;
mod frame;
mod handshake;

pub use deflate::{
    InflateCache, inflate_message, new_inflater, parse_response as parse_extensions,
};
pub use dialects::{
    BINANCE_PATH, Binance, CENTRIFUGO_PATH, Centrifugo, binance_stream, binance_subscribe,
    centrifugo_shard, centrifugo_subscribe, parse_binance, parse_centrifugo,
};
pub use fields::{is_op, number_after, op_name, parse_data, string_after};
pub use frame::{Opcode, Parse, close_code, parse_frame, put_masked_frame};
pub use handshake::{HandshakeError, check_response, handshake_request, response_head_len};
