//! `wss://` connections: a rustls client per connection over its nonblocking socket. The bench
//! uses rustls' buffered connection (simple, and the bench is not what is measured: it runs
//! on its own cores); session resumption is off, so every connection makes a full handshake.

use std::{
    io::{self, Read, Write},
    sync::Arc,
};

use mio::net::TcpStream;
use rustls::{
    ClientConfig, ClientConnection, RootCertStore,
    client::Resumption,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};

/// The client configuration of a thread whose targets speak TLS: trusts the certificates in
/// the PEM file `ca` only.
pub fn client_config(ca: Option<&str>) -> io::Result<Arc<ClientConfig>> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let ca = ca.ok_or_else(|| bad("wss:// targets need --tls-ca".into()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(format!("{ca}: {e}")))? {
        let cert = cert.map_err(|e| bad(format!("{ca}: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("{ca}: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client connection to `host` (`name:port`; the name, or IP address, the certificate must
/// be for).
pub fn connect(config: &Arc<ClientConfig>, host: &str) -> io::Result<Box<ClientConnection>> {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    Ok(Box::new(conn))
}

/// Like `sock.read(buf)` for the plaintext: `Ok(0)` at the end of the stream (close_notify or
/// EOF), `WouldBlock` once the socket has nothing more. Handshake records rustls wants to send
/// on the way are written.
pub fn read(tls: &mut ClientConnection, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // EOF without close_notify: as EOF.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        match tls.read_tls(sock) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        tls.process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        write_pending(tls, sock)?;
    }
}

/// Encrypts `out` (once rustls' earlier records are all written, so `out` stays the backlog)
/// and writes what the socket takes.
pub fn flush(
    tls: &mut ClientConnection,
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    write_pending(tls, sock)?;
    if tls.wants_write() || out.is_empty() {
        return Ok(());
    }
    tls.writer().write_all(out)?;
    out.clear();
    write_pending(tls, sock)
}

/// Writes rustls' records until the socket is full.
fn write_pending(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
