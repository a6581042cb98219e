//! HTTP/1.1 request head parsing (httparse) and response writing, for the WebSocket opening
//! handshake (RFC 6455 §4) and the few plain HTTP routes.
//!
//! Parsing is bounded: at most `header_bytes_max` bytes are examined and at most
//! `headers_max` headers (stored on the stack) are accepted. Headers that decide how a body
//! is framed or who the client is are read strictly: any ambiguity (conflicting lengths,
//! `Content-Length` with `Transfer-Encoding`, duplicated singleton headers) is a 400, because
//! a proxy in front of us might resolve the ambiguity differently (request smuggling).

use std::mem::MaybeUninit;

use crate::ws::deflate;

/// The most headers [`parse_request`] can accept, whatever [`HttpLimits::headers_max`] says:
/// the header slots live in a stack array of this size.
pub const HEADERS_CAP: usize = 128;

/// The most lines of one repeatable header [`HeaderLines`] keeps; later lines are ignored.
pub const HEADER_LINES_CAP: usize = 4;

/// The values of a header that may be sent on several lines, in order (each trimmed), as
/// RFC 9110 §5.3 allows for list-valued fields: together they are one comma-separated list.
/// Up to [`HEADER_LINES_CAP`] lines are kept; a client has no reason to send more.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderLines<'a> {
    lines: [&'a [u8]; HEADER_LINES_CAP],
    len: u8,
}

impl<'a> HeaderLines<'a> {
    fn push(&mut self, value: &'a [u8]) {
        if let Some(slot) = self.lines.get_mut(usize::from(self.len)) {
            *slot = value;
            self.len += 1;
        }
    }

    /// The kept lines, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.lines[..usize::from(self.len)].iter().copied()
    }

    /// Whether the header was absent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The last lines of a header whose right end matters (`X-Forwarded-For`, `Forwarded`: the
/// proxies append there; what the client sent is on the left), in order. Up to
/// [`HEADER_LINES_CAP`] lines are kept; earlier ones give way, so a client that sends many
/// cannot push out the line a proxy appended after them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastLines<'a>(HeaderLines<'a>);

impl<'a> LastLines<'a> {
    fn push(&mut self, value: &'a [u8]) {
        let h = &mut self.0;
        if usize::from(h.len) == HEADER_LINES_CAP {
            h.lines.rotate_left(1);
            h.lines[HEADER_LINES_CAP - 1] = value;
        } else {
            h.push(value);
        }
    }

    /// The kept lines, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0.iter()
    }
}

/// Bounds on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Bytes the head may take, final CRLF CRLF included.
    pub header_bytes_max: usize,
    /// Headers the head may contain (capped at [`HEADERS_CAP`]).
    pub headers_max: usize,
}

