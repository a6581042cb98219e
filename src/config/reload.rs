//! What a reload (SIGHUP) may change. Everything may, except the keys below: they were used
//! to set the process up (listeners, threads, rings, the broker connection, the demo feed,
//! logging) and keep their start values until a restart. A reload that changes one logs it
//! by name and applies the rest (docs/CONFIG.md "Reloading").

use super::Config;

/// Keys (`section.key`) and whole sections (`section`) a reload leaves as they were.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.shards",
    "server.pin_cores",
    "server.driver",
    "server.uring_entries",
    "server.listen_backlog",
    "server.demo_feed",
    "server.takeover",
    "timeouts.tick_ms",
    // Told to clients (the welcome frame, Centrifugo's connect reply), which may judge the
    // connection dead by it: a change would break the open ones.
    "timeouts.ping_interval_s",
    "centrifugo.ping_interval_s",
    // Open Binance subscriptions are named by the templates they were made with.
    "binance.streams",
    "mesh",
    "cluster",
    "demo",
    "tls.listen",
    "log",
];

/// Whether `key` (as [`changed_keys`] names it) is restart-only.
pub fn is_restart_only(key: &str) -> bool {
    RESTART_ONLY
        .iter()
        .any(|r| key == *r || key.strip_prefix(r).is_some_and(|k| k.starts_with('.')))
}

/// The keys whose values differ, `section.key` (arrays of tables as a whole: `topics`,
/// `auth.api_keys`, …), by section and key name. Names only: values may be secrets.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(old), Ok(new)) = (toml::Value::try_from(old), toml::Value::try_from(new)) else {
        return vec!["(configuration)".into()];
    };
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

fn diff(path: &str, old: &toml::Value, new: &toml::Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let mut names: Vec<&String> = a.keys().collect();
            names.extend(b.keys().filter(|k| !a.contains_key(*k)));
            for k in names {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&join(k), x, y, out),
                    _ => out.push(join(k)),
                }
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// Puts the running values of the restart-only keys into `new`, so what the shards get is
/// what the process can do.
pub fn keep_restart_only(new: &mut Config, running: &Config) {
    let (s, r) = (&mut new.server, &running.server);
    s.listen.clone_from(&r.listen);
    s.shards = r.shards;
    s.pin_cores = r.pin_cores;
    s.driver = r.driver;
    s.uring_entries = r.uring_entries;
    s.listen_backlog = r.listen_backlog;
    s.demo_feed = r.demo_feed;
    s.takeover = r.takeover;
    new.timeouts.tick_ms = running.timeouts.tick_ms;
    new.timeouts.ping_interval_s = running.timeouts.ping_interval_s;
    new.centrifugo.ping_interval_s = running.centrifugo.ping_interval_s;
    new.binance.streams.clone_from(&running.binance.streams);
    new.mesh = running.mesh.clone();
    new.cluster = running.cluster.clone();
    new.demo = running.demo.clone();
    new.tls.listen.clone_from(&running.tls.listen);
    new.log = running.log.clone();
}

/// The list docs/CONFIG.md shows under "Reloading".
#[cfg(test)]
fn markdown_list() -> String {
    RESTART_ONLY
        .iter()
        .map(|k| {
            if k.contains('.') {
                format!("- `{k}`\n")
            } else {
                format!("- every key of `[{k}]`\n")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config whose every restart-only key differs from the default.
    fn all_restart_only_changed() -> Config {
        let mut c = Config::default();
        c.server.listen = "127.0.0.9:1".into();
        c.server.shards = 7;
        c.server.pin_cores = !c.server.pin_cores;
        c.server.driver = crate::config::DriverKind::Epoll;
        c.server.uring_entries += 1;
        c.server.listen_backlog += 1;
        c.server.demo_feed = !c.server.demo_feed;
        c.server.takeover = !c.server.takeover;
        c.timeouts.tick_ms += 1;
        c.timeouts.ping_interval_s += 1;
        c.centrifugo.ping_interval_s += 1;
        c.binance.streams.clear();
        c.mesh.queue_len += 1;
        c.cluster.node_id = "other".into();
        c.demo.rate_per_s += 1;
        c.tls.listen = "127.0.0.9:2".into();
        c.log.level = "debug".into();
        c
    }

    #[test]
    fn every_restart_only_entry_is_a_key_or_section() {
        let tree = toml::Value::try_from(Config::default()).unwrap();
        for entry in RESTART_ONLY {
            assert!(
                entry.split('.').try_fold(&tree, |v, p| v.get(p)).is_some(),
                "{entry} is not a key or section of Config"
            );
        }
    }

    #[test]
    fn changes_are_named_and_restart_only_ones_kept() {
        let running = Config::default();
        let mut new = all_restart_only_changed();
        new.limits.message_bytes_max += 1;
        new.auth.allowed_origins = vec!["https://a.example".into()];
        let changed = changed_keys(&running, &new);
        for key in [
            "server.listen",
            "timeouts.tick_ms",
            "mesh.queue_len",
            "cluster.node_id",
            "log.level",
            "tls.listen",
            "limits.message_bytes_max",
            "auth.allowed_origins",
        ] {
            assert!(changed.iter().any(|c| c == key), "{key} not in {changed:?}");
        }
        let restart: Vec<&String> = changed.iter().filter(|k| is_restart_only(k)).collect();
        assert!(
            !restart
                .iter()
                .any(|k| k.starts_with("limits") || k.starts_with("auth"))
        );
        keep_restart_only(&mut new, &running);
        assert_eq!(
            changed_keys(&running, &new),
            ["auth.allowed_origins", "limits.message_bytes_max"],
            "every restart-only key back to its running value, the rest kept"
        );
    }

    #[test]
    fn arrays_of_tables_are_named_whole() {
        let running = Config::default();
        let mut new = Config::default();
        new.topics.push(crate::config::TopicClass {
            pattern: "a.>".into(),
            ..Default::default()
        });
        assert_eq!(changed_keys(&running, &new), ["topics"]);
        assert!(!is_restart_only("topics"));
        assert!(is_restart_only("cluster.url"));
        assert!(!is_restart_only("server.echo"));
        assert!(!is_restart_only("tls.cert_file"));
        assert!(!is_restart_only("clusterx"));
    }

    /// docs/CONFIG.md lists exactly these keys (`TICKCAST_BLESS_DOCS=1` rewrites the list).
    #[test]
    fn config_md_lists_the_restart_only_keys() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
        let mut doc = std::fs::read_to_string(path).unwrap();
        let begin = "<!-- restart-only keys: begin -->\n";
        let end = "<!-- restart-only keys: end -->";
        let start = doc
            .find(begin)
            .expect("CONFIG.md has the restart-only list")
            + begin.len();
        let stop = start + doc[start..].find(end).unwrap();
        let want = markdown_list();
        if doc[start..stop] == want {
            return;
        }
        if std::env::var_os("TICKCAST_BLESS_DOCS").is_some() {
            doc.replace_range(start..stop, &want);
            std::fs::write(path, &doc).unwrap();
            return;
        }
        panic!("docs/CONFIG.md's restart-only list is stale; rerun with TICKCAST_BLESS_DOCS=1");
    }
}
