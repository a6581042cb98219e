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
//!
//! Layout: this file holds the public types ([`Auth`], [`Identity`], [`AuthError`]) and the
//! glue that builds the verifier from config and hands a token to the right check. `jwt.rs`
//! verifies JWTs (keys, validation settings, claims); `api_keys.rs` hashes, generates and looks
//! up API keys; [`perm`] holds topic permissions and [`rate`] the GCRA rate limits.

mod api_keys;
mod jwt;
pub mod perm;
pub mod rate;

use std::collections::HashMap;

use crate::config::{AuthConfig, Config};
use api_keys::{ApiKey, api_key};
pub use api_keys::{generate_api_key, hash_api_key};
use jwt::{JwtKey, ValidationSettings, jwt_key};
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
    /// The credential behind it, so a reload can tell whether it is still configured
    /// ([`Auth::recheck`]): the API key's SHA-256, or the fingerprint of the JWT key that
    /// verified the token (the token itself is not kept).
    pub credential: [u8; 32],
    /// A JWT's header `kid`, if it had one (which keys may verify it).
    pub jwt_kid: Option<Box<str>>,
}

/// What a reloaded configuration says of a connection's identity ([`Auth::recheck`]).
#[derive(Debug, PartialEq)]
pub enum Recheck {
    /// Still valid, rights unchanged.
    Same,
    /// Still valid, with these rights now (an API key's `subs`, `pubs`, `admin` or rate
    /// changed).
    Changed(Identity),
    /// No longer valid: why, as the client is told.
    Revoked(&'static str),
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

/// The verifier, built once at start from `[auth]`.
pub struct Auth {
    jwt_keys: Vec<JwtKey>,
    api_keys: HashMap<[u8; 32], ApiKey>,
    validation: ValidationSettings,
    /// What an anonymous connection may do.
    pub anonymous_subs: Perms,
    pub anonymous_pubs: Perms,
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
            validation: ValidationSettings::from_config(a),
            anonymous_subs: Perms::compile(&a.anonymous_subs, None),
            anonymous_pubs: Perms::compile(&a.anonymous_pubs, None),
        })
    }

    /// What this (reloaded) configuration says of an identity verified under an earlier one:
    /// an API key must still be configured under the same name; a JWT's signing key must
    /// still be configured and still serve the token's `kid`, and a token without `exp` is
    /// revoked once `jwt_require_exp` is on (its claims do not change; issuer and audience
    /// settings apply to tokens presented from now on).
    pub fn recheck(&self, ident: &Identity) -> Recheck {
        match ident.method {
            Method::ApiKey => match self.api_keys.get(&ident.credential) {
                None => Recheck::Revoked("API key revoked"),
                Some(key) if key.name() != &*ident.user => Recheck::Revoked("API key renamed"),
                Some(key) => {
                    let now = key.identity(ident.credential);
                    if now == *ident {
                        Recheck::Same
                    } else {
                        Recheck::Changed(Identity {
                            exp_s: ident.exp_s,
                            ..now
                        })
                    }
                }
            },
            Method::Jwt => {
                let kid = ident.jwt_kid.as_deref();
                let key = self
                    .jwt_keys
                    .iter()
                    .any(|k| k.fingerprint == ident.credential && k.serves_kid(kid));
                if !key {
                    Recheck::Revoked("token signing key removed")
                } else if self.validation.require_exp && ident.exp_s.is_none() {
                    Recheck::Revoked("token without exp")
                } else {
                    Recheck::Same
                }
            }
        }
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
}

#[cfg(test)]
mod tests;
