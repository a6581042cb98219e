//! Opening the WebSocket of `tickcast client`: TCP (or TLS through rustls, the crate the server
//! uses) and the handshake of the `tungstenite` crate, blocking; then a short read timeout so
//! one thread can both read the server and send what the user typed.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use tungstenite::{
    WebSocket,
    client::IntoClientRequest,
    http::{HeaderValue, header::AUTHORIZATION},
};

/// How long a read waits before the loop looks at typed commands again.
pub const POLL: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub type Ws = WebSocket<Stream>;

/// Why a connection could not be opened; `fatal` when trying again cannot help (a refused
/// token, a wrong path, a bad certificate).
pub struct ConnectError {
    pub message: String,
    pub fatal: bool,
}

impl ConnectError {
    fn retry(message: String) -> Self {
        ConnectError {
            message,
            fatal: false,
        }
    }
    fn fatal(message: String) -> Self {
        ConnectError {
            message,
            fatal: true,
        }
    }
}

/// A `ws://` or `wss://` URL, checked once at start. `host:port` alone means `ws://host:port/ws`,
/// and a URL without a path gets `/ws`.
pub struct Target {
    pub url: url::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    pub fn parse(raw: &str, ca_file: Option<&Path>) -> Result<Target, String> {
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("ws://{raw}")
        };
        let mut url = url::Url::parse(&with_scheme).map_err(|e| format!("{raw}: {e}"))?;
        if url.path().is_empty() || url.path() == "/" {
            url.set_path("/ws");
        }
        let tls = match url.scheme() {
            "ws" => {
                if ca_file.is_some() {
                    return Err("--ca is for wss:// URLs".into());
                }
                None
            }
            "wss" => Some(Arc::new(tls_config(ca_file)?)),
            other => {
                return Err(format!(
                    "{raw}: the scheme must be ws:// or wss://, not {other}://"
                ));
            }
        };
        if url.host_str().is_none() {
            return Err(format!("{raw}: no host"));
        }
        Ok(Target { url, tls })
    }

    /// Connects and completes the WebSocket handshake, presenting `token` as
    /// `Authorization: Bearer` (kept out of the URL, so out of access logs).
    pub fn connect(&self, token: Option<&str>) -> Result<Ws, ConnectError> {
        let addrs = self
            .url
            .socket_addrs(|| None)
            .map_err(|e| ConnectError::retry(format!("cannot resolve {}: {e}", self.url)))?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            ConnectError::retry(last.unwrap_or_else(|| format!("{}: no address", self.url)))
        })?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
            .map_err(|e| ConnectError::retry(e.to_string()))?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let host = self.url.host_str().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| ConnectError::fatal(format!("{host}: {e}")))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| ConnectError::fatal(format!("TLS: {e}")))?;
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // The TLS handshake now, for a clear error (it would otherwise surface as a
                // failed WebSocket handshake).
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| match e.kind() {
                            io::ErrorKind::InvalidData => {
                                ConnectError::fatal(format!("TLS handshake: {e}"))
                            }
                            _ => ConnectError::retry(format!("TLS handshake: {e}")),
                        })?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::fatal(e.to_string()))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ConnectError::fatal("the token has invalid characters".into()))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let (ws, _) = tungstenite::client::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let message = format!("HTTP {status} {}", body.trim());
                // 429 and 503 (rate limits, capacity, shutting down) pass; the rest will not.
                if status.as_u16() == 429 || status.is_server_error() {
                    ConnectError::retry(message)
                } else {
                    ConnectError::fatal(message)
                }
            }
            other => ConnectError::retry(format!("WebSocket handshake: {other}")),
        })?;
        let tcp = ws.get_ref().tcp();
        tcp.set_read_timeout(Some(POLL))
            .and_then(|()| tcp.set_write_timeout(None))
            .map_err(|e| ConnectError::retry(e.to_string()))?;
        Ok(ws)
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--ca {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--ca {}: no certificate in it", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--ca {}: {e}", path.display()))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| format!("TLS: {e}"))
}
