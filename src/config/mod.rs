//! Configuration: TOML file, then `TICKCAST_<SECTION>__<KEY>` environment variables, then CLI
//! flags, in increasing precedence. Every field has a default with the reason for it; `validate`
//! rejects bad values naming the key. `config/default.toml` mirrors these defaults key by key.

mod keys;
mod reload;
mod sections;
mod validate;
pub use reload::{RESTART_ONLY, changed_keys, is_restart_only, keep_restart_only};
pub use validate::RESERVED_PATHS;

pub use sections::*;

pub use keys::{Bounds, Key, keys};

use std::{net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// How a file setting (`tls.cert_file`, `tls.key_file`, `auth.jwt_keys[].secret_file`,
/// `public_key_file`) names a file systemd's `LoadCredential=` placed: a leading
/// `$CREDENTIALS_DIRECTORY/` is that directory, so a secret can stay `chmod 600` root's where
/// it lives and still be read by a `DynamicUser=` service (docs/SECURITY.md).
pub const CREDENTIALS_PREFIX: &str = "$CREDENTIALS_DIRECTORY/";

/// The path of a file setting, with [`CREDENTIALS_PREFIX`] resolved from the environment.
pub fn file_path(setting: &str) -> Result<std::path::PathBuf, String> {
    let Some(name) = setting.strip_prefix(CREDENTIALS_PREFIX) else {
        return Ok(setting.into());
    };
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => Ok(Path::new(&dir).join(name)),
        _ => Err(
            "$CREDENTIALS_DIRECTORY is not set: systemd sets it for a unit with \
                  LoadCredential= (run by hand, export it or give the file's own path)"
                .into(),
        ),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub deflate: Deflate,
    pub mesh: Mesh,
    pub demo: Demo,
    pub log: Log,
    pub tls: Tls,
    pub auth: AuthConfig,
    pub cluster: Cluster,
    pub binance: Binance,
    pub centrifugo: Centrifugo,
    /// Topic classes (`[[topics]]`): per topic pattern, history and delivery policy. The first
    /// class whose pattern matches a topic applies to it.
    pub topics: Vec<TopicClass>,
}

/// Settings from the command line that override the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub shards: Option<usize>,
    pub demo_feed: bool,
    pub echo: bool,
    pub driver: Option<DriverKind>,
    pub tls_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub cluster_engine: Option<Engine>,
    pub cluster_url: Option<String>,
    pub node_id: Option<String>,
    pub takeover: bool,
}

impl Config {
    /// Defaults, then `path` (if any), then `TICKCAST_*` env vars, then `overrides`; validated.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(format!("config file {} does not exist", path.display()));
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("TICKCAST_").split("__"));
        let mut config: Config = fig.extract().map_err(|e| format!("config: {e}"))?;
        if let Some(listen) = &overrides.listen {
            config.server.listen = listen.clone();
        }
        if let Some(shards) = overrides.shards {
            config.server.shards = shards;
        }
        if let Some(driver) = overrides.driver {
            config.server.driver = driver;
        }
        if let Some(v) = &overrides.tls_listen {
            config.tls.listen = v.clone();
        }
        if let Some(v) = &overrides.tls_cert {
            config.tls.cert_file = v.clone();
        }
        if let Some(v) = &overrides.tls_key {
            config.tls.key_file = v.clone();
        }
        if let Some(e) = overrides.cluster_engine {
            config.cluster.engine = e;
        }
        if let Some(v) = &overrides.cluster_url {
            config.cluster.url = v.clone();
        }
        if let Some(v) = &overrides.node_id {
            config.cluster.node_id = v.clone();
        }
        config.server.demo_feed |= overrides.demo_feed;
        config.server.echo |= overrides.echo;
        config.server.takeover |= overrides.takeover;
        config.validate()?;
        Ok(config)
    }

    /// The listen address, parsed (validated by `validate`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }

    /// The TLS listen address, if TLS is enabled (validated by `validate`).
    pub fn tls_listen_addr(&self) -> Option<SocketAddr> {
        (!self.tls.listen.is_empty()).then(|| self.tls.listen.parse().expect("validated"))
    }

    /// Checks every value; the error names the key and says why.
    /// The broker URL, with the engine's loopback default when `cluster.url` is empty.
    pub fn cluster_url(&self) -> String {
        match (self.cluster.url.is_empty(), self.cluster.engine) {
            (false, _) => self.cluster.url.clone(),
            (true, Engine::Nats) => "nats://127.0.0.1:4222".into(),
            (true, Engine::Redis) => "redis://127.0.0.1:6379".into(),
            (true, Engine::Memory) => String::new(),
        }
    }

    /// The effective configuration as TOML (for `tickcast config`), inline HMAC secrets and
    /// the broker URL's password redacted.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for k in &mut shown.auth.jwt_keys {
            if !k.secret.is_empty() {
                k.secret = "<redacted>".into();
            }
        }
        shown.cluster.url = redact_url(&shown.cluster.url);
        toml_string(&shown)
    }
}

