//! Negotiation of `permessage-deflate` (RFC 7692 §5, §7.1) from the `Sec-WebSocket-Extensions`
//! request header(s), and the response line that accepts it.
//!
//! The header grammar is RFC 6455 §9.1, written in RFC 2616 ABNF with its implied linear
//! whitespace:
//!
//! ```text
//! Sec-WebSocket-Extensions = extension-list
//! extension-list = 1#extension
//! extension = extension-token *( ";" extension-param )
//! extension-token = registered-token
//! registered-token = token
//! extension-param = token [ "=" (token | quoted-string) ]
//!     ; When using the quoted-string syntax variant, the value
//!     ; after quoted-string unescaping MUST conform to the
//!     ; 'token' ABNF.
//! ```
//!
//! §9.1 also says the header "MAY be split or combined across multiple lines", so several
//! header lines read as one comma-separated list, in order; and "If a value is received by
//! either the client or the server during negotiation that does not conform to the ABNF
//! below, the recipient of such malformed data MUST immediately _Fail the WebSocket
//! Connection_", which is [`Malformed`] (the caller answers 400).
//!
//! Names are compared exactly: neither RFC 6455 nor RFC 7692 makes extension or parameter
//! names case-insensitive (RFC 2616's case-insensitivity covers quoted literals in the ABNF,
//! and these names are `token`s, not literals), the registry (RFC 6455 §11.4) holds them in
//! lower case, and browsers, Python websockets and Node ws send and compare them that way.
//! An offer named `Permessage-Deflate` is some other extension, declined by omission.

use super::WindowBits;
use crate::ws::http::{Request, UpgradeError};

/// The extension name (RFC 7692 §7: "The registered extension name for this extension is
/// "permessage-deflate"").
const NAME: &[u8] = b"permessage-deflate";

/// The terms the server accepted (RFC 7692 §7.1): the "agreed parameters" of §5.
///
/// The server always uses `server_no_context_takeover` and requires
/// `client_no_context_takeover`, so the only thing that varies between connections is the
/// window the server may compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Agreed {
    /// `server_max_window_bits` as offered (and echoed in the response), if it was offered.
    pub server_max_window_bits: Option<WindowBits>,
}

impl Agreed {
    /// The largest window the server may compress this connection's messages with; frames
    /// compressed with this window (or a smaller one) can be shared by every connection that
    /// agreed to it.
    pub fn window_bits(&self) -> WindowBits {
        // §7.1.2.1: "Absence of this parameter in an extension negotiation response indicates
        // that the server can use an LZ77 sliding window of up to 32,768 bytes".
        self.server_max_window_bits.unwrap_or(WindowBits::MAX)
    }
}

/// The `Sec-WebSocket-Extensions` request header does not conform to RFC 6455 §9.1; the
/// handshake must fail (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl From<Malformed> for UpgradeError {
    fn from(m: Malformed) -> Self {
        UpgradeError::BadRequest(m.0)
    }
}

/// Negotiates `permessage-deflate` for an upgrade request: `Ok(None)` when it is disabled,
/// not offered, or no offer can be honoured (the response then omits the extension, which
/// declines it, RFC 6455 §9.1).
///
/// With `enabled` false the header is not read at all, so a deployment without compression
/// treats it exactly as before (ignored, whatever it contains).
pub fn negotiate(req: &Request<'_>, enabled: bool) -> Result<Option<Agreed>, Malformed> {
    if !enabled {
        return Ok(None);
    }
    negotiate_values(req.ws_extensions.iter())
}

/// Negotiates from the values of the `Sec-WebSocket-Extensions` header lines, in order.
///
/// RFC 7692 §5: "The order of elements is important as it specifies the client's preference.
/// An element preceding another element has higher preference. It is recommended that a
/// server accepts PMCEs with higher preference if the server supports them." So the first
/// `permessage-deflate` offer the server can honour wins; later ones and other extensions are
/// declined by omission. Every element is still checked against the grammar, since a
/// malformed one anywhere fails the handshake.
pub fn negotiate_values<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Agreed>, Malformed> {
    let mut agreed = None;
    for value in values {
        let mut line = Cursor { s: value, i: 0 };
        if !line.list(&mut agreed)? {
            // `1#extension`: "at least one element" (RFC 2616 §2.1) in each header line.
            return Err(Malformed("empty Sec-WebSocket-Extensions"));
        }
    }
    Ok(agreed)
}

