//! [`Session`] and [`Records`] against rustls' own client, in memory: every cipher suite the
//! server offers on both versions, records split across reads, key updates both ways, the
//! confidentiality limit, close_notify both ways, and a tampered record.

use std::{
    io::{IoSlice, Read, Write},
    sync::Arc,
};

use ring::aead;
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite,
};

use super::{
    record::{PLAIN_RECORD_BYTES_MAX, RecordError},
    server_config_from_pem,
    session::{HANDSHAKE_HELD_BYTES_MAX, Session, SessionError},
    testing::{SUITES, TrafficKey, client_config},
};

/// A server configuration from a fresh self-signed certificate for `localhost`, and a client
/// configuration trusting it that offers only `suite` (`extractable`: its keys can be taken
/// out).
fn configs_with(
    suite: SupportedCipherSuite,
    extractable: bool,
) -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let server = server_config_from_pem(&ck.cert.pem(), &ck.signing_key.serialize_pem()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    (Arc::new(server), client_config(suite, roots, extractable))
}

/// Both ends of a connection, and what the server kept and decrypted so far.
struct Pair {
    server: Session,
    client: ClientConnection,
    client_config: Arc<ClientConfig>,
    /// Bytes of an incomplete record kept between the server's reads.
    tail: Vec<u8>,
    /// Application data the server received.
    received: Vec<u8>,
    peer_closed: bool,
    /// The client's error (an alert from the server), if it got one.
    client_error: Option<rustls::Error>,
}

impl Pair {
    fn new(suite: SupportedCipherSuite) -> Pair {
        Pair::new_with(suite, false)
    }

    /// `extractable`: the client's keys can be taken out ([`Pair::forger`]).
    fn new_with(suite: SupportedCipherSuite, extractable: bool) -> Pair {
        let (server, client) = configs_with(suite, extractable);
        Pair {
            server: Session::new(server).unwrap(),
            client: ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap(),
            client_config: client,
            tail: Vec::new(),
            received: Vec::new(),
            peer_closed: false,
            client_error: None,
        }
    }

    /// A pair whose handshake is done.
    fn established(suite: SupportedCipherSuite) -> Pair {
        Pair::established_with(suite, false)
    }

    fn established_with(suite: SupportedCipherSuite, extractable: bool) -> Pair {
        let mut p = Pair::new_with(suite, extractable);
        for _ in 0..4 {
            p.client_to_server(usize::MAX).unwrap();
        }
        assert!(!p.client.is_handshaking() && !p.server.is_handshaking());
        p
    }

    /// The client's sending key, taken out of it (the pair's client is replaced by a fresh
    /// one): records from here on are sealed by hand.
    fn forger(&mut self) -> TrafficKey {
        let config = self.client_config.clone();
        let fresh = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let client = std::mem::replace(&mut self.client, fresh);
        TrafficKey::new(client.dangerous_extract_secrets().unwrap().tx)
    }

    /// What the client has to send goes to the server in reads of at most `chunk` bytes;
    /// what the server answers goes back to the client.
    fn client_to_server(&mut self, chunk: usize) -> Result<(), SessionError> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        for piece in wire.chunks(chunk.max(1)) {
            self.server_reads(piece)?;
        }
        if wire.is_empty() {
            self.server_reads(&[])?;
        }
        Ok(())
    }

    /// One server read of `bytes`, after the kept tail, as the shard does it.
    fn server_reads(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(bytes);
        let (mut early, mut send) = (Vec::new(), Vec::new());
        let result = self.server.read(&mut buf, &mut early, &mut send);
        self.client_reads(&send);
        let read = result?;
        self.received.extend_from_slice(&early);
        self.received.extend_from_slice(&buf[read.plain.clone()]);
        self.tail = buf[read.consumed..].to_vec();
        self.peer_closed |= read.peer_closed;
        Ok(())
    }

    /// Ciphertext from the server: the client processes it and returns its plaintext.
    fn client_reads(&mut self, mut wire: &[u8]) -> Vec<u8> {
        while !wire.is_empty() {
            self.client.read_tls(&mut wire).unwrap();
            if let Err(e) = self.client.process_new_packets() {
                self.client_error = Some(e);
                return Vec::new();
            }
        }
        let mut plain = Vec::new();
        match self.client.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("client read: {e}"),
        }
        plain
    }

    /// The server seals `parts` (as one write of several frames) for the client.
    fn server_sends(&mut self, parts: &[&[u8]]) -> Vec<u8> {
        let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Vec::new();
        let records = self.server.records().expect("established");
        let taken = records.seal(&iov, usize::MAX, &mut out).unwrap();
        assert_eq!(taken, total);
        self.client_reads(&out)
    }
}