/// The servers in a broker URL: one, or (NATS) several separated by commas, each trimmed
/// (`nats://a:4222, nats://b:4222`). Empty entries are kept (as `""`) so validation can
/// refuse them. Anything but `nats://` is one server (a Redis password may hold a comma).
pub fn broker_urls(url: &str) -> impl Iterator<Item = &str> {
    let list = url.starts_with("nats://");
    url.split(move |c| list && c == ',').map(str::trim)
}

/// `url` with its password (or, for a lone user info, a token) replaced by `***`, in each of
/// its servers: for logs and `tickcast config`, which must not show broker credentials. A
/// server that does not parse as a URL is shown as `<not a URL>` (validation refuses it
/// before it is used).
pub fn redact_url(url: &str) -> String {
    broker_urls(url)
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
    if url.is_empty() {
        return String::new();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not shown: it may be a piece of user info (a literal comma in a password splits it).
        return "<not a URL>".into();
    };
    let redacted = if parsed.password().is_some() {
        parsed.set_password(Some("***"))
    } else if !parsed.username().is_empty() {
        parsed.set_username("***")
    } else {
        return url.to_string();
    };
    match redacted {
        Ok(()) => parsed.into(),
        Err(()) => "<broker URL with credentials>".into(),
    }
}

/// The credentials in `url`'s user info, percent-decoded: `(user, Some(password))`, or
/// `(token, None)` for `scheme://token@host`. Of a list of servers, the first that carries
/// any (validation makes sure they all carry the same).
pub fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    broker_urls(url).find_map(credentials_of)
}

fn credentials_of(url: &str) -> Option<(String, Option<String>)> {
    let parsed = url::Url::parse(url).ok()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if parsed.username().is_empty() {
        return None;
    }
    Some((decode(parsed.username()), parsed.password().map(decode)))
}

