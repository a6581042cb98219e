//! One TLS server session over caller-owned buffers: rustls' unbuffered connection for the
//! handshake, then [`Records`] once it is done. Nothing here reads or writes a socket or keeps
//! a buffer: ciphertext comes in through the caller's buffer (processed in place), ciphertext
//! to send goes out through another, so a connection that is idle holds its keys and nothing
//! else.
//!
//! The handshake runs on rustls' state machine (`process_tls_records`): it takes the records
//! it can from the front of the buffer and says how many bytes it is done with; the caller
//! keeps the rest (a record still arriving) and hands it in again, in front of the next read.
//! When rustls says the handshake is over and it has nothing left to send, the session turns
//! into a [`Records`] (see `record.rs` for why) and reads on from there.
//!
//! Two things rustls' unbuffered API leaves to its caller are done here: rustls is given one
//! whole record at a time, so the hand-over happens exactly after the client's Finished and
//! every record after it is the record layer's (`handshake`); and what a handshaking session
//! leaves for its connection to keep is bounded ([`HANDSHAKE_HELD_BYTES_MAX`]).

use std::{ops::Range, sync::Arc};

use rustls::{
    ServerConfig,
    server::UnbufferedServerConnection,
    unbuffered::{ConnectionState, EncodeError, InsufficientSizeError},
};

use super::record::{HEADER_BYTES, RecordError, Records};

/// Most bytes of records a session in its handshake leaves unconsumed for the caller to keep
/// (a handshake message arriving in several records, the start of the next record): rustls'
/// largest handshake message (64 KiB, its `MAX_HANDSHAKE_SIZE`) and one whole record of
/// ciphertext (RFC 5246 §6.2.3: 2^14 + 2,048 bytes after its 5-byte header). rustls' buffered
/// connection stopped reading at 64 KiB; its unbuffered one leaves the bound to its caller, and
/// a message sent one byte per record would otherwise be kept at six bytes per byte.
pub const HANDSHAKE_HELD_BYTES_MAX: usize = 0xffff + 5 + (1 << 14) + 2048;

/// A TLS server session (see the module doc).
pub struct Session(Stage);

enum Stage {
    Handshake(Box<Handshaking>),
    Traffic(Box<Records>),
    /// Failed, or the client closed during the handshake: nothing more is read or sent.
    Over,
}

/// A session in its handshake.
struct Handshaking {
    conn: UnbufferedServerConnection,
    /// How many bytes at the front of what the caller kept rustls has been given already: it
    /// must be given them again (it may have begun to work on them in place: a handshake
    /// message arriving in several records).
    seen: usize,
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionError {
    /// rustls refused the handshake (its alert, if any, is in `send`).
    Handshake(rustls::Error),
    /// After the handshake (the alert, if any, is in `send`).
    Record(RecordError),
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Handshake(e) => write!(f, "TLS handshake: {e}"),
            SessionError::Record(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// What [`Session::read`] did with a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Bytes taken from the front of the buffer; keep the rest for the next read.
    pub consumed: usize,
    /// Where, within the consumed bytes, the application data decrypted in place is (after
    /// whatever rustls decrypted during the handshake, appended to `early`).
    pub plain: Range<usize>,
    /// The handshake completed in this read.
    pub established: bool,
    /// The client sent close_notify: nothing more will be read.
    pub peer_closed: bool,
}

impl Session {
    /// A session for a connection just accepted, with the configuration of the moment.
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        let conn = UnbufferedServerConnection::new(config)?;
        Ok(Session(Stage::Handshake(Box::new(Handshaking {
            conn,
            seen: 0,
        }))))
    }

    /// The handshake is still going (application data cannot be sent yet).
    pub fn is_handshaking(&self) -> bool {
        matches!(self.0, Stage::Handshake(_))
    }

    /// Processes the records in `buf`: the handshake's through rustls (the records it wants
    /// sent are appended to `send`, the application data it decrypts to `early`), then the
    /// application data of an established session, decrypted in place. On an error, the
    /// alert to send (if any) has been appended to `send`.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        early: &mut Vec<u8>,
        send: &mut Vec<u8>,
    ) -> Result<Read, SessionError> {
        let mut read = Read {
            consumed: 0,
            plain: 0..0,
            established: false,
            peer_closed: false,
        };
        if let Stage::Handshake(hs) = &mut self.0 {
            let done = match handshake(&mut hs.conn, buf, hs.seen, early, send) {
                Ok(done) => done,
                Err(e) => {
                    self.0 = Stage::Over;
                    return Err(SessionError::Handshake(e));
                }
            };
            read.consumed = done.consumed;
            hs.seen = done.given.saturating_sub(done.consumed);
            match done.outcome {
                Handshake::Blocked if buf.len() - done.consumed > HANDSHAKE_HELD_BYTES_MAX => {
                    self.0 = Stage::Over;
                    return Err(SessionError::Handshake(rustls::Error::General(
                        "handshake message too large".into(),
                    )));
                }
                Handshake::Blocked => return Ok(read),
                Handshake::PeerClosed => {
                    self.0 = Stage::Over;
                    read.peer_closed = true;
                    return Ok(read);
                }
                Handshake::Complete => self.establish()?,
            }
            read.established = true;
        }
        let Stage::Traffic(records) = &mut self.0 else {
            // Over: whatever comes is ignored.
            read.consumed = buf.len();
            return Ok(read);
        };
        let start = read.consumed;
        match records.open(&mut buf[start..]) {
            Ok(opened) => {
                read.consumed += opened.consumed;
                read.plain = start..start + opened.plain;
                read.peer_closed = records.peer_closed();
                Ok(read)
            }
            Err(e) => {
                if let RecordError::Send(alert, _) = e {
                    records.fatal_alert(alert, send);
                }
                self.0 = Stage::Over;
                Err(SessionError::Record(e))
            }
        }
    }

