//! TLS (`wss://`) for the second listener: the rustls server configuration (ring provider only),
//! loaded from PEM files at start and reloaded on SIGHUP.
//!
//! The current configuration is one `Arc<ServerConfig>` behind a `RwLock`, read once per
//! accepted TLS connection (never per message). A reload builds a complete new configuration
//! first and swaps it in only if that succeeded: a bad file leaves the old certificate serving.
//! Connections keep the configuration they were accepted with.
//!
//! A connection's TLS session ([`session`]: rustls for the handshake, then tickcast's own
//! record layer, [`record`]) runs on the shard runtimes, see `shard::tls`.

pub mod record;
pub mod session;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::config::Tls as TlsConfig;

/// ALPN: tickcast speaks HTTP/1.1 (the WebSocket upgrade) on its TLS port.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The TLS listener's shared state: the server configuration new connections get.
pub struct TlsState {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    /// Loads the configured certificate chain and key; the error names the key and the file.
    pub fn load(cfg: &TlsConfig) -> Result<TlsState, String> {
        let config = build_server_config(&cfg.cert_file, &cfg.key_file)?;
        Ok(TlsState {
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the certificate and key named by `cfg` (a reload may name other files) into a
    /// new configuration, without installing it: [`TlsState::install`] does, once everything
    /// else reloaded is known to be good. An error is counted in
    /// `tickcast_tls_cert_reloads_total{result="error"}`.
    pub fn prepare(&self, cfg: &TlsConfig) -> Result<ServerConfig, String> {
        build_server_config(&cfg.cert_file, &cfg.key_file).inspect_err(|_| {
            metrics::counter!("tickcast_tls_cert_reloads_total", "result" => "error").increment(1);
        })
    }

    /// New connections get `config` from now on (`tickcast_tls_cert_reloads_total{result="ok"}`).
    pub fn install(&self, config: ServerConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        metrics::counter!("tickcast_tls_cert_reloads_total", "result" => "ok").increment(1);
    }
}

/// Registers the reload counters so both results show (at 0) before the first reload.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "tickcast_tls_cert_reloads_total",
        "TLS certificate reloads (SIGHUP), by result (ok, error)."
    );
    for label in ["ok", "error"] {
        metrics::counter!("tickcast_tls_cert_reloads_total", "result" => label).absolute(0);
    }
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key (PKCS#8,
/// PKCS#1 RSA or SEC1 EC). TLS 1.2 and 1.3, ALPN `http/1.1`, no client authentication.
pub fn build_server_config(cert_file: &str, key_file: &str) -> Result<ServerConfig, String> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    server_config(certs, key)
        .map_err(|e| format!("config: tls.cert_file / tls.key_file: {cert_file} / {key_file}: {e}"))
}

/// [`build_server_config`] from the PEM text itself (tests, benches, perf/tls-heap).
pub fn server_config_from_pem(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key: {e}"))?;
    server_config(certs, key)
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // Once the handshake is done, rustls hands the traffic keys over to `record` (see there).
    config.enable_secret_extraction = true;
    Ok(config)
}

fn load_certs(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |why: String| format!("config: tls.cert_file: {file}: {why}");
    let path = crate::config::file_path(file).map_err(bad)?;
    readable(&path).map_err(bad)?;
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

fn load_key(file: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bad = |why: String| format!("config: tls.key_file: {file}: {why}");
    let path = crate::config::file_path(file).map_err(bad)?;
    readable(&path).map_err(bad)?;
    PrivateKeyDer::from_pem_file(&path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad("no PRIVATE KEY in the file".into()),
        e => bad(format!("invalid PEM: {e}")),
    })
}

/// An unreadable file is reported with the OS error (not as "no items found").
fn readable(file: &Path) -> Result<(), String> {
    std::fs::File::open(file)
        .map(drop)
        .map_err(|e| e.to_string())
}
