//! Replays the fuzz corpus and the crash regressions (tests/fuzz/corpus/<target>/ and
//! tests/fuzz/regressions/<target>/) through the same checks as the fuzz targets, so every
//! `cargo test` runs them without a fuzzer. The checks live in tests/fuzz/checks.rs.

#[path = "fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// Runs `check` on every file under `tests/fuzz/{corpus,regressions}/<target>/`; returns how
/// many it ran. A failing file is named in the panic message.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus_files(target);
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {} fails its check", path.display());
        }
    }
    files.len()
}

/// The files under `tests/fuzz/{corpus,regressions}/<target>/`, sorted.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read_dir").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn http_corpus() {
    assert!(replay("http", checks::http) > 0, "no http corpus");
}

#[test]
fn frame_corpus() {
    assert!(replay("frame", checks::frame) > 0, "no frame corpus");
}

#[test]
fn protocol_corpus() {
    assert!(
        replay("protocol", checks::protocol) > 0,
        "no protocol corpus"
    );
}

#[test]
fn filter_corpus() {
    assert!(replay("filter", checks::filter) > 0, "no filter corpus");
}

#[test]
fn envelope_corpus() {
    assert!(
        replay("envelope", checks::envelope) > 0,
        "no envelope corpus"
    );
}

#[test]
fn proxy_corpus() {
    assert!(replay("proxy", checks::proxy) > 0, "no proxy corpus");
}

#[test]
fn deflate_corpus() {
    assert!(replay("deflate", checks::deflate) > 0, "no deflate corpus");
}

/// The deflate corpus reaches every way a compressed message can end (tests/fuzz/make_seeds.py
/// writes a seed for each; `cargo fuzz cmin` keeps one input per code path).
#[test]
fn deflate_corpus_reaches_every_outcome() {
    assert_reaches(
        "deflate",
        checks::deflate_outcomes,
        &[
            "inflated",
            "message too large",
            "message compressed too well",
            "invalid compressed data",
            "invalid UTF-8",
            "reserved bits set",
            "RSV1 on a continuation frame",
            "RSV1 on a control frame",
        ],
    );
}

/// Some input of `target`'s corpus ends with each of `want` (as `outcomes` tells).
fn assert_reaches<O: Into<String>>(target: &str, outcomes: fn(&[u8]) -> Vec<O>, want: &[&str]) {
    let mut seen = std::collections::BTreeSet::new();
    for path in corpus_files(target) {
        let data = std::fs::read(path).unwrap();
        seen.extend(outcomes(&data).into_iter().map(Into::into));
    }
    for want in want {
        assert!(
            seen.contains(*want),
            "no {target} corpus input ends with {want:?}: {seen:?}"
        );
    }
}

#[path = "fuzz/tls_checks.rs"]
mod tls_checks;

#[test]
fn tls_corpus() {
    assert!(replay("tls", tls_checks::tls) > 0, "no tls corpus");
}

/// The tls corpus reaches every way the record layer's reading can end (tests/fuzz/make_seeds.py
/// writes a seed for each).
#[test]
fn tls_corpus_reaches_every_outcome() {
    assert_reaches(
        "tls",
        tls_checks::tls_outcomes,
        &[
            "partial",
            "closed",
            "key update answered",
            "sent BadRecordMac",
            "sent RecordOverflow",
            "sent UnexpectedMessage",
            "sent DecodeError",
            "sent IllegalParameter",
            "AlertReceived(HandshakeFailure)",
        ],
    );
}
