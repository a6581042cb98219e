//! The TLS record layer of an established connection (RFC 8446 §5, RFC 5246 §6.2), on ring's
//! AEADs: what is left of a TLS session once rustls has done the handshake
//! ([`super::session`]). rustls hands over the traffic keys and sequence numbers through its
//! kernel-TLS interface (`dangerous_into_kernel_connection`, meant for exactly this: another
//! party does the record encryption) and keeps only what TLS 1.3 key updates need
//! ([`KernelConnection`]).
//!
//! **Why not rustls' own record layer.** Its connection objects stay large after the
//! handshake: 7,465 bytes of heap per idle TLS 1.3 `ServerConnection` (buffers included),
//! 3,281 per idle `UnbufferedServerConnection` (a 1,088-byte struct, a 640-byte
//! handshake-deframer vector it never shrinks, two boxed AEAD states). A [`Records`] is our
//! AEAD key (544 bytes expanded, for AES-GCM), the client's (its bytes, expanded per read: see
//! `Opening`), their nonces and sequence numbers, and rustls' 560-byte kernel connection:
//! 1,232 bytes, and 1,472 with the rest of the session (perf/tls-heap, `cargo run --release
//! --manifest-path perf/tls-heap/Cargo.toml -- 10000`; perf/README.md, "TLS memory per
//! connection").
//!
//! **Cost.** Measured: sealing one 160-byte frame as a record 120–126 ns, eight frames in one
//! record 238–241 ns, a 64 KiB batch 7.7 µs; opening one 160-byte client record as one read,
//! its key expanded first, 215–220 ns (TLS 1.3, AES-256-GCM; benches/tls.rs, `cargo bench
//! --bench tls`, shared 2-core VM, 2026-12-06). A write's `send` costs 2–3 µs there.
//! It also needs no buffer of its own: records are opened in place in the caller's buffer
//! (the shard's scratch buffer) and sealed straight into another (the shard's write buffer),
//! with no allocation per record.
//!
//! **What it implements**, as rustls does for a server: application data both ways; alerts
//! (close_notify, warnings tolerated as rustls does, fatal ones end the connection);
//! TLS 1.3 `KeyUpdate` from the client (its own keys updated, ours too when it asks); a
//! `KeyUpdate` of ours before the suite's confidentiality limit (TLS 1.3), or an error at it
//! (TLS 1.2, where keys cannot be updated: the connection must end). Post-handshake handshake
//! messages other than a lone `KeyUpdate` in its own record (RFC 8446 §5.1: it must end its
//! record), and any renegotiation attempt on TLS 1.2, are fatal `unexpected_message`.

use std::io::IoSlice;

use ring::aead::{self, Aad, LessSafeKey, UnboundKey};
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion,
    SupportedCipherSuite,
    crypto::cipher::{AeadKey, Iv, Nonce},
    kernel::KernelConnection,
    server::ServerConnectionData,
};

/// Bytes of a record header: content type, legacy version, length (RFC 8446 §5.1).
pub const HEADER_BYTES: usize = 5;
/// Most plaintext bytes in one record (2^14).
pub const PLAIN_RECORD_BYTES_MAX: usize = 16 * 1024;
/// Bytes an AEAD record adds to its plaintext at most: header, TLS 1.2 GCM's explicit nonce
/// or TLS 1.3's inner content type, tag.
pub const RECORD_OVERHEAD_BYTES_MAX: usize = HEADER_BYTES + GCM_EXPLICIT_NONCE_BYTES + TAG_BYTES;

const TAG_BYTES: usize = 16;
const GCM_EXPLICIT_NONCE_BYTES: usize = 8;
/// RFC 8446 §5.2: a TLS 1.3 record's ciphertext is at most 2^14 + 256 bytes.
const TLS13_CIPHERTEXT_BYTES_MAX: usize = PLAIN_RECORD_BYTES_MAX + 256;
/// RFC 5246 §6.2.3: a TLS 1.2 record's ciphertext is at most 2^14 + 2048 bytes.
const TLS12_CIPHERTEXT_BYTES_MAX: usize = PLAIN_RECORD_BYTES_MAX + 2048;

const CT_CHANGE_CIPHER_SPEC: u8 = 20;
const CT_ALERT: u8 = 21;
const CT_HANDSHAKE: u8 = 22;
const CT_APPLICATION_DATA: u8 = 23;
const HT_KEY_UPDATE: u8 = 24;
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
/// The legacy record version of every record sent (RFC 8446 §5.1: 0x0303 after the
/// ClientHello; TLS 1.2's own).
const LEGACY_VERSION: [u8; 2] = [3, 3];

