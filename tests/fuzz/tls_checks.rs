//! The check of the fuzz target `tls`: tickcast's TLS record layer (`tickcast::tls::session`,
//! `tickcast::tls::record`) reading hostile records after a completed handshake.
//!
//! Included with `#[path]` by `tests/fuzz/fuzz_targets/tls.rs` and by the main crate's
//! `tests/fuzz_corpus.rs`, like `checks.rs` (kept apart: it needs rustls, ring and rcgen).
//!
//! Each input is one connection: a real handshake between rustls' client and a tickcast
//! [`Session`] (the cipher suite chosen by the input), then the client's keys are taken out of
//! rustls and the input's records are sealed with them by hand, so they pass authentication and
//! reach the record layer's content handling: any content type, padding, alert, `KeyUpdate` or
//! length, besides raw bytes and tampered records. The stream is fed to the session in pieces
//! as the shard reads it (what a read leaves unconsumed is put in front of the next read).
//!
//! Input: `[suite, c1, c2, c3]` then operations (see [`build`]); pieces of `c1 + 1`, `c2 + 1`,
//! `c3 + 1`, `c1 + 1`, ... bytes (255: all the rest in one read).
//!
//! Checked against a reference reader written from RFC 8446 §5, §6 and §4.6.3 and RFC 5246 §6
//! over the whole stream (which records are genuine is known from how it was built): the
//! application data read is the reference's (all of it without an error; a prefix of it when the
//! connection fails, since a failing read's earlier records are not handed out), the error is
//! the reference's (the same alert, sent), the bytes kept between reads are exactly the
//! incomplete record at the end and never more than one record, nothing is read after
//! close_notify, and the server's next record is its own `KeyUpdate` exactly when the client
//! asked for one.

use std::sync::{Arc, OnceLock};

use ring::aead;
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, RootCertStore, ServerConfig,
    SupportedCipherSuite,
};
use tickcast::tls::{
    record::RecordError,
    session::{Session, SessionError},
    testing::{SUITES, TrafficKey, client_config},
};

const PLAIN_MAX: usize = 1 << 14;
const CT_CHANGE_CIPHER_SPEC: u8 = 20;
const CT_ALERT: u8 = 21;
const CT_HANDSHAKE: u8 = 22;
const CT_APPLICATION_DATA: u8 = 23;

type Configs = (Arc<ServerConfig>, Vec<Arc<ClientConfig>>);

/// The server's configuration and one client configuration per suite, made once (a fresh
/// certificate per input would cost more than the rest).
fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let server =
            tickcast::tls::server_config_from_pem(&ck.cert.pem(), &ck.signing_key.serialize_pem())
                .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let clients = SUITES
            .iter()
            .map(|&suite| client_config(suite, roots.clone(), true))
            .collect();
        (Arc::new(server), clients)
    })
}

/// How records are protected (it decides the layout).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Tls13,
    Tls12Gcm,
    Tls12Chacha,
}

impl Kind {
    fn ciphertext_max(self) -> usize {
        match self {
            Kind::Tls13 => PLAIN_MAX + 256,
            Kind::Tls12Gcm | Kind::Tls12Chacha => PLAIN_MAX + 2048,
        }
    }
}

/// A record of the stream as it was built: where it starts and what it holds.
struct Genuine {
    start: usize,
    /// TLS 1.3: the TLSInnerPlaintext (content, type, padding); TLS 1.2: the content.
    inner: Vec<u8>,
    outer: u8,
    /// The record as sealed (a flipped bit may have been flipped back).
    sealed: Vec<u8>,
}

/// `inner` (TLS 1.3: the whole TLSInnerPlaintext) sealed as one record of outer type `outer`
/// and legacy version `version`, whatever length that comes to.
fn seal(keys: &mut TrafficKey, kind: Kind, outer: u8, version: [u8; 2], inner: &[u8]) -> Vec<u8> {
    let explicit = if kind == Kind::Tls12Gcm { 8 } else { 0 };
    let len = u16::try_from(explicit + inner.len() + 16)
        .unwrap()
        .to_be_bytes();
    let header = [outer, version[0], version[1], len[0], len[1]];
    let nonce = aead::Nonce::assume_unique_for_key(keys.nonce());
    let mut body = inner.to_vec();
    let tag = if kind == Kind::Tls13 {
        keys.key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(header), &mut body)
    } else {
        let aad = tls12_aad(keys.seq, outer, version, inner.len());
        keys.key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), &mut body)
    }
    .unwrap();
    let mut record = header.to_vec();
    record.extend_from_slice(&keys.nonce()[4..4 + explicit]);
    record.extend_from_slice(&body);
    record.extend_from_slice(tag.as_ref());
    keys.seq += 1;
    record
}