/// A TLS 1.3 record of `content` with inner content type `typ` and `padding` zeros, sealed with
/// the client's key `key`, as no real client would.
fn seal13(key: &mut TrafficKey, content: &[u8], typ: u8, padding: usize) -> Vec<u8> {
    let mut inner = content.to_vec();
    inner.push(typ);
    inner.resize(inner.len() + padding, 0);
    let len = u16::try_from(inner.len() + 16).unwrap().to_be_bytes();
    let header = [23, 3, 3, len[0], len[1]];
    let nonce = key.nonce();
    key.seq += 1;
    key.key
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(header),
            &mut inner,
        )
        .unwrap();
    [&header[..], &inner].concat()
}

/// `err` is a record error whose answer is `alert`.
#[track_caller]
fn assert_alert(err: SessionError, alert: AlertDescription) {
    assert!(
        matches!(err, SessionError::Record(RecordError::Send(a, _)) if a == alert),
        "{err:?}, not {alert:?}"
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn every_suite_carries_data_both_ways_across_record_boundaries() {
    for suite in SUITES {
        let mut p = Pair::established(suite);
        // From the client: larger than a record, so it arrives as several.
        let up = pattern(3 * PLAIN_RECORD_BYTES_MAX + 100, 1);
        p.client.writer().write_all(&up).unwrap();
        p.client_to_server(usize::MAX).unwrap();
        assert_eq!(p.received, up, "{suite:?}: client to server");
        // From the server: several frames in one write, records spanning them.
        let (a, b, c) = (
            pattern(10, 2),
            pattern(PLAIN_RECORD_BYTES_MAX + 5, 3),
            pattern(1, 4),
        );
        let down = p.server_sends(&[&a, &b, &c]);
        assert_eq!(down, [a, b, c].concat(), "{suite:?}: server to client");
    }
}

#[test]
fn a_record_split_across_reads_is_kept_until_it_is_whole() {
    for suite in [SUITES[0], SUITES[3]] {
        let mut p = Pair::new(suite);
        // The handshake too, a few bytes per read.
        for _ in 0..4 {
            p.client_to_server(7).unwrap();
        }
        assert!(!p.server.is_handshaking());
        let up = pattern(40_000, 5);
        p.client.writer().write_all(&up).unwrap();
        p.client_to_server(999).unwrap();
        assert_eq!(p.received, up, "{suite:?}");
        assert!(p.tail.is_empty(), "nothing kept once the records are whole");
    }
}

#[test]
fn the_request_sent_with_the_clients_finished_is_read() {
    let mut p = Pair::new(SUITES[0]);
    // The client's first flight, then its Finished together with a request.
    p.client_to_server(usize::MAX).unwrap();
    p.client
        .writer()
        .write_all(b"GET /ws HTTP/1.1\r\n\r\n")
        .unwrap();
    p.client_to_server(usize::MAX).unwrap();
    assert!(!p.server.is_handshaking());
    assert_eq!(p.received, b"GET /ws HTTP/1.1\r\n\r\n");
}

#[test]
fn key_updates_from_the_client_and_ours_at_the_limit_keep_data_flowing() {
    let mut p = Pair::established(SUITES[0]);
    for round in 0..3u8 {
        // The client updates its keys and asks the server to update too.
        p.client.refresh_traffic_keys().unwrap();
        p.client.writer().write_all(&[round; 100]).unwrap();
        p.client_to_server(usize::MAX).unwrap();
        assert_eq!(p.received, [round; 100]);
        p.received.clear();
        assert!(p.server.records().unwrap().key_update_due());
        // Ours goes first: the client reads on only with the server's new key.
        assert_eq!(p.server_sends(&[&[round; 50]]), [round; 50]);
        assert!(!p.server.records().unwrap().key_update_due());
    }
    // The server's key reaches its confidentiality limit: it updates before going on.
    p.server.records().unwrap().near_tx_limit();
    assert_eq!(
        p.server_sends(&[b"last of the old key"]),
        b"last of the old key"
    );
    assert_eq!(p.server_sends(&[b"first of the new"]), b"first of the new");
}

#[test]
fn tls12_keys_at_their_limit_end_the_connection() {
    let mut p = Pair::established(SUITES[3]);
    p.server.records().unwrap().near_tx_limit();
    assert_eq!(p.server_sends(&[b"the last record"]), b"the last record");
    let err = p
        .server
        .records()
        .unwrap()
        .seal(
            &[IoSlice::new(b"one too many")],
            usize::MAX,
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(err, RecordError::KeysExhausted);
}

#[test]
fn close_notify_both_ways() {
    for suite in [SUITES[0], SUITES[5]] {
        let mut p = Pair::established(suite);
        p.client.writer().write_all(b"bye").unwrap();
        p.client.send_close_notify();
        p.client_to_server(usize::MAX).unwrap();
        assert_eq!(p.received, b"bye");
        assert!(p.peer_closed, "{suite:?}");
        let mut out = Vec::new();
        p.server.records().unwrap().close_notify(&mut out).unwrap();
        p.client_reads(&out);
        let mut rest = Vec::new();
        assert_eq!(
            p.client.reader().read_to_end(&mut rest).unwrap(),
            0,
            "clean EOF"
        );
    }
}

#[test]
fn a_tampered_record_is_refused_with_bad_record_mac() {
    let mut p = Pair::established(SUITES[1]);
    p.client.writer().write_all(b"hello").unwrap();
    let mut wire = Vec::new();
    p.client.write_tls(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let err = p.server_reads(&wire).unwrap_err();
    assert_alert(err, AlertDescription::BadRecordMac);
    assert_eq!(
        p.client_error,
        Some(rustls::Error::AlertReceived(AlertDescription::BadRecordMac))
    );
}

#[test]
fn garbage_instead_of_a_client_hello_is_refused() {
    let mut p = Pair::new(SUITES[0]);
    let err = p.server_reads(b"GET / HTTP/1.1\r\n\r\n");
    assert!(matches!(err, Err(SessionError::Handshake(_))), "{err:?}");
    // rustls' alert for it went out.
    assert!(p.client_error.is_some());
}

/// What an idle established connection keeps: our expanded key, the client's key bytes, nonces,
/// sequence numbers and rustls' kernel connection (perf/README.md, "TLS memory per
/// connection"), in one allocation of mimalloc's 1,280-byte size class (1,232 bytes on x86-64
/// at ring 0.17.14, rustls 0.23.46).
#[test]
fn an_established_session_is_small() {
    assert!(std::mem::size_of::<super::record::Records>() <= 1280);
    assert_eq!(std::mem::size_of::<Session>(), 16);
}

/// A client that updates its keys (and asks for ours) right after its Finished, in the same
/// flight: the hand-over happens at the Finished, so the `KeyUpdate` is ours to read and to
/// answer. (rustls read it before the hand-over, updated its sending key and queued its answer,
/// and that answer was lost with rustls: the client could not read the server any more.)
/// Also when the flight arrives in pieces that end anywhere in its records.
#[test]
fn a_key_update_sent_with_the_clients_finished_is_answered() {
    let pieces = (1..160).map(|chunk| (SUITES[chunk % 3], chunk));
    for (suite, chunk) in pieces.chain([(SUITES[0], usize::MAX)]) {
        let mut p = Pair::new(suite);
        p.client_to_server(usize::MAX).unwrap();
        assert!(
            !p.client.is_handshaking(),
            "the client's Finished is queued"
        );
        p.client.refresh_traffic_keys().unwrap();
        p.client
            .writer()
            .write_all(b"GET /ws HTTP/1.1\r\n\r\n")
            .unwrap();
        p.client_to_server(chunk).unwrap();
        assert!(!p.server.is_handshaking());
        assert_eq!(p.received, b"GET /ws HTTP/1.1\r\n\r\n", "{suite:?} {chunk}");
        assert_eq!(p.server_sends(&[b"101"]), b"101", "{suite:?} {chunk}");
        assert_eq!(p.client_error, None, "{suite:?} {chunk}");
    }
}

/// A handshake message sent a byte per record makes rustls keep every record of it (headers
/// included) until the message is whole: six bytes per byte of a message of up to 64 KiB. The
/// session refuses to hold more than `HANDSHAKE_HELD_BYTES_MAX`, as rustls' own buffered
/// connection refused to (its deframer buffer stops at 64 KiB).
#[test]
fn a_handshake_message_in_one_byte_records_is_refused_at_the_bound() {
    let mut p = Pair::new(SUITES[0]);
    // A ClientHello announcing 0xfff0 bytes, one byte per record.
    let mut msg = vec![1u8, 0x00, 0xff, 0xf0];
    msg.resize(4 + 0xfff0, 0);
    let mut refused = false;
    for part in msg.chunks(1000) {
        let wire: Vec<u8> = part.iter().flat_map(|&b| [22, 3, 1, 0, 1, b]).collect();
        match p.server_reads(&wire) {
            Ok(()) => assert!(
                p.tail.len() <= HANDSHAKE_HELD_BYTES_MAX,
                "{} bytes kept",
                p.tail.len()
            ),
            Err(e) => {
                assert!(matches!(e, SessionError::Handshake(_)), "{e:?}");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "a 64 KiB message in one-byte records");
}

/// A ClientHello cut into records of 40 bytes, arriving 100 bytes per read: rustls collects
/// the message across records and reads, and is given what it already saw again each time.
#[test]
fn a_client_hello_in_many_records_across_reads_completes() {
    for suite in [SUITES[0], SUITES[3]] {
        let mut p = Pair::new(suite);
        let mut hello = Vec::new();
        while p.client.wants_write() {
            p.client.write_tls(&mut hello).unwrap();
        }
        assert_eq!(hello[0], 22, "one handshake record");
        let wire: Vec<u8> = hello[5..]
            .chunks(40)
            .flat_map(|part| {
                let len = (part.len() as u16).to_be_bytes();
                [&[22, 3, 1, len[0], len[1]][..], part].concat()
            })
            .collect();
        for piece in wire.chunks(100) {
            p.server_reads(piece).unwrap();
        }
        for _ in 0..3 {
            p.client_to_server(usize::MAX).unwrap();
        }
        assert!(!p.server.is_handshaking(), "{suite:?}");
        p.client.writer().write_all(b"ping").unwrap();
        p.client_to_server(usize::MAX).unwrap();
        assert_eq!(p.received, b"ping", "{suite:?}");
    }
}

/// RFC 8446 §5.4: the whole TLSInnerPlaintext (content, type, padding) is at most 2^14 + 1
/// bytes; more is a record_overflow even when the content alone fits.
#[test]
fn padding_past_the_inner_plaintext_limit_is_a_record_overflow() {
    let mut p = Pair::established_with(SUITES[1], true);
    let mut forger = p.forger();
    // At the limit: 2^14 bytes of content, its type, no padding.
    let full = pattern(PLAIN_RECORD_BYTES_MAX, 9);
    p.server_reads(&seal13(&mut forger, &full, 23, 0)).unwrap();
    assert_eq!(p.received, full);
    // 2^14 - 100 bytes of content, its type and 101 zeros: one byte over.
    let over = seal13(&mut forger, &full[..PLAIN_RECORD_BYTES_MAX - 100], 23, 101);
    let err = p.server_reads(&over).unwrap_err();
    assert_alert(err, AlertDescription::RecordOverflow);
}
