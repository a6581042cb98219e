//! Authentication and authorization (docs/SECURITY.md).
//!
//! A connection presents a token (`?token=`, `Authorization: Bearer`, or the `auth` op). A
//! token with two dots is a JWT, verified with the `jsonwebtoken` crate against the configured
//! keys; anything else is an API key, looked up by its SHA-256 (config holds only hashes). The
//! result is an [`Identity`]: who (user id or key name), what it may subscribe to and publish
//! to ([`perm::Perms`], `{sub}` already expanded), whether it may use the admin HTTP API, when
//! it expires. A connection without a token is anonymous and gets `auth.anonymous_subs` /
//! `auth.anonymous_pubs`.
//!
//! Verification happens once per connection (and per refresh), never per message.

pub mod perm;
pub mod rate;

use std::{collections::HashMap, path::Path};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::config::{ApiKeyConfig, AuthConfig, Config, JwtKeyConfig};
pub use perm::Perms;
pub use rate::Rate;

/// Longest token accepted (a JWT with many `subs` patterns is a few KiB).
pub const TOKEN_BYTES_MAX: usize = 16 * 1024;

/// How a connection authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Jwt,
    ApiKey,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Jwt => "jwt",
            Method::ApiKey => "api_key",
        }
    }
}

/// Who a connection is and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// JWT `sub`, or the API key's configured name.
    pub user: Box<str>,
    pub method: Method,
    pub subs: Perms,
    pub pubs: Perms,
    /// May use the admin HTTP API (JWT `role: "admin"`, or an API key with `admin = true`).
    pub admin: bool,
    /// JWT `exp` (Unix seconds); API keys do not expire.
    pub exp_s: Option<u64>,
    /// Inbound message rate of this identity, when it differs from `limits.client_messages_*`.
    pub rate: Option<Rate>,
}

/// Why a token was refused. `Display` is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    TooLong,
    Malformed,
    /// The token's `alg` has no configured key (includes `none`, which is never accepted).
    NoKeyForAlgorithm(String),
    /// Keys for the token's `alg` exist, but none has the token's `kid`.
    UnknownKid(String),
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    MissingClaim(String),
    BadSubject,
    UnknownApiKey,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::TooLong => write!(f, "token longer than {TOKEN_BYTES_MAX} bytes"),
            AuthError::Malformed => f.write_str("malformed token"),
            AuthError::NoKeyForAlgorithm(alg) => {
                write!(f, "no key accepts tokens signed with {alg}")
            }
            AuthError::UnknownKid(kid) => {
                let shown: String = kid.chars().take(64).collect();
                write!(f, "no key has kid {shown:?}")
            }
            AuthError::BadSignature => f.write_str("invalid token signature"),
            AuthError::Expired => f.write_str("token expired"),
            AuthError::NotYetValid => f.write_str("token not yet valid (nbf)"),
            AuthError::BadIssuer => f.write_str("token issuer not accepted"),
            AuthError::BadAudience => f.write_str("token audience not accepted"),
            AuthError::MissingClaim(c) => write!(f, "token lacks the {c:?} claim"),
            AuthError::BadSubject => {
                f.write_str("token \"sub\" must be 1-128 printable characters")
            }
            AuthError::UnknownApiKey => f.write_str("unknown API key"),
        }
    }
}

impl AuthError {
    /// Label for `tickcast_auth_failures_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::TooLong | AuthError::Malformed => "malformed",
            AuthError::NoKeyForAlgorithm(_) => "algorithm",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::BadSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadIssuer | AuthError::BadAudience => "issuer_audience",
            AuthError::MissingClaim(_) | AuthError::BadSubject => "claims",
            AuthError::UnknownApiKey => "unknown_api_key",
        }
    }

    pub const LABELS: [&'static str; 9] = [
        "malformed",
        "algorithm",
        "unknown_kid",
        "signature",
        "expired",
        "not_yet_valid",
        "issuer_audience",
        "claims",
        "unknown_api_key",
    ];
}

/// One configured JWT verification key.
struct JwtKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

struct ApiKey {
    name: Box<str>,
    subs: Vec<String>,
    pubs: Vec<String>,
    admin: bool,
    rate: Option<Rate>,
}

