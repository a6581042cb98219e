//! Property tests: random valid streams decode to their messages whatever the read sizes;
//! arbitrary, corrupted or contract-breaking input never panics.

use super::*;
use proptest::prelude::*;

/// One encoded client stream and the messages it must decode to.
#[derive(Debug, Clone)]
struct Stream {
    bytes: Vec<u8>,
    expected: Vec<Owned>,
}

fn len_strategy() -> impl Strategy<Value = Len> {
    prop_oneof![Just(Len::Minimal), Just(Len::Bits16), Just(Len::Bits64)]
}

fn control_strategy() -> impl Strategy<Value = Option<(u8, Vec<u8>)>> {
    proptest::option::of((
        prop_oneof![Just(OP_PING), Just(OP_PONG)],
        proptest::collection::vec(any::<u8>(), 0..=125),
    ))
}

fn data_strategy() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        any::<String>().prop_map(|s| (true, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..700).prop_map(|b| (false, b)),
    ]
}

/// A data message, where to cut it into fragments, and control frames to put after each
/// non-final fragment.
type MessagePlan = ((bool, Vec<u8>), Vec<usize>, Vec<Option<(u8, Vec<u8>)>>);

fn message_strategy() -> impl Strategy<Value = MessagePlan> {
    (
        data_strategy(),
        proptest::collection::vec(0usize..700, 0..4),
        proptest::collection::vec(control_strategy(), 4),
    )
}

fn stream_strategy() -> impl Strategy<Value = Stream> {
    (
        proptest::collection::vec(message_strategy(), 0..5),
        proptest::collection::vec((any::<[u8; 4]>(), len_strategy()), 1..8),
        any::<bool>(),
    )
        .prop_map(|(messages, frame_opts, end_with_close)| {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            let mut n = 0;
            let mut push = |bytes: &mut Vec<u8>, fin, opcode, payload: &[u8]| {
                let (mask, len) = frame_opts[n % frame_opts.len()];
                n += 1;
                let len = if opcode >= OP_CLOSE {
                    Len::Minimal
                } else {
                    len
                };
                bytes.extend(client_frame_with(fin, opcode, payload, mask, len));
            };
            for ((is_text, payload), cuts, controls) in messages {
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
                cuts.sort_unstable();
                cuts.push(payload.len());
                let mut start = 0;
                for (i, &end) in cuts.iter().enumerate() {
                    let fin = i + 1 == cuts.len();
                    let opcode = match (i, is_text) {
                        (0, true) => OP_TEXT,
                        (0, false) => OP_BINARY,
                        _ => OP_CONTINUATION,
                    };
                    push(&mut bytes, fin, opcode, &payload[start..end]);
                    start = end;
                    if let (false, Some((op, body))) = (fin, &controls[i]) {
                        push(&mut bytes, true, *op, body);
                        expected.push(if *op == OP_PING {
                            Owned::Ping(body.clone())
                        } else {
                            Owned::Pong(body.clone())
                        });
                    }
                }
                expected.push(if is_text {
                    Owned::Text(payload)
                } else {
                    Owned::Binary(payload)
                });
            }
            if end_with_close {
                let mut payload = 4000u16.to_be_bytes().to_vec();
                payload.extend_from_slice("au revoir ✓".as_bytes());
                push(&mut bytes, true, OP_CLOSE, &payload);
                expected.push(Owned::Close(Some((4000, "au revoir ✓".into()))));
            }
            Stream { bytes, expected }
        })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        proptest::collection::vec(1usize..16, 1..20),
        proptest::collection::vec(1usize..2000, 1..20),
    ]
}

proptest! {
    #[test]
    fn random_streams_decode_to_the_original_messages(
        stream in stream_strategy(),
        sizes in chunk_sizes(),
    ) {
        let (messages, err) = feed_chunked(&stream.bytes, &sizes, 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(messages, stream.expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in chunk_sizes(),
        max in 0usize..3000,
    ) {
        // Panics, overlong `consumed` and reassembly beyond the limit fail inside `Conn`.
        let _ = feed_chunked(&bytes, &sizes, max);
    }

    #[test]
    fn corrupted_streams_never_panic(
        stream in stream_strategy(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        sizes in chunk_sizes(),
        max in 0usize..3000,
    ) {
        let mut bytes = stream.bytes;
        if !bytes.is_empty() {
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
        }
        let _ = feed_chunked(&bytes, &sizes, max);
    }

    #[test]
    fn callers_breaking_the_contract_cannot_cause_a_panic(
        buffers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..10),
        max in 0usize..3000,
    ) {
        // Unrelated buffers on every call: results are meaningless but must stay in bounds.
        let mut decoder = Decoder::new();
        for mut buf in buffers {
            let len = buf.len();
            if let Ok(decoded) = decoder.decode(&mut buf, max) {
                prop_assert!(decoded.consumed <= len);
            }
        }
    }
}
