//! Tests for token verification: JWTs (claims, signatures, algorithms, issuer, audience, kid),
//! API keys, and the config errors that name their key.

use super::*;
use crate::config::{ApiKeyConfig, JwtKeyConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

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
    let ok =
        serde_json::json!({"sub":"a","exp":now()+60,"iss":"https://auth.example","aud":"tickcast"});
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

/// A reload keeps a JWT connection while the key that verified it is still configured, by its
/// material (not its position, `kid` or line endings), and still serves the token's `kid`.
#[test]
fn recheck_knows_a_jwt_key_by_its_material() {
    let no_kid = auth(|_| {});
    let t = hs256(serde_json::json!({"sub":"a","exp":now()+60}), SECRET);
    let plain = no_kid.verify(&t).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k0".into());
    let claims = serde_json::json!({"sub":"b","exp":now()+60});
    let t = encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let with_k0 = no_kid.verify(&t).unwrap();
    let forever = no_kid
        .verify(&hs256(serde_json::json!({"sub":"c"}), SECRET))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(forever, AuthError::MissingClaim("exp".into()));

    // The same secret, now second and with kid k1.
    let rotated = auth(|c| {
        c.auth.jwt_keys[0].kid = "k1".into();
        c.auth.jwt_keys.insert(
            0,
            JwtKeyConfig {
                algorithm: "HS256".into(),
                secret: "another-secret-another-secret-xx".into(),
                ..Default::default()
            },
        );
    });
    assert_eq!(rotated.recheck(&plain), Recheck::Same);
    assert_eq!(
        rotated.recheck(&with_k0),
        Recheck::Revoked("token signing key removed")
    );
    let gone = auth(|c| c.auth.jwt_keys[0].secret = "another-secret-another-secret-xx".into());
    assert_eq!(
        gone.recheck(&plain),
        Recheck::Revoked("token signing key removed")
    );

    // A PEM key re-saved with CRLF line endings is the same key.
    let dir = std::env::temp_dir().join(format!("tickcast-recheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    let pem = std::fs::read_to_string(format!("{fixtures}/ec_public.pem")).unwrap();
    std::fs::write(dir.join("lf.pem"), &pem).unwrap();
    std::fs::write(dir.join("crlf.pem"), pem.replace('\n', "\r\n")).unwrap();
    let es = |file: &str| {
        let path = dir.join(file).to_string_lossy().into_owned();
        auth(move |c| {
            c.auth.jwt_keys = vec![JwtKeyConfig {
                algorithm: "ES256".into(),
                public_key_file: path,
                ..Default::default()
            }]
        })
    };
    let key =
        EncodingKey::from_ec_pem(&std::fs::read(format!("{fixtures}/ec_private.pem")).unwrap())
            .unwrap();
    let t = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    let ec = es("lf.pem").verify(&t).unwrap();
    assert_eq!(es("crlf.pem").recheck(&ec), Recheck::Same);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recheck_revokes_tokens_without_exp_once_it_is_required() {
    let lax = auth(|c| c.auth.jwt_require_exp = false);
    let forever = lax
        .verify(&hs256(serde_json::json!({"sub":"c"}), SECRET))
        .unwrap();
    assert_eq!(lax.recheck(&forever), Recheck::Same);
    let strict = auth(|_| {});
    assert_eq!(
        strict.recheck(&forever),
        Recheck::Revoked("token without exp")
    );
}

#[test]
fn recheck_follows_an_api_key() {
    let key = |name: &str, subs: &[&str]| ApiKeyConfig {
        name: name.into(),
        sha256: hash_api_key("tk_k"),
        subs: subs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let before = auth(|c| c.auth.api_keys = vec![key("bot", &["a.>"])]);
    let id = before.verify("tk_k").unwrap();
    assert_eq!(before.recheck(&id), Recheck::Same);
    let narrowed = auth(|c| c.auth.api_keys = vec![key("bot", &["b.>"])]);
    match narrowed.recheck(&id) {
        Recheck::Changed(now) => {
            assert!(now.subs.allows_pattern("b.x") && !now.subs.allows_pattern("a.x"));
        }
        other => panic!("{other:?}"),
    }
    let renamed = auth(|c| c.auth.api_keys = vec![key("robot", &["a.>"])]);
    assert_eq!(renamed.recheck(&id), Recheck::Revoked("API key renamed"));
    let removed = auth(|_| {});
    assert_eq!(removed.recheck(&id), Recheck::Revoked("API key revoked"));
}