/// The verifier, built once at start from `[auth]`.
pub struct Auth {
    jwt_keys: Vec<JwtKey>,
    api_keys: HashMap<[u8; 32], ApiKey>,
    validation: ValidationSettings,
    /// What an anonymous connection may do.
    pub anonymous_subs: Perms,
    pub anonymous_pubs: Perms,
}

struct ValidationSettings {
    leeway_s: u64,
    require_exp: bool,
    issuer: Option<String>,
    audience: Option<String>,
}

/// The claims tickcast reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    subs: Vec<String>,
    #[serde(default)]
    pubs: Vec<String>,
    #[serde(default)]
    role: Option<String>,
}

/// SHA-256 of an API key, as lowercase hex (what `tickcast hash-key` prints).
pub fn hash_api_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random API key: 32 bytes from the OS RNG, as `tk_` + 64 hex characters.
pub fn generate_api_key() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the OS random generator failed".to_string())?;
    Ok(format!(
        "tk_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn read_file(key: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("config: {key}: cannot read {path}: {e}"))
}

fn jwt_key(i: usize, k: &JwtKeyConfig) -> Result<JwtKey, String> {
    let name = |field: &str| format!("auth.jwt_keys[{i}].{field}");
    let alg: Algorithm = k.algorithm.parse().map_err(|_| {
        format!(
            "config: {}: {:?} is not one of HS256, HS384, HS512, RS256, ES256",
            name("algorithm"),
            k.algorithm
        )
    })?;
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = match (k.secret.is_empty(), k.secret_file.is_empty()) {
                (false, true) => k.secret.as_bytes().to_vec(),
                (true, false) => {
                    let mut s = read_file(&name("secret_file"), &k.secret_file)?;
                    while s.last().is_some_and(|b| b.is_ascii_whitespace()) {
                        s.pop();
                    }
                    s
                }
                _ => {
                    return Err(format!(
                        "config: {}: an HMAC key needs exactly one of secret, secret_file",
                        name("secret")
                    ));
                }
            };
            // RFC 7518 §3.2: the key must be at least as long as the hash output.
            if secret.len() < 32 {
                return Err(format!(
                    "config: {}: HMAC secrets must be at least 32 bytes (got {})",
                    name("secret"),
                    secret.len()
                ));
            }
            DecodingKey::from_secret(&secret)
        }
        Algorithm::RS256 | Algorithm::ES256 => {
            if k.public_key_file.is_empty() {
                return Err(format!(
                    "config: {}: {alg:?} needs a PEM public key file",
                    name("public_key_file")
                ));
            }
            let pem = read_file(&name("public_key_file"), &k.public_key_file)?;
            let parsed = if alg == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            parsed.map_err(|e| {
                format!(
                    "config: {}: {} is not a {alg:?} public key in PEM: {e}",
                    name("public_key_file"),
                    k.public_key_file
                )
            })?
        }
        other => {
            return Err(format!(
                "config: {}: {other:?} is not supported (HS256, HS384, HS512, RS256, ES256)",
                name("algorithm")
            ));
        }
    };
    Ok(JwtKey {
        alg,
        kid: (!k.kid.is_empty()).then(|| k.kid.clone()),
        key,
    })
}

fn api_key(i: usize, k: &ApiKeyConfig) -> Result<([u8; 32], ApiKey), String> {
    let name = |field: &str| format!("auth.api_keys[{i}].{field}");
    let hash = parse_hex32(&k.sha256.to_ascii_lowercase()).ok_or_else(|| {
        format!(
            "config: {}: must be 64 hex characters (the output of `tickcast hash-key`)",
            name("sha256")
        )
    })?;
    if k.name.is_empty() || k.name.len() > 128 {
        return Err(format!("config: {}: 1-128 characters", name("name")));
    }
    for (field, list) in [("subs", &k.subs), ("pubs", &k.pubs)] {
        for p in list {
            perm::check_template(p).map_err(|e| format!("config: {}: {e}", name(field)))?;
        }
    }
    let rate = match (k.messages_per_s, k.messages_burst) {
        (None, None) => None,
        (per_s, burst) => {
            let per_s = per_s.unwrap_or(0);
            Some(Rate::new(per_s, burst.unwrap_or(per_s.saturating_mul(2))))
        }
    };
    Ok((
        hash,
        ApiKey {
            name: k.name.as_str().into(),
            subs: k.subs.clone(),
            pubs: k.pubs.clone(),
            admin: k.admin,
            rate,
        },
    ))
}