/// Request method; only the ones tickcast routes on are distinguished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// A parsed request head; borrowed from the read buffer.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Request target up to the first `?`.
    pub path: &'a str,
    /// Request target after the first `?`, if any (not decoded).
    pub query: Option<&'a str>,
    /// Bytes of the request head including the final CRLF CRLF.
    pub head_len: usize,
    /// `Content-Length`, validated (digits only, repeats identical, no `Transfer-Encoding`).
    pub content_length: Option<usize>,
    /// `Transfer-Encoding` ends in `chunked` (any other coding is rejected as malformed).
    pub chunked: bool,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
    /// `Upgrade: websocket` and `Connection: upgrade` both present.
    pub upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`, trimmed, not yet validated (see [`check_upgrade`]).
    pub ws_key: Option<&'a [u8]>,
    /// `Sec-WebSocket-Version`, trimmed.
    pub ws_version: Option<&'a [u8]>,
    /// `Sec-WebSocket-Extensions` lines, trimmed, not yet parsed (see
    /// [`deflate::negotiate`]).
    pub ws_extensions: HeaderLines<'a>,
    /// `Origin`, `None` if absent or not UTF-8.
    pub origin: Option<&'a str>,
    /// `Authorization`, `None` if absent or not UTF-8.
    pub authorization: Option<&'a str>,
    /// `X-Forwarded-For` lines, trimmed, not yet parsed (`super::proxy::forwarded`).
    pub x_forwarded_for: LastLines<'a>,
    /// `Forwarded` (RFC 7239) lines, likewise.
    pub forwarded: LastLines<'a>,
}

/// Why a request head could not be parsed; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400
    Malformed,
    /// 400: an HTTP/1.1 request without a `Host` header, or with more than one.
    Host,
    /// 431
    HeadTooLarge,
    /// 505
    BadVersion,
}

impl HttpError {
    /// The response status.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed | HttpError::Host => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BadVersion => 505,
        }
    }

    /// A short human-readable explanation.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Malformed => "malformed request",
            HttpError::Host => "an HTTP/1.1 request needs exactly one Host header",
            HttpError::HeadTooLarge => "request head too large",
            HttpError::BadVersion => "HTTP version not supported",
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Malformed => "malformed_request",
            HttpError::Host => "bad_host",
            HttpError::HeadTooLarge => "head_too_large",
            HttpError::BadVersion => "http_version_not_supported",
        }
    }
}

/// Parses a request head at the front of `buf`. `Ok(None)`: incomplete, read more.
///
/// Only the first `limits.header_bytes_max` bytes are looked at, so the work per call is
/// bounded even when a client sends an endless head.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
) -> Result<Option<Request<'a>>, HttpError> {
    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let mut slots = [const { MaybeUninit::<httparse::Header<'a>>::uninit() }; HEADERS_CAP];
    let slots = &mut slots[..limits.headers_max.min(HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes_max => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(window)),
        Err(_) => return Err(HttpError::Malformed),
    };
    let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
    else {
        return Err(HttpError::Malformed);
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let h = Headers::scan(req.headers, version_minor)?;
    Ok(Some(Request {
        method,
        version_minor,
        path,
        query,
        head_len,
        content_length: h.content_length,
        chunked: h.chunked,
        // RFC 9112 §9.3: HTTP/1.1 connections persist unless "close" is sent; HTTP/1.0
        // ones only with the "keep-alive" extension.
        keep_alive: !h.conn_close && (version_minor == 1 || h.conn_keep_alive),
        upgrade_websocket: h.upgrade_websocket && h.conn_upgrade,
        ws_key: h.ws_key,
        ws_version: h.ws_version,
        ws_extensions: h.ws_extensions,
        origin: h.origin.and_then(|v| std::str::from_utf8(v).ok()),
        authorization: h.authorization.and_then(|v| std::str::from_utf8(v).ok()),
        x_forwarded_for: h.x_forwarded_for,
        forwarded: h.forwarded,
    }))
}

/// What the header lines of a request say, before assembly into a [`Request`].
#[derive(Default)]
struct Headers<'a> {
    content_length: Option<usize>,
    transfer_encoding: bool,
    chunked: bool,
    chunked_last: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    upgrade_websocket: bool,
    host: bool,
    ws_key: Option<&'a [u8]>,
    ws_version: Option<&'a [u8]>,
    ws_extensions: HeaderLines<'a>,
    origin: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
    x_forwarded_for: LastLines<'a>,
    forwarded: LastLines<'a>,
}

impl<'a> Headers<'a> {
    fn scan(headers: &[httparse::Header<'a>], version_minor: u8) -> Result<Self, HttpError> {
        let mut h = Headers::default();
        for header in headers {
            let name = header.name;
            let value = trim_ows(header.value);
            let is = |expected: &str| name.eq_ignore_ascii_case(expected);
            if is("content-length") {
                // RFC 9112 §6.3: a list of differing lengths or an invalid value "MUST" be
                // treated as an unrecoverable error; identical repeats are tolerated.
                let n = parse_content_length(value).ok_or(HttpError::Malformed)?;
                if h.content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::Malformed);
                }
                h.content_length = Some(n);
            } else if is("transfer-encoding") {
                h.transfer_encoding = true;
                h.chunked |= has_token(value, "chunked");
                h.chunked_last = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"));
            } else if is("connection") {
                h.conn_close |= has_token(value, "close");
                h.conn_keep_alive |= has_token(value, "keep-alive");
                h.conn_upgrade |= has_token(value, "upgrade");
            } else if is("upgrade") {
                h.upgrade_websocket |= has_token(value, "websocket");
            } else if is("host") {
                // RFC 9112 §3.2: a request with more than one Host line gets a 400.
                if std::mem::replace(&mut h.host, true) {
                    return Err(HttpError::Host);
                }
            } else if is("sec-websocket-key") {
                // RFC 6455 §11.3.1: "MUST NOT appear more than once in an HTTP request."
                set_once(&mut h.ws_key, value)?;
            } else if is("sec-websocket-version") {
                // RFC 6455 §11.3.5 also allows this header only once in a request.
                set_once(&mut h.ws_version, value)?;
            } else if is("sec-websocket-extensions") {
                // RFC 6455 §9.1: "MAY be split or combined across multiple lines".
                h.ws_extensions.push(value);
            } else if is("origin") {
                // Two origins or two credentials leave it ambiguous which one to check.
                set_once(&mut h.origin, value)?;
            } else if is("authorization") {
                set_once(&mut h.authorization, value)?;
            } else if is("x-forwarded-for") {
                h.x_forwarded_for.push(value);
            } else if is("forwarded") {
                h.forwarded.push(value);
            }
        }
        // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
        // HTTP/1.1 request message that lacks a Host header field".
        if version_minor == 1 && !h.host {
            return Err(HttpError::Host);
        }
        if h.transfer_encoding {
            // RFC 9112 §6.1: a message with both "ought to be handled as an error" (it is the
            // classic smuggling vector); an HTTP/1.0 message with Transfer-Encoding has faulty
            // framing; and §6.3: if chunked is not the final coding the length is unknown.
            if h.content_length.is_some() || version_minor == 0 || !h.chunked_last {
                return Err(HttpError::Malformed);
            }
        }
        Ok(h)
    }
}

/// Records a header that may appear once; a repeat is [`HttpError::Malformed`].
fn set_once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Result<(), HttpError> {
    if slot.replace(value).is_some() {
        return Err(HttpError::Malformed);
    }
    Ok(())
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) around a value or list element.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; signs, spaces inside, lists and overflow are
/// all refused.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0usize, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(digit as usize)
    })
}

/// httparse reports any version other than HTTP/1.0 and HTTP/1.1 as a version error; a
/// well-formed `HTTP/<digit>...` (such as HTTP/2.0 or HTTP/0.9) is an unsupported version,
/// anything else a malformed request line.
fn version_error(window: &[u8]) -> HttpError {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let line = &window[start..];
    let line = &line[..line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len())];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', digit, ..] if digit.is_ascii_digit() => {
            HttpError::BadVersion
        }
        _ => HttpError::Malformed,
    }
}

/// Why an upgrade request is refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeError {
    /// 405: not GET.
    Method,
    /// 400: missing/invalid Sec-WebSocket-Key or Upgrade/Connection headers.
    BadRequest(&'static str),
    /// 426 with `Sec-WebSocket-Version: 13`.
    Version,
}

impl UpgradeError {
    /// The response status.
    pub fn status(&self) -> u16 {
        match self {
            UpgradeError::Method => 405,
            UpgradeError::BadRequest(_) => 400,
            UpgradeError::Version => 426,
        }
    }

    /// A stable machine-readable code for the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            UpgradeError::Method => "method_not_allowed",
            UpgradeError::BadRequest(_) => "bad_request",
            UpgradeError::Version => "unsupported_websocket_version",
        }
    }

    /// A short human-readable explanation.
    pub fn message(&self) -> &'static str {
        match self {
            UpgradeError::Method => "a WebSocket upgrade must be a GET request",
            UpgradeError::BadRequest(reason) => reason,
            UpgradeError::Version => "only WebSocket version 13 is supported",
        }
    }
}

/// Checks a request for a valid RFC 6455 §4.2.1 opening handshake.
///
/// A missing `Sec-WebSocket-Version` is answered like a wrong one (426), telling the client
/// which version to use. `Sec-WebSocket-Extensions` is checked by [`deflate::negotiate`]
/// (when compression is enabled) and `Sec-WebSocket-Protocol` not at all: an extension or
/// subprotocol is declined by leaving it out of the response.
pub fn check_upgrade(req: &Request<'_>) -> Result<(), UpgradeError> {
    // §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if req.method != Method::Get {
        return Err(UpgradeError::Method);
    }
    if req.version_minor < 1 {
        return Err(UpgradeError::BadRequest("WebSocket requires HTTP/1.1"));
    }
    // Items 3 and 4: an |Upgrade| header "with a value containing the keyword "websocket""
    // and a |Connection| header "that includes the token "Upgrade"".
    if !req.upgrade_websocket {
        return Err(UpgradeError::BadRequest(
            "missing Upgrade: websocket or Connection: Upgrade",
        ));
    }
    // Item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when
    // decoded, is 16 bytes in length."
    match req.ws_key {
        None => return Err(UpgradeError::BadRequest("missing Sec-WebSocket-Key")),
        Some(key) if !is_base64_of_16_bytes(key) => {
            return Err(UpgradeError::BadRequest("invalid Sec-WebSocket-Key"));
        }
        Some(_) => {}
    }
    // Item 6: "A |Sec-WebSocket-Version| header field, with a value of 13." §4.2.2: otherwise
    // the server sends "an appropriate HTTP error code (such as 426 Upgrade Required) and a
    // |Sec-WebSocket-Version| header field indicating the version(s) the server is capable of
    // understanding".
    if req.ws_version != Some(b"13") {
        return Err(UpgradeError::Version);
    }
    Ok(())
}

/// Whether `key` is the base64 (RFC 4648 §4, padded) encoding of exactly 16 bytes: 22
/// alphabet characters then `==`. Like most servers, the 4 unused low bits of the last
/// character are not required to be zero.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    let is_alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    match key {
        [body @ .., b'=', b'='] => body.len() == 22 && body.iter().all(is_alphabet),
        _ => false,
    }
}

/// Appends the `101 Switching Protocols` response for `ws_key`, accepting `permessage-deflate`
/// with the `deflate` terms if any ([`deflate::negotiate`]).
///
/// RFC 6455 §9.1: extensions the server does not list in its response are not in use, so
/// with `deflate` `None` every offer is declined by omission; no subprotocol is selected.
pub fn write_upgrade_response(out: &mut Vec<u8>, ws_key: &[u8], deflate: Option<deflate::Agreed>) {
    // §4.2.2 item 5.4: the accept value is base64(SHA-1(key ++ GUID)).
    let accept = tungstenite::handshake::derive_accept_key(ws_key);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(agreed) = deflate {
        deflate::write_response_header(out, agreed);
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for `status` (RFC 9110 §15, RFC 6585 for 429 and 431).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        // Statuses tickcast does not use get their class name, which clients ignore anyway.
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// Appends a complete response with `Content-Length`.
///
/// RFC 9110 §8.6: 1xx and 204 responses carry no `Content-Length` (and no body), so neither
/// it nor `Content-Type` is written for them; an empty `content_type` also omits the header.
/// `extra_headers` must not contain CR or LF (they are written verbatim).
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra_headers: &[(&str, &str)],
) {
    let bodyless = matches!(status, 100..=199 | 204);
    debug_assert!(!bodyless || body.is_empty(), "status {status} has no body");
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(num.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        if !content_type.is_empty() {
            push_header(out, "Content-Type", content_type);
        }
        push_header(out, "Content-Length", num.format(body.len()));
    }
    push_header(
        out,
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in extra_headers {
        debug_assert!(
            !name.contains(['\r', '\n']) && !value.contains(['\r', '\n']),
            "header injection"
        );
        push_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        out.extend_from_slice(body);
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `status` with a JSON body `{"error":code,"message":message}` and
/// `Connection: close`.
fn write_error(
    out: &mut Vec<u8>,
    status: u16,
    code: &str,
    message: &str,
    extra_headers: &[(&str, &str)],
) {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    write_response(
        out,
        status,
        "application/json",
        body.as_bytes(),
        false,
        extra_headers,
    );
}

/// Appends the response refusing an upgrade: the error's status with a short JSON body
/// `{"error":"<code>","message":"<text>"}` and `Connection: close`. 426 carries
/// `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2), 405 carries `Allow: GET` (RFC 9110 §15.5.6).
pub fn upgrade_error_response(out: &mut Vec<u8>, err: UpgradeError) {
    let extra: &[(&str, &str)] = match err {
        UpgradeError::Method => &[("Allow", "GET")],
        UpgradeError::Version => &[("Sec-WebSocket-Version", "13")],
        UpgradeError::BadRequest(_) => &[],
    };
    write_error(out, err.status(), err.code(), err.message(), extra);
}

/// Appends the response for a request head that could not be parsed, in the same JSON shape
/// as [`upgrade_error_response`], with `Connection: close` (the stream cannot be trusted).
pub fn http_error_response(out: &mut Vec<u8>, err: HttpError) {
    write_error(out, err.status(), err.code(), err.reason(), &[]);
}

#[cfg(test)]
mod tests;
