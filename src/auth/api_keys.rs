//! API keys: hashing (config holds only SHA-256 hashes), generation, the `[[auth.api_keys]]`
//! entries, and the lookup of a presented key.

use super::{Auth, AuthError, Identity, Method, Perms, Rate, perm};
use crate::config::ApiKeyConfig;

pub(super) struct ApiKey {
    name: Box<str>,
    subs: Vec<String>,
    pubs: Vec<String>,
    admin: bool,
    rate: Option<Rate>,
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

pub(super) fn api_key(i: usize, k: &ApiKeyConfig) -> Result<([u8; 32], ApiKey), String> {
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

impl ApiKey {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The identity of a connection authenticated with this key (`hash`: its SHA-256).
    pub(super) fn identity(&self, hash: [u8; 32]) -> Identity {
        Identity {
            user: self.name.clone(),
            method: Method::ApiKey,
            subs: Perms::compile(&self.subs, Some(&self.name)),
            pubs: Perms::compile(&self.pubs, Some(&self.name)),
            admin: self.admin,
            exp_s: None,
            rate: self.rate,
            credential: hash,
            jwt_kid: None,
        }
    }
}

impl Auth {
    pub(super) fn verify_api_key(&self, token: &str) -> Result<Identity, AuthError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let hash: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        let key = self.api_keys.get(&hash).ok_or(AuthError::UnknownApiKey)?;
        Ok(key.identity(hash))
    }
}