impl Auth {
    /// Builds the verifier; errors name the config key (unreadable key files, bad PEM, short
    /// HMAC secrets, bad hashes, invalid permission patterns).
    pub fn from_config(cfg: &Config) -> Result<Auth, String> {
        let a: &AuthConfig = &cfg.auth;
        let jwt_keys = a
            .jwt_keys
            .iter()
            .enumerate()
            .map(|(i, k)| jwt_key(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut api_keys = HashMap::new();
        for (i, k) in a.api_keys.iter().enumerate() {
            let (hash, key) = api_key(i, k)?;
            if api_keys.insert(hash, key).is_some() {
                return Err(format!(
                    "config: auth.api_keys[{i}].sha256: the same key is configured twice"
                ));
            }
        }
        for (field, list) in [
            ("auth.anonymous_subs", &a.anonymous_subs),
            ("auth.anonymous_pubs", &a.anonymous_pubs),
        ] {
            for p in list {
                perm::check_template(p).map_err(|e| format!("config: {field}: {e}"))?;
            }
        }
        Ok(Auth {
            jwt_keys,
            api_keys,
            validation: ValidationSettings {
                leeway_s: a.jwt_leeway_s,
                require_exp: a.jwt_require_exp,
                issuer: (!a.jwt_issuer.is_empty()).then(|| a.jwt_issuer.clone()),
                audience: (!a.jwt_audience.is_empty()).then(|| a.jwt_audience.clone()),
            },
            anonymous_subs: Perms::compile(&a.anonymous_subs, None),
            anonymous_pubs: Perms::compile(&a.anonymous_pubs, None),
        })
    }

    /// Verifies a token (JWT or API key) into an identity.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::TooLong);
        }
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            self.verify_jwt(token)
        } else {
            self.verify_api_key(token)
        }
    }

    fn verify_api_key(&self, token: &str) -> Result<Identity, AuthError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let hash: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        let key = self.api_keys.get(&hash).ok_or(AuthError::UnknownApiKey)?;
        Ok(Identity {
            user: key.name.clone(),
            method: Method::ApiKey,
            subs: Perms::compile(&key.subs, Some(&key.name)),
            pubs: Perms::compile(&key.pubs, Some(&key.name)),
            admin: key.admin,
            exp_s: None,
            rate: key.rate,
        })
    }

    fn verify_jwt(&self, token: &str) -> Result<Identity, AuthError> {
        // `alg: none` and unknown algorithms fail here: the crate's Algorithm has no `none`.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // Each key verifies exactly one algorithm, so a token can never choose how its own
        // signature is checked (no RS256 public key used as an HS256 secret).
        let candidates = self.jwt_keys.iter().filter(|k| {
            k.alg == header.alg
                && match (&k.kid, &header.kid) {
                    (Some(want), Some(got)) => want == got,
                    _ => true,
                }
        });
        let mut last = match &header.kid {
            Some(kid) if self.jwt_keys.iter().any(|k| k.alg == header.alg) => {
                AuthError::UnknownKid(kid.clone())
            }
            _ => AuthError::NoKeyForAlgorithm(format!("{:?}", header.alg)),
        };
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation_for(key.alg)) {
                Ok(data) => return self.identity(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(AuthError::BadIssuer),
                        ErrorKind::InvalidAudience => return Err(AuthError::BadAudience),
                        ErrorKind::MissingRequiredClaim(c) => {
                            return Err(AuthError::MissingClaim(c.clone()));
                        }
                        _ => AuthError::Malformed,
                    }
                }
            }
        }
        Err(last)
    }

    fn validation_for(&self, alg: Algorithm) -> Validation {
        let v = &self.validation;
        let mut val = Validation::new(alg);
        val.leeway = v.leeway_s;
        val.validate_exp = true;
        val.validate_nbf = true;
        val.required_spec_claims.clear();
        val.required_spec_claims.insert("sub".into());
        if v.require_exp {
            val.required_spec_claims.insert("exp".into());
        }
        match &v.audience {
            Some(aud) => {
                val.set_audience(&[aud]);
                val.required_spec_claims.insert("aud".into());
            }
            None => val.validate_aud = false,
        }
        if let Some(iss) = &v.issuer {
            val.set_issuer(&[iss]);
            val.required_spec_claims.insert("iss".into());
        }
        val
    }

    fn identity(&self, c: Claims) -> Result<Identity, AuthError> {
        let user = c.sub.ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
        let printable = user.chars().all(|ch| !ch.is_control());
        if user.is_empty() || user.len() > 128 || !printable {
            return Err(AuthError::BadSubject);
        }
        Ok(Identity {
            subs: Perms::compile(&c.subs, Some(&user)),
            pubs: Perms::compile(&c.pubs, Some(&user)),
            admin: c.role.as_deref() == Some("admin"),
            exp_s: c.exp,
            rate: None,
            method: Method::Jwt,
            user: user.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKeyConfig, JwtKeyConfig};
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth(mutate: impl FnOnce(&mut Config)) -> Auth {
        let mut cfg = Config::default();
        cfg.auth.jwt_keys.push(JwtKeyConfig {
            algorithm: "HS256".into(),
            secret: SECRET.into(),
            ..Default::default()
        });
        mutate(&mut cfg);
        Auth::from_config(&cfg).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn valid_jwt_gives_identity_with_expanded_permissions() {
        let a = auth(|_| {});
        let t = hs256(
            serde_json::json!({"sub":"alice","exp":now()+60,"subs":["user.{sub}.>"],"pubs":["orders.{sub}"],"role":"admin"}),
            SECRET,
        );
        let id = a.verify(&t).unwrap();
        assert_eq!(&*id.user, "alice");
        assert!(id.admin);
        assert!(id.subs.allows_pattern("user.alice.orders"));
        assert!(!id.subs.allows_pattern("user.bob.orders"));
        assert!(id.pubs.allows_topic("orders.alice"));
    }

    #[test]
    fn rejects_bad_tokens_with_the_reason() {
        let a = auth(|_| {});
        let cases = [
            (
                hs256(serde_json::json!({"sub":"a","exp":now()-3600}), SECRET),
                AuthError::Expired,
            ),
            (
                hs256(
                    serde_json::json!({"sub":"a","exp":now()+3600,"nbf":now()+3600}),
                    SECRET,
                ),
                AuthError::NotYetValid,
            ),
            (
                hs256(
                    serde_json::json!({"sub":"a","exp":now()+60}),
                    "another-secret-another-secret-xx",
                ),
                AuthError::BadSignature,
            ),
            (
                hs256(serde_json::json!({"exp":now()+60}), SECRET),
                AuthError::MissingClaim("sub".into()),
            ),
            (
                hs256(serde_json::json!({"sub":"a"}), SECRET),
                AuthError::MissingClaim("exp".into()),
            ),
            ("nonsense".into(), AuthError::UnknownApiKey),
            ("a.b.c".into(), AuthError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(a.verify(&token).unwrap_err(), want, "{token}");
        }
    }

    #[test]
    fn alg_none_and_unconfigured_algorithms_are_refused() {
        let a = auth(|_| {});
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, now() + 60));
        assert_eq!(
            a.verify(&format!("{header}.{body}.")).unwrap_err(),
            AuthError::Malformed
        );
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub":"a","exp":now()+60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            a.verify(&hs512).unwrap_err(),
            AuthError::NoKeyForAlgorithm(_)
        ));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let a = auth(|_| {});
        let t = hs256(serde_json::json!({"sub":"alice","exp":now()+60}), SECRET);
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        parts[1] = b64.encode(format!(r#"{{"sub":"root","exp":{}}}"#, now() + 60));
        assert_eq!(
            a.verify(&parts.join(".")).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn api_keys_are_matched_by_hash() {
        let key = "tk_secret-key-for-tests";
        let a = auth(|c| {
            c.auth.api_keys.push(ApiKeyConfig {
                name: "pricer".into(),
                sha256: hash_api_key(key).to_uppercase(),
                pubs: vec!["prices.>".into()],
                messages_per_s: Some(1000),
                ..Default::default()
            })
        });
        let id = a.verify(key).unwrap();
        assert_eq!(&*id.user, "pricer");
        assert_eq!(id.method, Method::ApiKey);
        assert!(id.pubs.allows_topic("prices.btc"));
        assert!(!id.subs.allows_pattern("prices.btc"));
        assert_eq!(id.rate, Some(Rate::new(1000, 2000)));
        assert_eq!(a.verify("tk_other").unwrap_err(), AuthError::UnknownApiKey);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut cfg = Config::default();
        cfg.auth.jwt_keys.push(JwtKeyConfig {
            algorithm: "HS256".into(),
            secret: "short".into(),
            ..Default::default()
        });
        let err = Auth::from_config(&cfg).err().unwrap();
        assert!(err.contains("auth.jwt_keys[0].secret"), "{err}");
        let mut cfg = Config::default();
        cfg.auth.api_keys.push(ApiKeyConfig {
            name: "x".into(),
            sha256: "abc".into(),
            ..Default::default()
        });
        let err = Auth::from_config(&cfg).err().unwrap();
        assert!(err.contains("auth.api_keys[0].sha256"), "{err}");
        let mut cfg = Config::default();
        cfg.auth.anonymous_subs = vec!["a..b".into()];
        let err = Auth::from_config(&cfg).err().unwrap();
        assert!(err.contains("auth.anonymous_subs"), "{err}");
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let a = auth(|c| {
            c.auth.jwt_issuer = "https://auth.example".into();
            c.auth.jwt_audience = "tickcast".into();
        });
        let ok = serde_json::json!({"sub":"a","exp":now()+60,"iss":"https://auth.example","aud":"tickcast"});
        assert!(a.verify(&hs256(ok, SECRET)).is_ok());
        let wrong_iss = serde_json::json!({"sub":"a","exp":now()+60,"iss":"evil","aud":"tickcast"});
        assert_eq!(
            a.verify(&hs256(wrong_iss, SECRET)).unwrap_err(),
            AuthError::BadIssuer
        );
        let wrong_aud =
            serde_json::json!({"sub":"a","exp":now()+60,"iss":"https://auth.example","aud":"x"});
        assert_eq!(
            a.verify(&hs256(wrong_aud, SECRET)).unwrap_err(),
            AuthError::BadAudience
        );
        let missing = serde_json::json!({"sub":"a","exp":now()+60});
        assert!(matches!(
            a.verify(&hs256(missing, SECRET)).unwrap_err(),
            AuthError::MissingClaim(_)
        ));
    }

    #[test]
    fn kid_selects_among_keys_of_one_algorithm() {
        let mut cfg = Config::default();
        for (kid, secret) in [("old", SECRET), ("new", "fedcba9876543210fedcba9876543210")] {
            cfg.auth.jwt_keys.push(JwtKeyConfig {
                algorithm: "HS256".into(),
                kid: kid.into(),
                secret: secret.into(),
                ..Default::default()
            });
        }
        let a = Auth::from_config(&cfg).unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("new".into());
        let claims = serde_json::json!({"sub":"a","exp":now()+60});
        let t = encode(
            &h,
            &claims,
            &EncodingKey::from_secret(b"fedcba9876543210fedcba9876543210"),
        )
        .unwrap();
        assert!(a.verify(&t).is_ok(), "rotated key by kid");
        h.kid = Some("old".into());
        let t = encode(
            &h,
            &claims,
            &EncodingKey::from_secret(b"fedcba9876543210fedcba9876543210"),
        )
        .unwrap();
        assert_eq!(
            a.verify(&t).unwrap_err(),
            AuthError::BadSignature,
            "kid pins the key"
        );
        h.kid = Some("gone".into());
        let t = encode(&h, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        assert_eq!(
            a.verify(&t).unwrap_err(),
            AuthError::UnknownKid("gone".into())
        );
    }

    #[test]
    fn hash_key_is_sha256_hex() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k = generate_api_key().unwrap();
        assert!(k.starts_with("tk_") && k.len() == 67);
    }
}
