//! Data flows one way (issue 11): each layer of `src/` may use only the layers below it. The
//! wire and data layers (`ws`, `pubsub`, `protocol`, `frame`, `publish`) and the mesh (pure
//! transport) import nothing from the runtime; the cluster bridge knows nothing of the shards'
//! state (it reaches them through `cluster::ShardLink`); configuration, authentication and
//! metrics sit below both. A `crate::<module>` path anywhere in a file of a lower layer
//! (`use`, a qualified name, a doc link) fails this test.

use std::path::{Path, PathBuf};

/// (files or directories under `src/`, the crate modules they must not name)
const RULES: &[(&[&str], &[&str])] = &[
    (
        &[
            "ws",
            "pubsub",
            "protocol",
            "dialect",
            "frame.rs",
            "publish.rs",
            "mesh.rs",
            "limits.rs",
            "sys.rs",
        ],
        &[
            "shard", "cluster", "topology", "ingest", "config", "auth", "stats", "tls",
        ],
    ),
    (
        &["config", "auth", "stats.rs", "tls.rs"],
        &["shard", "cluster", "topology", "ingest", "mesh"],
    ),
    (&["cluster"], &["shard", "topology", "ingest"]),
    (&["shard"], &["topology", "ingest"]),
];

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn lower_layers_import_nothing_from_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    let mut checked = 0;
    for (places, forbidden) in RULES {
        let mut paths = Vec::new();
        for place in *places {
            let p = src.join(place);
            assert!(p.exists(), "src/{place} is gone: update the rules");
            files(&p, &mut paths);
        }
        for path in paths {
            checked += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                for module in *forbidden {
                    let needle = format!("crate::{module}");
                    let hit = line.match_indices(&needle).any(|(i, _)| {
                        // `crate::shard` but not `crate::shards_max` (a different name).
                        let next = line[i + needle.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                    if hit {
                        broken.push(format!(
                            "{}:{}: names crate::{module}: {}",
                            path.strip_prefix(&src).unwrap().display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}