/// Appends the response header line accepting `agreed`:
/// `Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover;
/// client_no_context_takeover[; server_max_window_bits=N]`.
pub fn write_response_header(out: &mut Vec<u8>, agreed: Agreed) {
    // §7.1.1.1: "A server accepts an extension negotiation offer that includes the
    // "server_no_context_takeover" extension parameter by including the
    // "server_no_context_takeover" extension parameter in the corresponding extension
    // negotiation response [...] A server MAY include the "server_no_context_takeover"
    // extension parameter in an extension negotiation response even if the extension
    // negotiation offer being accepted by the extension negotiation response didn't include
    // the "server_no_context_takeover" extension parameter." Always sent: it is what lets one
    // compressed frame go to every subscriber.
    //
    // §7.1.1.2: "A server MAY include the "client_no_context_takeover" extension parameter in
    // an extension negotiation response." Not tied to the offer, and then (§7.1.1.2) the
    // client "MUST NOT use context takeover": the shard inflates every message alone, with
    // no window kept per connection.
    out.extend_from_slice(
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
          client_no_context_takeover",
    );
    // §7.1.2.1: "A server accepts an extension negotiation offer with this parameter by
    // including the "server_max_window_bits" extension parameter in the extension negotiation
    // response to send back to the client with the same or smaller value as the offer."
    // We echo the offered value and compress with at most that window.
    if let Some(bits) = agreed.server_max_window_bits {
        out.extend_from_slice(b"; server_max_window_bits=");
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(num.format(bits.get()).as_bytes());
    }
    // `client_max_window_bits` is never answered. §7.1.2.2: "If a received extension
    // negotiation offer has the "client_max_window_bits" extension parameter, the server MAY
    // include the "client_max_window_bits" extension parameter in the corresponding extension
    // negotiation response to the offer." It is a MAY, and "Absence of this extension
    // parameter in an extension negotiation response indicates that the server can receive
    // messages compressed using an LZ77 sliding window of up to 32,768 bytes", which is true:
    // the inflater reads any window up to 32 KiB.
    out.extend_from_slice(b"\r\n");
}

/// What one `permessage-deflate` offer's parameters say so far.
#[derive(Default)]
struct Offer {
    /// Parameters seen, one bit each, for the duplicate check.
    seen: u8,
    server_max_window_bits: Option<WindowBits>,
    /// The offer cannot be accepted (RFC 7692 §7's decline conditions).
    declined: bool,
}

const SERVER_NO_CONTEXT_TAKEOVER: u8 = 1;
const CLIENT_NO_CONTEXT_TAKEOVER: u8 = 2;
const SERVER_MAX_WINDOW_BITS: u8 = 4;
const CLIENT_MAX_WINDOW_BITS: u8 = 8;

impl Offer {
    /// Applies one parameter.
    ///
    /// RFC 7692 §7: "A server MUST decline an extension negotiation offer for this extension
    /// if any of the following conditions are met: o The negotiation offer contains an
    /// extension parameter not defined for use in an offer. o The negotiation offer contains
    /// an extension parameter with an invalid value. o The negotiation offer contains multiple
    /// extension parameters with the same name. o The server doesn't support the offered
    /// configuration."
    fn param(&mut self, name: &[u8], value: Option<Value<'_>>) {
        let bit = match name {
            b"server_no_context_takeover" => SERVER_NO_CONTEXT_TAKEOVER,
            b"client_no_context_takeover" => CLIENT_NO_CONTEXT_TAKEOVER,
            b"server_max_window_bits" => SERVER_MAX_WINDOW_BITS,
            b"client_max_window_bits" => CLIENT_MAX_WINDOW_BITS,
            _ => {
                self.declined = true;
                return;
            }
        };
        if self.seen & bit != 0 {
            self.declined = true;
            return;
        }
        self.seen |= bit;
        let acceptable = match bit {
            // §7.1.1.1 and §7.1.1.2: each "has no value". Both are fine to receive: the
            // response carries both anyway.
            SERVER_NO_CONTEXT_TAKEOVER | CLIENT_NO_CONTEXT_TAKEOVER => value.is_none(),
            // §7.1.2.1: "This parameter has a decimal integer value without leading zeroes
            // between 8 to 15, inclusive" (so a value is required), and "A server declines an
            // extension negotiation offer with this parameter if the server doesn't support
            // it." 8 is valid but cannot be honoured: zlib refuses a 256-byte window for raw
            // DEFLATE ("For raw deflate or gzip encoding, a request for a 256-byte window is
            // rejected as invalid", zlib manual, deflateInit2) and libdeflate has no window
            // setting at all. RFC 7692 itself says nothing about 8 being hard to honour.
            SERVER_MAX_WINDOW_BITS => match value.map(|v| window_bits_value(&v)) {
                Some(Some(bits)) => match WindowBits::new(bits) {
                    Some(bits) => {
                        self.server_max_window_bits = Some(bits);
                        true
                    }
                    None => false,
                },
                _ => false,
            },
            // §7.1.2.2: "This parameter has no value or a decimal integer value without
            // leading zeroes between 8 to 15 inclusive". Any valid form is accepted and left
            // unanswered (see `write_response_header`).
            _ => value.is_none_or(|v| window_bits_value(&v).is_some()),
        };
        self.declined |= !acceptable;
    }
}

