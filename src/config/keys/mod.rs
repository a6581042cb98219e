//! Every configuration key in one table: its section, type, bounds, what it means and what
//! happens when it triggers. The table drives the range checks of `validate.rs` (a key's
//! bounds are checked here and nowhere else) and the key tables of docs/CONFIG.md, which a test
//! keeps identical to it (`TICKCAST_BLESS_DOCS=1 cargo test --lib config::keys` rewrites
//! them); defaults come from `Config::default()` itself, so neither the docs nor the shipped
//! `config/default.toml` (tests/cli.rs) can drift from the code.

mod runtime;
mod services;

/// The numeric range a key must be in, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    Range(u64, u64),
    /// 0 (the feature off), or within the range.
    ZeroOrRange(u64, u64),
}

/// One configuration key.
#[derive(Debug)]
pub struct Key {
    /// `server`, `limits`, … or an array of tables: `topics`, `auth.jwt_keys`, `auth.api_keys`.
    pub section: &'static str,
    pub name: &'static str,
    /// The type, as the docs show it (`integer, ms`, `bool`, the values of an enum).
    pub kind: &'static str,
    /// The default as the docs show it, for the fields of arrays of tables (`(required)`);
    /// empty for the keys of sections, whose default is read from `Config::default()`.
    pub default: &'static str,
    /// Checked by `Config::validate` (numeric keys only; other rules are code there).
    pub bounds: Option<Bounds>,
    /// What values are valid, in words (the bounds, and the rules `validate.rs` checks).
    pub valid: &'static str,
    pub meaning: &'static str,
    /// What a client or operator sees when the bound is reached (sections that have it).
    pub triggers: &'static str,
}

/// Sections whose tables have a "when it triggers" column.
#[cfg(test)]
const WITH_TRIGGERS: &[&str] = &[
    "limits",
    "timeouts",
    "deflate",
    "mesh",
    "cluster",
    "binance",
    "centrifugo",
];

/// Arrays of tables (their entries are checked one by one, `section[i].name`).
pub const ARRAYS: &[&str] = &[
    "topics",
    "auth.jwt_keys",
    "auth.api_keys",
    "binance.streams",
];

/// The key tables, section by section in the order of docs/CONFIG.md.
const SECTIONS: &[&[Key]] = &[
    runtime::SERVER,
    runtime::LIMITS,
    runtime::TIMEOUTS,
    runtime::DEFLATE,
    runtime::MESH,
    services::CLUSTER,
    services::DEMO,
    services::TLS,
    services::LOG,
    services::AUTH,
    services::AUTH_JWT_KEYS,
    services::AUTH_API_KEYS,
    services::TOPICS,
    services::BINANCE,
    services::BINANCE_STREAMS,
    services::CENTRIFUGO,
];

/// Every key, in the order of docs/CONFIG.md.
pub fn keys() -> impl Iterator<Item = &'static Key> {
    SECTIONS.iter().flat_map(|s| s.iter())
}

/// The docs table of `section`: the rows docs/CONFIG.md shows under its heading.
#[cfg(test)]
fn markdown_table(section: &str) -> String {
    let defaults = toml::Value::try_from(super::Config::default()).ok();
    let table = defaults.as_ref().and_then(|d| {
        section
            .split('.')
            .try_fold(d, |v, part| v.get(part))
            .and_then(toml::Value::as_table)
    });
    let triggers = WITH_TRIGGERS.contains(&section);
    let first = if ARRAYS.contains(&section) && section.contains('.') {
        "field"
    } else {
        "key"
    };
    let mut out = format!("| {first} | type | default | valid | meaning |");
    out.push_str(if triggers {
        " when it triggers |\n"
    } else {
        "\n"
    });
    out.push_str("| --- | --- | --- | --- | --- |");
    out.push_str(if triggers { " --- |\n" } else { "\n" });
    for key in keys().filter(|k| k.section == section) {
        let default = match table.and_then(|t| t.get(key.name)) {
            _ if !key.default.is_empty() => key.default.to_string(),
            Some(v) => format!("`{v}`"),
            None => String::new(),
        };
        let name = format!("`{}`", key.name);
        let mut cells = vec![name.as_str(), key.kind, &default, key.valid, key.meaning];
        if triggers {
            cells.push(key.triggers);
        }
        out.push('|');
        for c in cells {
            if c.is_empty() {
                out.push_str(" |");
            } else {
                out.push(' ');
                out.push_str(c);
                out.push_str(" |");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/CONFIG.md shows, for every section, exactly the table above (and its defaults
    /// are `Config::default()`'s). `TICKCAST_BLESS_DOCS=1` rewrites the tables.
    #[test]
    fn config_md_tables_are_the_key_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
        let mut doc = std::fs::read_to_string(path).unwrap();
        let mut sections: Vec<&str> = keys().map(|k| k.section).collect();
        sections.dedup();
        let mut stale = Vec::new();
        for section in sections {
            let heading = if ARRAYS.contains(&section) {
                format!(" [[{section}]]\n")
            } else {
                format!("## [{section}]\n")
            };
            let at = doc
                .find(&heading)
                .unwrap_or_else(|| panic!("CONFIG.md has no heading {heading:?}"));
            let start = at
                + doc[at..]
                    .find("\n| ")
                    .unwrap_or_else(|| panic!("no table under {heading:?}"))
                + 1;
            let end = doc[start..]
                .find("\n\n")
                .map_or(doc.len(), |o| start + o + 1);
            let want = markdown_table(section);
            if doc[start..end] != want {
                stale.push(section);
                doc.replace_range(start..end, &want);
            }
        }
        if std::env::var_os("TICKCAST_BLESS_DOCS").is_some() {
            std::fs::write(path, &doc).unwrap();
            return;
        }
        assert!(
            stale.is_empty(),
            "docs/CONFIG.md differs from the key table (src/config/keys.rs) in {stale:?}; \
             rerun with TICKCAST_BLESS_DOCS=1 to rewrite it"
        );
    }

    /// A key's bounds are the ones its docs state, and every bounded key exists.
    #[test]
    fn bounds_match_the_docs_and_the_config() {
        let tree = serde_json::to_value(crate::config::Config::default()).unwrap();
        for key in keys() {
            let Some(bounds) = key.bounds else { continue };
            let (lo, hi) = match bounds {
                Bounds::Range(lo, hi) | Bounds::ZeroOrRange(lo, hi) => (lo, hi),
            };
            assert!(
                key.valid.contains(&format!("{lo}..={hi}")),
                "{}.{}: {:?} does not state {lo}..={hi}",
                key.section,
                key.name,
                key.valid
            );
            if !ARRAYS.contains(&key.section) {
                let section = key
                    .section
                    .split('.')
                    .try_fold(&tree, |v, p| v.get(p))
                    .unwrap();
                assert!(
                    section.get(key.name).is_some_and(|v| v.is_u64()),
                    "{}.{} is not a numeric key of Config",
                    key.section,
                    key.name
                );
            }
        }
        // Bounds that are constants elsewhere.
        let bound = |s: &str, n: &str| keys().find(|k| k.section == s && k.name == n);
        assert_eq!(
            bound("server", "shards").unwrap().bounds,
            Some(Bounds::Range(0, crate::limits::SHARDS_MAX as u64))
        );
        assert_eq!(
            bound("limits", "http_headers_max").unwrap().bounds,
            Some(Bounds::Range(8, crate::ws::http::HEADERS_CAP as u64))
        );
    }
}