fn toml_string(config: &Config) -> String {
    toml::to_string(config).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_credentials_are_read_and_redacted() {
        let url = "nats://node:p%40ss:w@10.0.0.5:4222/x";
        assert_eq!(
            url_credentials(url),
            Some(("node".into(), Some("p@ss:w".into())))
        );
        assert_eq!(redact_url(url), "nats://node:***@10.0.0.5:4222/x");
        let token = "nats://s3cr3t@127.0.0.1:4222";
        assert_eq!(url_credentials(token), Some(("s3cr3t".into(), None)));
        assert_eq!(redact_url(token), "nats://***@127.0.0.1:4222");
        let plain = "redis://127.0.0.1:6379/0";
        assert_eq!(url_credentials(plain), None);
        assert_eq!(redact_url(plain), plain);
        // An '@' in the path is not user info.
        assert_eq!(url_credentials("nats://h:1/a@b"), None);
        // A list of NATS servers: each redacted, the first credentials used.
        let list = "nats://n:pw@10.0.0.5:4222, nats://n:pw@10.0.0.6:4222,nats://10.0.0.7:4222";
        assert_eq!(
            redact_url(list),
            "nats://n:***@10.0.0.5:4222,nats://n:***@10.0.0.6:4222,nats://10.0.0.7:4222"
        );
        assert_eq!(url_credentials(list), Some(("n".into(), Some("pw".into()))));
        assert_eq!(
            url_credentials("nats://10.0.0.7:4222,nats://t0k@10.0.0.5:4222"),
            Some(("t0k".into(), None))
        );
        // A Redis URL is one server, whatever its password holds.
        let comma = "redis://u:pa,ss@127.0.0.1:6379";
        assert_eq!(redact_url(comma), "redis://u:***@127.0.0.1:6379");
        assert_eq!(
            url_credentials(comma),
            Some(("u".into(), Some("pa,ss".into())))
        );
        // A NATS password with a literal comma (not percent-encoded) is refused by validation;
        // no piece of it is shown meanwhile.
        let shown = redact_url("nats://u:pa,ss@h:4222");
        assert!(!shown.contains("pa") && !shown.contains("ss"), "{shown}");
        // No broker (the memory engine): nothing to show.
        assert_eq!(redact_url(""), "");
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn cluster_settings_are_checked() {
        let refused = |f: &dyn Fn(&mut Cluster), key: &str| {
            let mut c = Config::default();
            f(&mut c.cluster);
            let err = c.validate().unwrap_err();
            assert!(err.contains(key), "{err}");
        };
        refused(&|c| c.node_ttl_ms = c.heartbeat_ms, "cluster.node_ttl_ms");
        refused(&|c| c.node_id = "a.b".into(), "cluster.node_id");
        refused(&|c| c.prefix = "tc.x".into(), "cluster.prefix");
        refused(&|c| c.nats_storage = "disk".into(), "cluster.nats_storage");
        refused(
            &|c| c.nats_live_reader = "thread".into(),
            "cluster.nats_live_reader",
        );
        for (engine, url) in [
            (Engine::Nats, "redis://127.0.0.1:6379"),
            (Engine::Redis, "nats://x:1"),
            (Engine::Nats, "nats://:4222"),
            (Engine::Nats, "nats://a:4222,"),
            (Engine::Nats, "nats://a:4222,,nats://b:4222"),
            (Engine::Nats, "nats://a:4222,redis://b:6379"),
            (Engine::Nats, "nats://a:4222,nats://:4222"),
            (Engine::Nats, "nats://u:p@a:4222,nats://u:q@b:4222"),
        ] {
            refused(
                &|c| {
                    c.engine = engine;
                    c.url = url.into();
                },
                "cluster.url",
            );
        }
        for n in [0, 6] {
            refused(&|c| c.nats_replicas = n, "cluster.nats_replicas");
        }
        refused(&|c| c.reconnect_max_ms = 1, "cluster.reconnect_max_ms");
        let mut c = Config::default();
        c.cluster.engine = Engine::Nats;
        c.cluster.url = "nats://u:p@a:4222, nats://u:p@b:4222,nats://c".into();
        c.validate().unwrap();
        let mut c = Config::default();
        c.cluster.engine = Engine::Redis;
        c.validate().unwrap();
        assert_eq!(c.cluster_url(), "redis://127.0.0.1:6379");
        c.cluster.engine = Engine::Nats;
        assert_eq!(c.cluster_url(), "nats://127.0.0.1:4222");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.timeouts.idle_s = 10;
        c.timeouts.ping_interval_s = 20;
        let err = c.validate().unwrap_err();
        assert!(err.contains("timeouts.idle_s"), "{err}");

        let mut c = Config::default();
        c.server.listen = "nope".into();
        assert!(c.validate().unwrap_err().contains("server.listen"));

        let mut c = Config::default();
        c.topics.push(TopicClass {
            pattern: "presence.>".into(),
            presence: true,
            ..Default::default()
        });
        assert!(c.validate().unwrap_err().contains("topics[0].presence"));

        let mut c = Config::default();
        c.server.tcp_notsent_lowat_bytes = 100;
        assert!(
            c.validate()
                .unwrap_err()
                .contains("server.tcp_notsent_lowat_bytes")
        );
        c.server.tcp_notsent_lowat_bytes = 0;
        c.validate().unwrap();

        let mut c = Config::default();
        c.limits.write_queue_bytes_max = 1000;
        assert!(
            c.validate()
                .unwrap_err()
                .contains("limits.write_queue_bytes_max")
        );
    }
}
