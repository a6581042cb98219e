//! Interoperability with an independent implementation (tungstenite): it parses our server
//! frames, and we decode its client frames.

use super::*;

#[test]
fn tungstenite_parses_our_server_frames() {
    use std::io::Cursor;
    use tungstenite::protocol::frame::FrameHeader;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    for n in [0usize, 125, 126, 65535, 65536] {
        let payload = vec![b'x'; n];
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, &payload);
        let mut cursor = Cursor::new(&out);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final && !header.rsv1 && header.mask.is_none());
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        assert_eq!(len, n as u64);
        assert_eq!(&out[cursor.position() as usize..], &payload[..]);
    }
}

#[test]
fn we_decode_tungstenite_client_frames() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let frames = [
        Frame::message(
            "tick: ☺".as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            true,
        ),
        Frame::message(vec![1u8; 70_000], OpCode::Data(Data::Binary), false),
        Frame::ping(b"are you there".to_vec()),
        Frame::message(vec![2u8; 10], OpCode::Data(Data::Continue), true),
        Frame::close(None),
    ];
    let mut stream = Vec::new();
    for (i, mut frame) in frames.into_iter().enumerate() {
        frame.header_mut().mask = Some([i as u8, 0x5A, 0xC3, 0x99]);
        frame.format(&mut stream).unwrap();
    }
    let mut binary = vec![1u8; 70_000];
    binary.extend_from_slice(&[2; 10]);
    let expected = vec![
        text("tick: ☺"),
        Owned::Ping(b"are you there".to_vec()),
        Owned::Binary(binary),
        Owned::Close(None),
    ];
    assert_eq!(feed_chunked(&stream, &[1000], 1 << 20), (expected, None));
}