/// As rustls (after BoringSSL): at most this many warning alerts per connection, and this
/// many `KeyUpdate`s in a row without application data, so a client cannot keep the server
/// busy with them.
const WARNING_ALERTS_MAX: u8 = 4;
const KEY_UPDATES_IN_A_ROW_MAX: u8 = 32;

/// Why a connection's TLS session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The client broke the protocol (or a record failed to decrypt): send this alert, then
    /// close.
    Send(AlertDescription, &'static str),
    /// The client sent a fatal alert: close without one.
    AlertReceived(AlertDescription),
    /// The keys reached their suite's confidentiality limit on TLS 1.2 (no key update
    /// there): close.
    KeysExhausted,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Send(alert, why) => write!(f, "{why} (alert {alert:?})"),
            RecordError::AlertReceived(alert) => write!(f, "client sent alert {alert:?}"),
            RecordError::KeysExhausted => f.write_str("TLS 1.2 traffic keys exhausted"),
        }
    }
}

/// What [`Records::open`] did with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of complete records taken from the front of the buffer; the rest is the start of
    /// a record still arriving (or, after the client's close_notify, nothing).
    pub consumed: usize,
    /// The application data of those records, moved to the front of the buffer.
    pub plain: usize,
}

/// The record protection in use (it decides the record layout and the nonce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tls13,
    /// TLS 1.2 AES-GCM: an explicit 8-byte nonce leads each record (RFC 5288).
    Tls12Gcm,
    /// TLS 1.2 ChaCha20-Poly1305: the nonce is implicit, like TLS 1.3's (RFC 7905).
    Tls12Chacha,
}

/// One direction's key, its nonce base and the next record's sequence number.
struct Direction<K> {
    key: K,
    iv: Iv,
    seq: u64,
}

/// Ours: ring's expanded key, used for every write.
type Sealing = Direction<LessSafeKey>;
/// The client's: the key's bytes (wiped when dropped), expanded for each read that has
/// records. A fan-out client sends little (pongs, the odd request), and ring's expanded AES-GCM
/// key is 544 bytes that an idle connection would otherwise hold; expanding it costs about
/// what opening one small record does.
type Opening = Direction<(&'static aead::Algorithm, AeadKey)>;

impl<K> Direction<K> {
    /// The nonce of record `seq`: the IV xor the sequence number (RFC 8446 §5.3; rustls
    /// derives TLS 1.2 GCM's explicit nonces the same way).
    fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        Nonce::new(&self.iv, self.seq).0
    }

    fn advance(&mut self) -> Result<(), RecordError> {
        self.seq = self.seq.checked_add(1).ok_or(RecordError::KeysExhausted)?;
        Ok(())
    }
}

/// The AEAD of `secrets`, its key and IV.
fn parts(
    secrets: ConnectionTrafficSecrets,
) -> Result<(&'static aead::Algorithm, AeadKey, Iv), RecordError> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => Ok((&aead::AES_128_GCM, key, iv)),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => Ok((&aead::AES_256_GCM, key, iv)),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            Ok((&aead::CHACHA20_POLY1305, key, iv))
        }
        _ => Err(send(AlertDescription::InternalError, "unknown AEAD")),
    }
}

fn expand(alg: &'static aead::Algorithm, key: &AeadKey) -> Result<LessSafeKey, RecordError> {
    let key = UnboundKey::new(alg, key.as_ref())
        .map_err(|_| send(AlertDescription::InternalError, "bad AEAD key"))?;
    Ok(LessSafeKey::new(key))
}

