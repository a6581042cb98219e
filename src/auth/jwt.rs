//! JWT verification: the configured keys (one algorithm each, HMAC secrets or PEM public
//! keys), the validation settings (leeway, `exp`, issuer, audience), and the claims tickcast
//! reads into an [`Identity`].

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{Auth, AuthError, Identity, Method, Perms};
use crate::config::{AuthConfig, JwtKeyConfig};

/// One configured JWT verification key.
pub(super) struct JwtKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
    /// SHA-256 of the algorithm and the key material (a PEM file's base64 body, without its
    /// armour, headers and line breaks): the same key configured again after a reload has the
    /// same fingerprint, whatever its `kid` or the file's line endings (`Auth::recheck`).
    pub(super) fingerprint: [u8; 32],
}

impl JwtKey {
    /// Whether this key verifies tokens with the header `kid` (as `verify_jwt` picks keys).
    pub(super) fn serves_kid(&self, kid: Option<&str>) -> bool {
        match (&self.kid, kid) {
            (Some(want), Some(got)) => want == got,
            _ => true,
        }
    }
}

/// [`JwtKey::fingerprint`].
fn fingerprint(alg: Algorithm, material: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let alg = format!("{alg:?}");
    ctx.update(&(alg.len() as u64).to_be_bytes());
    ctx.update(alg.as_bytes());
    ctx.update(material);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A PEM file's base64 body: no `-----` lines, no `Name: value` headers, no whitespace.
fn pem_body(pem: &[u8]) -> Vec<u8> {
    pem.split(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"-----") && !l.contains(&b':'))
        .flat_map(|l| l.iter().copied().filter(|b| !b.is_ascii_whitespace()))
        .collect()
}

pub(super) struct ValidationSettings {
    leeway_s: u64,
    pub(super) require_exp: bool,
    issuer: Option<String>,
    audience: Option<String>,
}

impl ValidationSettings {
    pub(super) fn from_config(a: &AuthConfig) -> ValidationSettings {
        ValidationSettings {
            leeway_s: a.jwt_leeway_s,
            require_exp: a.jwt_require_exp,
            issuer: (!a.jwt_issuer.is_empty()).then(|| a.jwt_issuer.clone()),
            audience: (!a.jwt_audience.is_empty()).then(|| a.jwt_audience.clone()),
        }
    }
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

fn read_file(key: &str, path: &str) -> Result<Vec<u8>, String> {
    let file = crate::config::file_path(path).map_err(|e| format!("config: {key}: {path}: {e}"))?;
    std::fs::read(&file).map_err(|e| format!("config: {key}: cannot read {}: {e}", file.display()))
}

pub(super) fn jwt_key(i: usize, k: &JwtKeyConfig) -> Result<JwtKey, String> {
    let name = |field: &str| format!("auth.jwt_keys[{i}].{field}");
    let alg: Algorithm = k.algorithm.parse().map_err(|_| {
        format!(
            "config: {}: {:?} is not one of HS256, HS384, HS512, RS256, ES256",
            name("algorithm"),
            k.algorithm
        )
    })?;
    let (key, material) = match alg {
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
            (DecodingKey::from_secret(&secret), secret)
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
            let parsed = parsed.map_err(|e| {
                format!(
                    "config: {}: {} is not a {alg:?} public key in PEM: {e}",
                    name("public_key_file"),
                    k.public_key_file
                )
            })?;
            (parsed, pem_body(&pem))
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
        fingerprint: fingerprint(alg, &material),
    })
}

impl Auth {
    pub(super) fn verify_jwt(&self, token: &str) -> Result<Identity, AuthError> {
        // `alg: none` and unknown algorithms fail here: the crate's Algorithm has no `none`.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        // Each key verifies exactly one algorithm, so a token can never choose how its own
        // signature is checked (no RS256 public key used as an HS256 secret).
        let candidates = self
            .jwt_keys
            .iter()
            .filter(|k| k.alg == header.alg && k.serves_kid(header.kid.as_deref()));
        let mut last = match &header.kid {
            Some(kid) if self.jwt_keys.iter().any(|k| k.alg == header.alg) => {
                AuthError::UnknownKid(kid.clone())
            }
            _ => AuthError::NoKeyForAlgorithm(format!("{:?}", header.alg)),
        };
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation_for(key.alg)) {
                Ok(data) => {
                    let kid = header.kid.as_deref().map(Into::into);
                    return self.identity(data.claims, key.fingerprint, kid);
                }
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

    fn identity(
        &self,
        c: Claims,
        credential: [u8; 32],
        jwt_kid: Option<Box<str>>,
    ) -> Result<Identity, AuthError> {
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
            credential,
            jwt_kid,
        })
    }
}
