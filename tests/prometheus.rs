//! The Prometheus alerting rules shipped in tuning/prometheus/: `promtool check rules` accepts
//! them, `promtool test rules` proves each alert fires on the series it is for (and not on
//! healthy ones), and every tickcast metric they name exists: in a running server's `/metrics`,
//! or, for cluster-only metrics, in docs/METRICS.md's cluster table. tests/run.sh installs
//! promtool (Debian package `prometheus`) and passes it as `TICKCAST_TEST_PROMTOOL`.

mod common;

use std::{collections::BTreeSet, process::Command};

use common::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/prometheus");

fn promtool() -> String {
    std::env::var("TICKCAST_TEST_PROMTOOL").unwrap_or_else(|_| {
        panic!(
            "TICKCAST_TEST_PROMTOOL is not set: run the suite with `bash tests/run.sh`, which \
             installs promtool (Debian package prometheus) and sets it (alone: \
             TICKCAST_TEST_PROMTOOL=$(command -v promtool) cargo test --test prometheus)"
        )
    })
}

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(DIR)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    run_promtool(&["check", "rules", "alerts.yml"]);
    run_promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The `tickcast_*` names in `text`, without the suffixes PromQL adds to histograms.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tickcast_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_name_exists() {
    let rules = std::fs::read_to_string(format!("{DIR}/alerts.yml")).unwrap();
    let named = metric_names(&rules);
    assert!(named.len() >= 5, "{named:?}");
    let server = Server::start(Driver::Epoll, &[], &[]);
    let (status, exposed) = server.http("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let exposed = metric_names(&exposed);
    let docs = include_str!("../docs/METRICS.md");
    let cluster_docs = &docs[docs.find("## Cluster mode").expect("cluster section")..];
    for name in &named {
        let in_cluster_docs =
            name.starts_with("tickcast_cluster_") && cluster_docs.contains(&format!("`{name}`"));
        assert!(
            exposed.contains(name) || in_cluster_docs,
            "{name} (tuning/prometheus/alerts.yml) is not a tickcast metric"
        );
    }
}
