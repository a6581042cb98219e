//! Dialects: the wire protocols other than protocol v1 that clients already speak, served by
//! the same shards over the same core (topics, permissions, history, presence, limits and
//! metrics are shared; only the wire format differs). docs/DIALECTS.md.
//!
//! - Centrifugo's client protocol (JSON) on `centrifugo.path` (`centrifugo.rs`).
//! - Binance market streams under `binance.prefix` (`binance.rs`).
//!
//! Encode once per format: a published message becomes one [`crate::frame::Frame`] (protocol
//! v1 bytes); its form in each other format is built the first time a shard queues it for a
//! connection of that format ([`crate::frame::Frame::wire_as`]) and shared from then on, so a
//! publish costs one serialization per format that has at least one subscriber, never one per
//! subscriber (`tickcast_serializations_total{format}`).

pub mod binance;
pub mod centrifugo;

use crate::frame::text_frame_of;

/// What a WebSocket connection speaks (after the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Dialect {
    /// Protocol v1 on `/ws` (and the `/echo` route).
    #[default]
    V1,
    /// Binance market streams (raw or combined: the connection's [`Format`]).
    Binance,
    /// Centrifugo's client protocol before its `connect` command.
    CentrifugoNew,
    /// Centrifugo's client protocol, connected.
    Centrifugo,
}

impl Dialect {
    /// As `GET /v1/connections` shows it (`protocol`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::V1 => "v1",
            Dialect::Binance => "binance",
            Dialect::CentrifugoNew | Dialect::Centrifugo => "centrifugo",
        }
    }

    pub fn is_centrifugo(self) -> bool {
        matches!(self, Dialect::CentrifugoNew | Dialect::Centrifugo)
    }
}

/// A wire format of data frames. `u8` in the out-queues and frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    /// Protocol v1 (`{"topic":…,"seq":…,"ts":…,"data":…}`), the frame's own bytes.
    V1 = 0,
    /// `{"push":{"channel":<topic>,"pub":{"data":<data>,"offset":<seq>}}}`.
    Centrifugo = 1,
    /// `<data>` verbatim (Binance raw streams, `/ws/<stream>`).
    BinanceRaw = 2,
    /// `{"stream":<stream name>,"data":<data>}` (Binance combined streams, `/stream`).
    BinanceCombined = 3,
}

/// Number of formats.
pub const FORMATS: usize = 4;

impl Format {
    pub const ALL: [Format; FORMATS] = [
        Format::V1,
        Format::Centrifugo,
        Format::BinanceRaw,
        Format::BinanceCombined,
    ];

    /// The `format` label of `tickcast_serializations_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V1 => "v1",
            Format::Centrifugo => "centrifugo",
            Format::BinanceRaw => "binance_raw",
            Format::BinanceCombined => "binance_combined",
        }
    }
}

/// The text frame of message `seq` of `topic` with `data` in `format` (not v1: the owner
/// builds that one, `crate::frame::encode_data_frame`). One exact-size allocation.
pub fn encode_form(format: u8, topic: &str, seq: u64, data: &[u8]) -> Vec<u8> {
    let mut seq_buf = itoa::Buffer::new();
    match format {
        // A presence event reaches a Centrifugo client only through its `join_leave`
        // subscription: it is a join or leave push of the channel.
        f if f == Format::Centrifugo as u8 && topic.starts_with(centrifugo::PRESENCE_PREFIX) => {
            match centrifugo::presence_push(topic, data) {
                Some(push) => text_frame_of(&[&push]),
                None => text_frame_of(&[b"{}"]),
            }
        }
        f if f == Format::Centrifugo as u8 => text_frame_of(&[
            b"{\"push\":{\"channel\":\"",
            topic.as_bytes(),
            b"\",\"pub\":{\"data\":",
            data,
            b",\"offset\":",
            seq_buf.format(seq).as_bytes(),
            b"}}}",
        ]),
        f if f == Format::BinanceCombined as u8 => binance::with_streams(|streams| {
            // A topic reaches a combined-stream connection only through a stream name it
            // subscribed, so it always has one; the topic itself is the fallback.
            let name = streams.stream_of(topic);
            let stream = name.as_deref().unwrap_or(topic);
            text_frame_of(&[
                b"{\"stream\":\"",
                stream.as_bytes(),
                b"\",\"data\":",
                data,
                b"}",
            ])
        }),
        _ => text_frame_of(&[data]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_data_frame;

    fn payload(frame: &[u8]) -> &str {
        let skip = if frame[1] & 0x7F == 126 { 4 } else { 2 };
        std::str::from_utf8(&frame[skip..]).unwrap()
    }

    #[test]
    fn each_format_carries_the_published_data_verbatim() {
        let data = br#"{"p":"1.50","q":"2e3"}"#;
        let frame = encode_data_frame("trades.BTCUSDT", 42, 7, data, 1);
        assert_eq!(frame.data(), data);
        assert_eq!(
            payload(frame.wire_as(Format::Centrifugo as u8, 0)),
            r#"{"push":{"channel":"trades.BTCUSDT","pub":{"data":{"p":"1.50","q":"2e3"},"offset":42}}}"#
        );
        assert_eq!(
            payload(frame.wire_as(Format::BinanceRaw as u8, 0)),
            r#"{"p":"1.50","q":"2e3"}"#
        );
        binance::set_streams(binance::StreamMap::defaults());
        assert_eq!(
            payload(frame.wire_as(Format::BinanceCombined as u8, 0)),
            r#"{"stream":"btcusdt@trade","data":{"p":"1.50","q":"2e3"}}"#
        );
        // v1 is the frame itself.
        assert_eq!(frame.wire_as(Format::V1 as u8, 0), frame.bytes());
    }

    #[test]
    fn a_form_is_encoded_once_however_many_times_it_is_asked_for() {
        let frame = encode_data_frame("t", 1, 7, b"1", 1);
        let before = crate::frame::form_encodings();
        let first = frame.wire_as(Format::Centrifugo as u8, 0).as_ptr();
        for _ in 0..10 {
            assert_eq!(frame.wire_as(Format::Centrifugo as u8, 0).as_ptr(), first);
        }
        let after = crate::frame::form_encodings();
        assert_eq!(
            after[Format::Centrifugo as usize] - before[Format::Centrifugo as usize],
            1
        );
        assert_eq!(
            after[Format::BinanceRaw as usize],
            before[Format::BinanceRaw as usize]
        );
    }

    #[test]
    fn control_frames_are_never_reencoded() {
        let frame = crate::frame::text_frame(br#"{"id":1,"connect":{}}"#);
        assert_eq!(frame.wire_as(Format::Centrifugo as u8, 0), frame.bytes());
        assert_eq!(frame.data(), b"");
    }
}
