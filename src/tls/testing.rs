//! For tests, benches and the `tls` fuzz target: a rustls client configuration for one cipher
//! suite, and a client's traffic key taken out of rustls to seal or open records by hand (as no
//! real client would: odd padding, any content type, any length). Not used by the server.

use std::sync::Arc;

use ring::aead;
use rustls::{
    ClientConfig, ConnectionTrafficSecrets, RootCertStore, SupportedCipherSuite,
    crypto::{
        cipher::{Iv, Nonce},
        ring as provider,
    },
};

/// Every cipher suite the server offers (rustls' ring provider; ECDSA for TLS 1.2: the tests'
/// certificates are ECDSA): TLS 1.3 first, then TLS 1.2.
pub const SUITES: [SupportedCipherSuite; 6] = [
    provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
    provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
    provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// A client configuration trusting `roots` that offers only `suite` (and its version), ALPN
/// `http/1.1`; `extractable`: its traffic keys can be taken out
/// (`ClientConnection::dangerous_extract_secrets`, then [`TrafficKey::new`]).
pub fn client_config(
    suite: SupportedCipherSuite,
    roots: RootCertStore,
    extractable: bool,
) -> Arc<ClientConfig> {
    let version = match suite {
        SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
    };
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..provider::default_provider()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("the suite's version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_secret_extraction = extractable;
    Arc::new(config)
}

/// One direction's key, IV and next sequence number, as rustls hands them out.
pub struct TrafficKey {
    pub key: aead::LessSafeKey,
    pub iv: Iv,
    pub seq: u64,
}

impl TrafficKey {
    pub fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> TrafficKey {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => panic!("not one of the ring provider's suites"),
        };
        let key = aead::UnboundKey::new(alg, key.as_ref()).expect("the suite's key length");
        TrafficKey {
            key: aead::LessSafeKey::new(key),
            iv,
            seq,
        }
    }

    /// The nonce of the next record: the IV xor its sequence number (RFC 8446 §5.3).
    pub fn nonce(&self) -> [u8; aead::NONCE_LEN] {
        Nonce::new(&self.iv, self.seq).0
    }
}