impl Sealing {
    fn sealing((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Sealing, RecordError> {
        let (alg, key, iv) = parts(secrets)?;
        Ok(Direction {
            key: expand(alg, &key)?,
            iv,
            seq,
        })
    }
}

impl Opening {
    fn opening((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Opening, RecordError> {
        let (alg, key, iv) = parts(secrets)?;
        Ok(Direction {
            key: (alg, key),
            iv,
            seq,
        })
    }
}

/// An established connection's record layer (see the module doc).
pub struct Records {
    tx: Sealing,
    rx: Opening,
    kind: Kind,
    /// Records one key may seal (the suite's confidentiality limit).
    tx_limit: u64,
    /// TLS 1.3 key updates.
    kernel: KernelConnection<ServerConnectionData>,
    /// The client asked for a key update: ours goes out before our next record.
    key_update_due: bool,
    /// The client sent close_notify: nothing after it is read.
    peer_closed: bool,
    warnings_left: u8,
    key_updates_left: u8,
}

impl Records {
    /// Takes over from rustls once the handshake is done.
    pub fn new(
        secrets: ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Records, RecordError> {
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let kind = match (&secrets.tx.1, tls13) {
            (_, true) => Kind::Tls13,
            (ConnectionTrafficSecrets::Chacha20Poly1305 { .. }, false) => Kind::Tls12Chacha,
            _ => Kind::Tls12Gcm,
        };
        let tx_limit = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        Ok(Records {
            tx: Sealing::sealing(secrets.tx)?,
            rx: Opening::opening(secrets.rx)?,
            kind,
            tx_limit,
            kernel,
            key_update_due: false,
            peer_closed: false,
            warnings_left: WARNING_ALERTS_MAX,
            key_updates_left: KEY_UPDATES_IN_A_ROW_MAX,
        })
    }

    /// The client sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Opens the complete records at the front of `buf` in place and moves their application
    /// data to its front. Stops at an incomplete record, and after the client's close_notify
    /// (what follows it is ignored: RFC 8446 §6.1).
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Opened, RecordError> {
        let mut pos = 0;
        let mut plain = 0;
        // The client's key, expanded once for the records of this read (again after a key
        // update).
        let mut expanded: Option<LessSafeKey> = None;
        while !self.peer_closed && buf.len() - pos >= HEADER_BYTES {
            let len = usize::from(u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]));
            let max = match self.kind {
                Kind::Tls13 => TLS13_CIPHERTEXT_BYTES_MAX,
                Kind::Tls12Gcm | Kind::Tls12Chacha => TLS12_CIPHERTEXT_BYTES_MAX,
            };
            if len > max {
                return Err(send(AlertDescription::RecordOverflow, "record too long"));
            }
            let end = pos + HEADER_BYTES + len;
            if end > buf.len() {
                break;
            }
            let key = match &mut expanded {
                Some(key) => key,
                None => expanded.insert(expand(self.rx.key.0, &self.rx.key.1)?),
            };
            let (typ, range) = self.open_record(key, &mut buf[pos..end])?;
            let (start, stop) = (pos + range.start, pos + range.end);
            pos = end;
            match typ {
                CT_APPLICATION_DATA => {
                    // The plaintext is shorter than its record: it never overtakes `pos`.
                    buf.copy_within(start..stop, plain);
                    plain += stop - start;
                    self.key_updates_left = KEY_UPDATES_IN_A_ROW_MAX;
                }
                CT_ALERT => self.on_alert(&buf[start..stop])?,
                CT_HANDSHAKE => {
                    self.on_handshake(&buf[start..stop])?;
                    expanded = None;
                }
                _ => {
                    return Err(send(
                        AlertDescription::UnexpectedMessage,
                        "unexpected record",
                    ));
                }
            }
        }
        if self.peer_closed {
            pos = buf.len();
        }
        Ok(Opened {
            consumed: pos,
            plain,
        })
    }

    /// Decrypts one whole record in place; returns its content type and where its plaintext
    /// is within it.
    fn open_record(
        &mut self,
        key: &LessSafeKey,
        record: &mut [u8],
    ) -> Result<(u8, std::ops::Range<usize>), RecordError> {
        let bad_mac = || send(AlertDescription::BadRecordMac, "record failed to decrypt");
        let (header, payload) = record.split_at_mut(HEADER_BYTES);
        let outer = header[0];
        let (typ, range) = match self.kind {
            Kind::Tls13 => {
                // Everything after the handshake is application_data outside (§5.2); a
                // change_cipher_spec is only tolerated during the handshake (§5).
                if outer != CT_APPLICATION_DATA {
                    return Err(send(
                        AlertDescription::UnexpectedMessage,
                        "unprotected record",
                    ));
                }
                let nonce = aead::Nonce::assume_unique_for_key(self.rx.nonce());
                let inner = key
                    .open_in_place(nonce, Aad::from(&*header), payload)
                    .map_err(|_| bad_mac())?;
                // §5.4: padding does not lift the limit: the whole TLSInnerPlaintext (content,
                // type, padding) is at most 2^14 + 1 bytes.
                if inner.len() > PLAIN_RECORD_BYTES_MAX + 1 {
                    return Err(send(
                        AlertDescription::RecordOverflow,
                        "padded record too long",
                    ));
                }
                // §5.4: the content type is the last non-zero byte; zeros after it are padding.
                let Some(at) = inner.iter().rposition(|&b| b != 0) else {
                    return Err(send(AlertDescription::UnexpectedMessage, "no content type"));
                };
                (inner[at], HEADER_BYTES..HEADER_BYTES + at)
            }
            Kind::Tls12Gcm | Kind::Tls12Chacha => {
                if outer == CT_CHANGE_CIPHER_SPEC {
                    return Err(send(
                        AlertDescription::UnexpectedMessage,
                        "late change_cipher_spec",
                    ));
                }
                let explicit = if self.kind == Kind::Tls12Gcm {
                    GCM_EXPLICIT_NONCE_BYTES
                } else {
                    0
                };
                if payload.len() < explicit + TAG_BYTES {
                    return Err(bad_mac());
                }
                let plain_len = payload.len() - explicit - TAG_BYTES;
                let mut nonce = self.rx.nonce();
                if explicit > 0 {
                    // RFC 5288 §3: the salt from the key block, then the record's own 8 bytes.
                    nonce[4..].copy_from_slice(&payload[..GCM_EXPLICIT_NONCE_BYTES]);
                }
                let aad = tls12_aad(self.rx.seq, outer, [header[1], header[2]], plain_len);
                key.open_within(
                    aead::Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    payload,
                    explicit..,
                )
                .map_err(|_| bad_mac())?;
                (outer, HEADER_BYTES..HEADER_BYTES + plain_len)
            }
        };
        self.rx.advance()?;
        if range.len() > PLAIN_RECORD_BYTES_MAX {
            return Err(send(AlertDescription::RecordOverflow, "plaintext too long"));
        }
        Ok((typ, range))
    }

    fn on_alert(&mut self, alert: &[u8]) -> Result<(), RecordError> {
        let &[level, description] = alert else {
            return Err(send(AlertDescription::DecodeError, "malformed alert"));
        };
        let description = AlertDescription::from(description);
        if description == AlertDescription::CloseNotify {
            self.peer_closed = true;
            return Ok(());
        }
        match level {
            ALERT_FATAL => Err(RecordError::AlertReceived(description)),
            ALERT_WARNING => {
                // TLS 1.3 outlaws warnings but user_canceled (§6); TLS 1.2 tolerates a few.
                let tolerated =
                    self.kind != Kind::Tls13 || description == AlertDescription::UserCanceled;
                if !tolerated || self.warnings_left == 0 {
                    return Err(send(AlertDescription::DecodeError, "warning alert"));
                }
                self.warnings_left -= 1;
                Ok(())
            }
            _ => Err(send(
                AlertDescription::IllegalParameter,
                "unknown alert level",
            )),
        }
    }

    /// A handshake record after the handshake: only a TLS 1.3 `KeyUpdate` (§4.6.3), alone in
    /// its record.
    fn on_handshake(&mut self, msg: &[u8]) -> Result<(), RecordError> {
        let unexpected = send(AlertDescription::UnexpectedMessage, "handshake message");
        if self.kind != Kind::Tls13 || msg.first() != Some(&HT_KEY_UPDATE) {
            return Err(unexpected);
        }
        let &[_, 0, 0, 1, request] = msg else {
            return Err(send(AlertDescription::DecodeError, "malformed key update"));
        };
        if request > 1 {
            return Err(send(
                AlertDescription::IllegalParameter,
                "bad key update request",
            ));
        }
        if self.key_updates_left == 0 {
            return Err(send(
                AlertDescription::UnexpectedMessage,
                "too many key updates",
            ));
        }
        self.key_updates_left -= 1;
        let rx = self.kernel.update_rx_secret().map_err(internal)?;
        self.rx = Opening::opening(rx)?;
        // update_requested: ours follows before our next record (one is enough however
        // many the client asked for meanwhile).
        self.key_update_due |= request == 1;
        Ok(())
    }

    /// Seals up to `max` bytes of `data` (taken in order across the slices) as application
    /// data records appended to `out`; returns how many bytes it took.
    pub fn seal(
        &mut self,
        data: &[IoSlice<'_>],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, RecordError> {
        let total = data.iter().map(|s| s.len()).sum::<usize>().min(max);
        let mut slices = data.iter();
        let mut current: &[u8] = &[];
        let mut taken = 0;
        while taken < total {
            let len = (total - taken).min(PLAIN_RECORD_BYTES_MAX);
            self.seal_checked(CT_APPLICATION_DATA, len, out, |out| {
                let mut left = len;
                while left > 0 {
                    if current.is_empty() {
                        current = slices.next().expect("`total` counts these bytes");
                        continue;
                    }
                    let n = left.min(current.len());
                    out.extend_from_slice(&current[..n]);
                    current = &current[n..];
                    left -= n;
                }
            })?;
            taken += len;
        }
        Ok(taken)
    }

    /// Appends a close_notify alert (RFC 8446 §6.1).
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.alert(ALERT_WARNING, AlertDescription::CloseNotify, out)
    }

    /// Appends a fatal alert (after an error, before closing).
    pub fn fatal_alert(&mut self, alert: AlertDescription, out: &mut Vec<u8>) {
        let _ = self.alert(ALERT_FATAL, alert, out);
    }

    fn alert(
        &mut self,
        level: u8,
        alert: AlertDescription,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        self.seal_checked(CT_ALERT, 2, out, |out| {
            out.extend_from_slice(&[level, u8::from(alert)])
        })
    }

    /// Seals one record after whatever key update is due: the client's request, or our own
    /// at the confidentiality limit (TLS 1.2 cannot update: its keys are exhausted).
    fn seal_checked(
        &mut self,
        typ: u8,
        len: usize,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), RecordError> {
        if self.tx.seq >= self.tx_limit {
            if self.kind != Kind::Tls13 {
                return Err(RecordError::KeysExhausted);
            }
            self.key_update_due = true;
        }
        if std::mem::take(&mut self.key_update_due) {
            // update_not_requested: sealed with the old key, everything after with the new.
            self.seal_record(CT_HANDSHAKE, 5, out, |out| {
                out.extend_from_slice(&[HT_KEY_UPDATE, 0, 0, 1, 0])
            })?;
            let tx = self.kernel.update_tx_secret().map_err(internal)?;
            self.tx = Sealing::sealing(tx)?;
        }
        self.seal_record(typ, len, out, fill)
    }

    /// Appends one record of content type `typ` whose `len` plaintext bytes `fill` appends.
    fn seal_record(
        &mut self,
        typ: u8,
        len: usize,
        out: &mut Vec<u8>,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), RecordError> {
        debug_assert!(len <= PLAIN_RECORD_BYTES_MAX);
        let nonce = self.tx.nonce();
        let start = out.len();
        let (outer, wire_len, explicit) = match self.kind {
            Kind::Tls13 => (CT_APPLICATION_DATA, len + 1 + TAG_BYTES, 0),
            Kind::Tls12Gcm => (
                typ,
                GCM_EXPLICIT_NONCE_BYTES + len + TAG_BYTES,
                GCM_EXPLICIT_NONCE_BYTES,
            ),
            Kind::Tls12Chacha => (typ, len + TAG_BYTES, 0),
        };
        out.reserve(HEADER_BYTES + wire_len);
        let length = (wire_len as u16).to_be_bytes();
        out.extend_from_slice(&[
            outer,
            LEGACY_VERSION[0],
            LEGACY_VERSION[1],
            length[0],
            length[1],
        ]);
        if explicit > 0 {
            out.extend_from_slice(&nonce[4..]);
        }
        let body = out.len();
        fill(out);
        debug_assert_eq!(out.len() - body, len);
        let failed = |_| send(AlertDescription::InternalError, "seal failed");
        let nonce = aead::Nonce::assume_unique_for_key(nonce);
        let tag = if self.kind == Kind::Tls13 {
            out.push(typ);
            let header: [u8; HEADER_BYTES] = out[start..start + HEADER_BYTES]
                .try_into()
                .expect("five bytes");
            self.tx
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[body..])
                .map_err(failed)?
        } else {
            let aad = tls12_aad(self.tx.seq, typ, LEGACY_VERSION, len);
            self.tx
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut out[body..])
                .map_err(failed)?
        };
        out.extend_from_slice(tag.as_ref());
        self.tx.advance()
    }

    /// Test hook: the client asked for a key update that is not sent yet.
    #[cfg(test)]
    pub(super) fn key_update_due(&self) -> bool {
        self.key_update_due
    }

    /// Test hook: the next record sealed is the last one its key may seal.
    #[cfg(test)]
    pub(super) fn near_tx_limit(&mut self) {
        self.tx_limit = self.tx.seq + 1;
    }
}

/// TLS 1.2's additional data: sequence number, content type, version, plaintext length
/// (RFC 5246 §6.2.3.3).
fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut aad = [0; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

fn send(alert: AlertDescription, why: &'static str) -> RecordError {
    RecordError::Send(alert, why)
}

fn internal(_: rustls::Error) -> RecordError {
    send(AlertDescription::InternalError, "key update failed")
}
