//! CONTRACT STUB: implemented on the ws branch.

/// Bounds on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_bytes_max: usize,
    pub headers_max: usize,
}

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
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Bytes of the request head including the final CRLF CRLF.
    pub head_len: usize,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub keep_alive: bool,
    /// `Upgrade: websocket` and `Connection: upgrade` both present.
    pub upgrade_websocket: bool,
    pub ws_key: Option<&'a [u8]>,
    pub ws_version: Option<&'a [u8]>,
    pub origin: Option<&'a str>,
    pub authorization: Option<&'a str>,
}

/// Why a request head could not be parsed; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400
    Malformed,
    /// 431
    HeadTooLarge,
    /// 505
    BadVersion,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        todo!()
    }
    pub fn reason(&self) -> &'static str {
        todo!()
    }
}

/// Parses a request head at the front of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
) -> Result<Option<Request<'a>>, HttpError> {
    let _ = (buf, limits);
    todo!()
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

/// Checks a request for a valid RFC 6455 §4.2.1 opening handshake.
pub fn check_upgrade(req: &Request<'_>) -> Result<(), UpgradeError> {
    let _ = req;
    todo!()
}

/// Appends the `101 Switching Protocols` response for `ws_key`. No extension is accepted.
pub fn write_upgrade_response(out: &mut Vec<u8>, ws_key: &[u8]) {
    let _ = (out, ws_key);
    todo!()
}

/// Appends a complete response with `Content-Length`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra_headers: &[(&str, &str)],
) {
    let _ = (out, status, content_type, body, keep_alive, extra_headers);
    todo!()
}