/// RFC 5246 §6.2.3.3: sequence number, type, version, plaintext length.
fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    aad
}

/// Builds the stream from an input's operations, each a tag byte (`% 8`) and its operands:
///
/// - 0 `[n] data`: application data, `n` bytes.
/// - 1 `[typ, pad, n] data`: a record of content type `typ` (TLS 1.3: the inner type, then
///   `pad * 67` zeros; TLS 1.2: the record's type), `n` bytes.
/// - 2 `[level, description]`: an alert.
/// - 3 `[request]`: a `KeyUpdate` (any request byte).
/// - 4 `[sel]`: application data of `sel * 67` bytes (up to 17,085: over 2^14).
/// - 5 `[n] bytes`: `n` raw bytes, not a sealed record.
/// - 6 `[pos]`: flips a bit of the last record built.
/// - 7 `[v1, v2, n] data`: application data under legacy version `v1 v2` (ignored in TLS 1.3;
///   part of the additional data in TLS 1.2).
fn build(mut ops: &[u8], keys: &mut TrafficKey, kind: Kind) -> (Vec<u8>, Vec<Genuine>) {
    fn take(ops: &mut &[u8], n: usize) -> Vec<u8> {
        let (head, rest) = ops.split_at(n.min(ops.len()));
        *ops = rest;
        head.to_vec()
    }
    fn one(ops: &mut &[u8]) -> u8 {
        take(ops, 1).first().copied().unwrap_or(0)
    }
    // The outer type of a protected record of type `typ`.
    let outer = |typ: u8| {
        if kind == Kind::Tls13 {
            CT_APPLICATION_DATA
        } else {
            typ
        }
    };
    let mut wire = Vec::new();
    let mut records: Vec<Genuine> = Vec::new();
    while let Some(tag) = ops.first().copied() {
        ops = &ops[1..];
        let (typ, version, content, pad) = match tag % 8 {
            0 => {
                let n = one(&mut ops);
                (CT_APPLICATION_DATA, [3, 3], take(&mut ops, n.into()), 0)
            }
            1 => {
                let (typ, pad, n) = (one(&mut ops), one(&mut ops), one(&mut ops));
                (typ, [3, 3], take(&mut ops, n.into()), usize::from(pad) * 67)
            }
            2 => (CT_ALERT, [3, 3], take(&mut ops, 2), 0),
            3 => (CT_HANDSHAKE, [3, 3], vec![24, 0, 0, 1, one(&mut ops)], 0),
            4 => {
                let n = usize::from(one(&mut ops)) * 67;
                (
                    CT_APPLICATION_DATA,
                    [3, 3],
                    (0..n).map(|i| i as u8).collect(),
                    0,
                )
            }
            5 => {
                let n = one(&mut ops);
                wire.extend_from_slice(&take(&mut ops, n.into()));
                continue;
            }
            6 => {
                let pos = one(&mut ops);
                if let Some(last) = records.last() {
                    wire[last.start + usize::from(pos) % last.sealed.len()] ^= 1 << (pos % 8);
                }
                continue;
            }
            _ => {
                let version = [one(&mut ops), one(&mut ops)];
                let n = one(&mut ops);
                (CT_APPLICATION_DATA, version, take(&mut ops, n.into()), 0)
            }
        };
        let mut inner = content;
        if kind == Kind::Tls13 {
            inner.push(typ);
            inner.resize(inner.len() + pad, 0);
        }
        let record = seal(keys, kind, outer(typ), version, &inner);
        records.push(Genuine {
            start: wire.len(),
            inner,
            outer: outer(typ),
            sealed: record.clone(),
        });
        wire.extend_from_slice(&record);
    }
    (wire, records)
}

/// How the reference reader's reading of the whole stream ends.
#[derive(Debug, PartialEq)]
enum End {
    /// At an incomplete record of this many bytes (0: on a record boundary).
    Partial(usize),
    /// At the client's close_notify.
    Closed,
    /// A fatal error: the alert sent (`Send`), or the one received.
    Failed(RecordError),
}