    /// rustls is done: its keys and sequence numbers go to a [`Records`].
    fn establish(&mut self) -> Result<(), SessionError> {
        let Stage::Handshake(hs) = std::mem::replace(&mut self.0, Stage::Over) else {
            unreachable!("called during the handshake");
        };
        let (secrets, kernel) = hs
            .conn
            .dangerous_into_kernel_connection()
            .map_err(SessionError::Handshake)?;
        let records = Records::new(secrets, kernel).map_err(SessionError::Record)?;
        self.0 = Stage::Traffic(Box::new(records));
        Ok(())
    }

    /// The established session's record layer; `None` during the handshake or once over.
    pub fn records(&mut self) -> Option<&mut Records> {
        match &mut self.0 {
            Stage::Traffic(records) => Some(records),
            _ => None,
        }
    }
}

enum Handshake {
    /// More records are needed.
    Blocked,
    /// Done, with nothing left to send: the session can be handed over.
    Complete,
    /// The client sent close_notify.
    PeerClosed,
}

struct HandshakeRead {
    consumed: usize,
    /// The end of what rustls was given (at least `consumed`).
    given: usize,
    outcome: Handshake,
}

/// Drives rustls over the records in `buf` until it needs more or is done.
///
/// rustls is given one more whole record at a time, so it never sees a record after the one
/// that completes the handshake (the client's Finished): everything after that is the record
/// layer's. Had rustls read on, it would have handled records whose effects do not survive the
/// hand-over: a `KeyUpdate` that asks for ours (rustls updates its sending key at once but
/// queues the `KeyUpdate` itself for its next write, which never comes), a handshake message
/// it had only begun to collect (decrypted in place, not yet consumed).
fn handshake(
    conn: &mut UnbufferedServerConnection,
    buf: &mut [u8],
    seen: usize,
    early: &mut Vec<u8>,
    send: &mut Vec<u8>,
) -> Result<HandshakeRead, rustls::Error> {
    let mut consumed = 0;
    // The end of the whole records rustls has been given, always on a record boundary. It
    // starts at those it was given before: less would make rustls index past the slice.
    let mut given = seen.min(buf.len());
    // The end of the slice rustls is given: `given`, or all of `buf` once the next record is
    // incomplete (rustls then checks its header early, so garbage fails at once).
    let mut upto = given;
    loop {
        let status = conn.process_tls_records(&mut buf[consumed..upto]);
        let mut discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(e) => {
                // rustls queued the alert for the error, if any: it is encoded first.
                if let Ok(ConnectionState::EncodeTlsData(mut alert)) =
                    conn.process_tls_records(&mut []).state
                {
                    let _ = encode(send, |out| alert.encode(out));
                }
                return Err(e);
            }
        };
        let outcome = match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record?;
                    discard += record.discard;
                    early.extend_from_slice(record.payload);
                }
                None
            }
            ConnectionState::EncodeTlsData(mut data) => {
                encode(send, |out| data.encode(out))?;
                None
            }
            // The caller writes `send` (after this read) before anything else.
            ConnectionState::TransmitTlsData(data) => {
                data.done();
                None
            }
            ConnectionState::BlockedHandshake => Some(Handshake::Blocked),
            ConnectionState::WriteTraffic(_) => Some(Handshake::Complete),
            ConnectionState::PeerClosed | ConnectionState::Closed => Some(Handshake::PeerClosed),
            // 0-RTT is not enabled (max_early_data_size is 0), and any future state is
            // not one this server knows how to handle.
            _ => return Err(rustls::Error::General("unexpected TLS state".into())),
        };
        consumed += discard;
        match outcome {
            None => {}
            // rustls lets a TLS 1.3 server send data before the client's Finished: the
            // handshake is over only when rustls says so.
            Some(Handshake::Complete) if !conn.is_handshaking() => {
                return Ok(HandshakeRead {
                    consumed,
                    given,
                    outcome: Handshake::Complete,
                });
            }
            // rustls has taken what it can of what it was given: the next record, if any.
            Some(Handshake::Blocked | Handshake::Complete) => {
                if let Some(end) = whole_record_end(buf, given) {
                    (given, upto) = (end, end);
                } else if upto < buf.len() {
                    upto = buf.len();
                } else {
                    return Ok(HandshakeRead {
                        consumed,
                        given,
                        outcome: Handshake::Blocked,
                    });
                }
            }
            Some(Handshake::PeerClosed) => {
                return Ok(HandshakeRead {
                    consumed,
                    given,
                    outcome: Handshake::PeerClosed,
                });
            }
        }
    }
}

/// Where the record that starts at `from` in `buf` ends, if it is all there.
fn whole_record_end(buf: &[u8], from: usize) -> Option<usize> {
    let [_, _, _, hi, lo, ..] = *buf.get(from..)? else {
        return None;
    };
    let end = from + HEADER_BYTES + usize::from(u16::from_be_bytes([hi, lo]));
    (end <= buf.len()).then_some(end)
}

/// Appends what `encode` writes to `send`, growing it to the size rustls asks for.
fn encode(
    send: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let start = send.len();
    let mut room = 4096;
    loop {
        send.resize(start + room, 0);
        match encode(&mut send[start..]) {
            Ok(n) => {
                send.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(EncodeError::AlreadyEncoded) => {
                send.truncate(start);
                return Err(rustls::Error::General("TLS record encoded twice".into()));
            }
        }
    }
}