/// A parameter value as written: a token, or the inside of a quoted-string already checked to
/// unescape to a token.
#[derive(Clone, Copy)]
struct Value<'a> {
    raw: &'a [u8],
    quoted: bool,
}

impl Value<'_> {
    /// The value after quoted-string unescaping (RFC 2616 §2.2: `quoted-pair = "\" CHAR`).
    fn unescaped(&self) -> impl Iterator<Item = u8> + '_ {
        let quoted = self.quoted;
        let mut escaped = false;
        self.raw.iter().filter_map(move |&b| {
            if quoted && !escaped && b == b'\\' {
                escaped = true;
                None
            } else {
                escaped = false;
                Some(b)
            }
        })
    }
}

/// A `*_max_window_bits` value: RFC 7692 §7.1.2.1 gives the ABNF `%x38-39 / "1" %x30-35`,
/// i.e. 8 to 15 "without leading zeroes". `None` for anything else.
fn window_bits_value(value: &Value<'_>) -> Option<u8> {
    let mut digits = value.unescaped();
    let bits = match (digits.next(), digits.next(), digits.next()) {
        (Some(d @ b'8'..=b'9'), None, None) => d - b'0',
        (Some(b'1'), Some(d @ b'0'..=b'5'), None) => 10 + d - b'0',
        _ => return None,
    };
    Some(bits)
}

/// RFC 2616 §2.2: `token = 1*<any CHAR except CTLs or separators>`, separators being
/// `( ) < > @ , ; : \ " / [ ] ? = { } SP HT`.
fn is_tchar(b: u8) -> bool {
    matches!(b, 0x21..=0x7E)
        && !matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b'@'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'='
                | b'{'
                | b'}'
        )
}

/// A parser over one header line's value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// RFC 2616 §2.1's implied `*LWS` between words and separators (line folding is already
    /// gone: httparse rejects obs-fold).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(Malformed(what));
        }
        Ok(&self.s[start..self.i])
    }

    /// A quoted-string whose unescaped content is a token; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<&'a [u8], Malformed> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek() {
                None => return Err(Malformed("unterminated quoted-string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    // `quoted-pair = "\" CHAR`, and what it stands for must be a token char.
                    self.i += 1;
                    if !self.peek().is_some_and(is_tchar) {
                        return Err(Malformed("quoted value is not a token"));
                    }
                }
                Some(b) if !is_tchar(b) => {
                    return Err(Malformed("quoted value is not a token"));
                }
                Some(_) => {}
            }
            self.i += 1;
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        if raw.is_empty() {
            return Err(Malformed("quoted value is not a token"));
        }
        Ok(raw)
    }

    /// `1#extension`: parses the whole line, records the first acceptable offer into `agreed`
    /// if none is yet, and returns whether the line had an element. Null elements (`a,,b`)
    /// are allowed by RFC 2616 §2.1's `#rule`.
    fn list(&mut self, agreed: &mut Option<Agreed>) -> Result<bool, Malformed> {
        let mut any = false;
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(any),
                Some(b',') => {
                    self.i += 1;
                    continue;
                }
                Some(_) => {}
            }
            any = true;
            let name = self.token("extension name is not a token")?;
            let mut offer = (name == NAME).then(Offer::default);
            self.params(offer.as_mut())?;
            match offer {
                Some(offer) if !offer.declined && agreed.is_none() => {
                    *agreed = Some(Agreed {
                        server_max_window_bits: offer.server_max_window_bits,
                    });
                }
                _ => {}
            }
        }
    }

    /// `*( ";" extension-param )` up to the end of the element (a comma or the end of line);
    /// parameters go to `offer` when the element is `permessage-deflate`.
    fn params(&mut self, mut offer: Option<&mut Offer>) -> Result<(), Malformed> {
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b';') => self.i += 1,
                Some(_) => return Err(Malformed("unexpected character in extension")),
            }
            self.skip_ows();
            let name = self.token("extension parameter name is not a token")?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.skip_ows();
                Some(if self.peek() == Some(b'"') {
                    Value {
                        raw: self.quoted()?,
                        quoted: true,
                    }
                } else {
                    Value {
                        raw: self.token("extension parameter value is not a token")?,
                        quoted: false,
                    }
                })
            } else {
                None
            };
            if let Some(offer) = offer.as_deref_mut() {
                offer.param(name, value);
            }
        }
    }
}