struct Reference {
    plain: Vec<u8>,
    end: End,
    key_update_due: bool,
}

fn reference(wire: &[u8], records: &[Genuine], kind: Kind) -> Reference {
    use AlertDescription as A;
    let mut r = Reference {
        plain: Vec::new(),
        end: End::Partial(0),
        key_update_due: false,
    };
    let fail = |mut r: Reference, alert| {
        r.end = End::Failed(RecordError::Send(alert, ""));
        r
    };
    // As rustls (after BoringSSL): a few warnings, a few KeyUpdates in a row.
    let (mut warnings_left, mut key_updates_left) = (4u8, 32u8);
    // The client's key changed (a KeyUpdate accepted): what it sealed later no longer opens.
    let mut rekeyed = false;
    let mut pos = 0;
    loop {
        let rest = &wire[pos..];
        if rest.len() < 5 {
            r.end = End::Partial(rest.len());
            return r;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        // RFC 8446 §5.2, RFC 5246 §6.2.3: longer ciphertext is a record_overflow.
        if len > kind.ciphertext_max() {
            return fail(r, A::RecordOverflow);
        }
        if rest.len() < 5 + len {
            r.end = End::Partial(rest.len());
            return r;
        }
        // RFC 8446 §5: after the handshake everything is protected application_data outside
        // (a change_cipher_spec included); RFC 5246 §7.1: no change_cipher_spec after it.
        let outer = rest[0];
        if (kind == Kind::Tls13 && outer != CT_APPLICATION_DATA)
            || (kind != Kind::Tls13 && outer == CT_CHANGE_CIPHER_SPEC)
        {
            return fail(r, A::UnexpectedMessage);
        }
        let genuine = records
            .iter()
            .find(|g| g.start == pos && g.sealed == rest[..5 + len]);
        let Some(genuine) = genuine.filter(|_| !rekeyed) else {
            return fail(r, A::BadRecordMac);
        };
        pos += 5 + len;
        let (typ, content) = if kind == Kind::Tls13 {
            // §5.4: at most 2^14 + 1 bytes with the padding; the type is the last non-zero
            // byte, and none at all is an unexpected_message.
            if genuine.inner.len() > PLAIN_MAX + 1 {
                return fail(r, A::RecordOverflow);
            }
            let Some(at) = genuine.inner.iter().rposition(|&b| b != 0) else {
                return fail(r, A::UnexpectedMessage);
            };
            (genuine.inner[at], &genuine.inner[..at])
        } else {
            (genuine.outer, &genuine.inner[..])
        };
        if content.len() > PLAIN_MAX {
            return fail(r, A::RecordOverflow);
        }
        match typ {
            CT_APPLICATION_DATA => {
                r.plain.extend_from_slice(content);
                key_updates_left = 32;
            }
            CT_ALERT => {
                // §5.1: one alert per record, not fragmented.
                let &[level, description] = content else {
                    return fail(r, A::DecodeError);
                };
                let description = A::from(description);
                // §6.1: close_notify ends the stream; what follows is not read.
                if description == A::CloseNotify {
                    r.end = End::Closed;
                    return r;
                }
                match level {
                    2 => {
                        r.end = End::Failed(RecordError::AlertReceived(description));
                        return r;
                    }
                    // §6: TLS 1.3 has no warning alerts but user_canceled.
                    1 if (kind != Kind::Tls13 || description == A::UserCanceled)
                        && warnings_left > 0 =>
                    {
                        warnings_left -= 1;
                    }
                    1 => return fail(r, A::DecodeError),
                    _ => return fail(r, A::IllegalParameter),
                }
            }
            // §4.6.3: a KeyUpdate, alone in its record (§5.1: it must end the record). TLS 1.2
            // takes no handshake message after the handshake (renegotiation is refused), and
            // a client sends no other post-handshake message in TLS 1.3.
            CT_HANDSHAKE if kind == Kind::Tls13 && content.first() == Some(&24) => {
                let &[24, 0, 0, 1, request] = content else {
                    return fail(r, A::DecodeError);
                };
                if request > 1 {
                    return fail(r, A::IllegalParameter);
                }
                if key_updates_left == 0 {
                    return fail(r, A::UnexpectedMessage);
                }
                key_updates_left -= 1;
                rekeyed = true;
                r.key_update_due |= request == 1;
            }
            _ => return fail(r, A::UnexpectedMessage),
        }
    }
}

/// A handshake between rustls' client and a session: the session, the client's keys for
/// sending and receiving, and, with `finished_in_stream` (TLS 1.3 only), the client's last
/// flight (its Finished), not yet read by the server: the stream then starts with it, so the
/// hand-over from rustls to the record layer happens within the fuzzed reads.
fn connect(suite: usize, finished_in_stream: bool) -> (Session, TrafficKey, TrafficKey, Vec<u8>) {
    let (server, clients) = configs();
    let mut server = Session::new(server.clone()).unwrap();
    let mut client =
        ClientConnection::new(clients[suite].clone(), "localhost".try_into().unwrap()).unwrap();
    let mut finished = Vec::new();
    for _ in 0..4 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if finished_in_stream && !client.is_handshaking() && server.is_handshaking() {
            finished = wire;
            break;
        }
        let (mut early, mut send) = (Vec::new(), Vec::new());
        let read = server.read(&mut wire, &mut early, &mut send).unwrap();
        assert!(early.is_empty() && read.plain.is_empty() && read.consumed == wire.len());
        let mut send = &send[..];
        while !send.is_empty() {
            client.read_tls(&mut send).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    assert!(!client.is_handshaking());
    assert_eq!(server.is_handshaking(), !finished.is_empty());
    let secrets = client.dangerous_extract_secrets().unwrap();
    (
        server,
        TrafficKey::new(secrets.tx),
        TrafficKey::new(secrets.rx),
        finished,
    )
}

/// The check (see the module doc).
pub fn tls(data: &[u8]) {
    check(data);
}

/// How the reference reads an input, for `tests/fuzz_corpus.rs` (which checks the corpus
/// reaches every ending): "partial", "closed", the alert sent or the one received, and
/// "key update answered" when the client asked for one.
pub fn tls_outcomes(data: &[u8]) -> Vec<String> {
    let Some(want) = check(data) else {
        return Vec::new();
    };
    let mut outcomes = vec![match want.end {
        End::Partial(_) => "partial".to_string(),
        End::Closed => "closed".to_string(),
        End::Failed(RecordError::Send(alert, _)) => format!("sent {alert:?}"),
        End::Failed(e) => format!("{e:?}"),
    }];
    if want.key_update_due {
        outcomes.push("key update answered".into());
    }
    outcomes
}

fn check(data: &[u8]) -> Option<Reference> {
    let [suite_byte, c1, c2, c3, ref ops @ ..] = *data else {
        return None;
    };
    let suite = usize::from(suite_byte) % SUITES.len();
    let kind = match SUITES[suite] {
        SupportedCipherSuite::Tls13(_) => Kind::Tls13,
        _ if suite == 5 => Kind::Tls12Chacha,
        _ => Kind::Tls12Gcm,
    };
    let (mut server, mut up, mut down, finished) = connect(suite, suite_byte >= 128);
    let (records_wire, records) = build(ops, &mut up, kind);
    let want = reference(&records_wire, &records, kind);
    let wire = [finished, records_wire].concat();
    // What the server sends while reading: its NewSessionTickets after the client's Finished.
    let mut sent = Vec::new();

    // The shard's reads: what a read leaves is put in front of the next one.
    let (mut plain, mut tail, mut closed, mut error) = (Vec::new(), Vec::new(), false, None);
    let pieces = [c1, c2, c3].map(|c| {
        if c == 255 {
            usize::MAX
        } else {
            usize::from(c) + 1
        }
    });
    let (mut at, mut i) = (0, 0);
    while at < wire.len() {
        let n = pieces[i % 3].min(wire.len() - at);
        i += 1;
        let mut buf = std::mem::take(&mut tail);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        let (mut early, mut send) = (Vec::new(), Vec::new());
        match server.read(&mut buf, &mut early, &mut send) {
            Ok(read) => {
                // rustls gets no record after the client's Finished: the record layer does.
                assert!(early.is_empty(), "rustls read after the handshake");
                sent.extend_from_slice(&send);
                assert!(!closed || read.plain.is_empty(), "data after close_notify");
                assert!(read.plain.end <= read.consumed && read.consumed <= buf.len());
                plain.extend_from_slice(&buf[read.plain]);
                tail = buf[read.consumed..].to_vec();
                assert!(
                    tail.len() < 5 + kind.ciphertext_max(),
                    "kept more than a record"
                );
                closed |= read.peer_closed;
            }
            Err(SessionError::Record(e)) => {
                // The alert the error calls for was sealed (none for one received).
                let sends = matches!(e, RecordError::Send(..));
                assert!(!sends || !send.is_empty(), "no alert for {e:?}");
                sent.extend_from_slice(&send);
                error = Some(e);
                break;
            }
            Err(e) => panic!("not a record error: {e:?}"),
        }
    }
    // What the server sent while reading: its tickets (TLS 1.3, after the client's Finished),
    // then the alert of an error, if it calls for one (after a KeyUpdate the client asked for,
    // under the next key, which is not followed here).
    let mut pos = 0;
    while pos < sent.len() {
        let (typ, content, len) = open_next(&mut down, kind, &mut sent[pos..]);
        pos += len;
        match (typ, content.first()) {
            (CT_HANDSHAKE, Some(4)) => {}
            (CT_HANDSHAKE, Some(24)) => break,
            (CT_ALERT, _) => {
                let Some(RecordError::Send(alert, _)) = error else {
                    panic!("an alert without an error to send it for")
                };
                assert_eq!(content, [2, u8::from(alert)], "the alert sent");
                assert_eq!(pos, sent.len(), "a record after the alert");
            }
            other => panic!("the server sent {other:?} while reading"),
        }
    }
    match (&want.end, error) {
        (End::Failed(RecordError::Send(alert, _)), Some(RecordError::Send(got, _))) => {
            assert_eq!(*alert, got, "the alert");
            assert!(want.plain.starts_with(&plain), "data not in the stream");
            return Some(want);
        }
        (End::Failed(want_e), Some(got)) => {
            assert_eq!(*want_e, got);
            assert!(want.plain.starts_with(&plain), "data not in the stream");
            return Some(want);
        }
        (End::Failed(want_e), None) => panic!("the reference fails ({want_e:?}), the server not"),
        (want_end, got) => assert_eq!(got, None, "the reference reads on ({want_end:?})"),
    }
    assert_eq!(plain, want.plain, "application data");
    match want.end {
        End::Closed => assert!(closed && tail.is_empty(), "close_notify"),
        End::Partial(n) => assert!(!closed && tail.len() == n, "kept {} of {n}", tail.len()),
        End::Failed(_) => unreachable!("handled above"),
    }
    if closed {
        return Some(want);
    }
    // The server's next record: its KeyUpdate when the client asked for one (RFC 8446
    // §4.6.3: before its next application data), else the data, under the key the client
    // expects.
    let records = server.records().expect("established");
    let mut out = Vec::new();
    let x = [std::io::IoSlice::new(b"x")];
    assert_eq!(records.seal(&x, 1, &mut out), Ok(1));
    let (typ, content, _) = open_next(&mut down, kind, &mut out);
    if want.key_update_due {
        assert_eq!((typ, &content[..]), (CT_HANDSHAKE, &[24, 0, 0, 1, 0][..]));
    } else {
        assert_eq!((typ, &content[..]), (CT_APPLICATION_DATA, &b"x"[..]));
    }
    Some(want)
}

/// Opens the first record of `wire` with the client's receiving key: its type, its content
/// and its length on the wire.
fn open_next(keys: &mut TrafficKey, kind: Kind, wire: &mut [u8]) -> (u8, Vec<u8>, usize) {
    let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
    let (header, rest) = wire.split_at_mut(5);
    let payload = &mut rest[..len];
    let mut nonce = keys.nonce();
    keys.seq += 1;
    if kind == Kind::Tls13 {
        let inner = keys
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&*header),
                payload,
            )
            .expect("the server's record opens");
        let at = inner.iter().rposition(|&b| b != 0).unwrap();
        return (inner[at], inner[..at].to_vec(), 5 + len);
    }
    let explicit = if kind == Kind::Tls12Gcm { 8 } else { 0 };
    if explicit > 0 {
        nonce[4..].copy_from_slice(&payload[..8]);
    }
    let aad = tls12_aad(
        keys.seq - 1,
        header[0],
        [header[1], header[2]],
        len - explicit - 16,
    );
    let plain = keys
        .key
        .open_within(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            payload,
            explicit..,
        )
        .expect("the server's record opens");
    (header[0], plain.to_vec(), 5 + len)
}
