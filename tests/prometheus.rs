//! The Prometheus alerting rules (tuning/prometheus/) and the Grafana dashboard
//! (tuning/grafana/tickcast.json): `promtool check rules` accepts
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

/// Asserts every name in `named` (from `source`) is a tickcast metric: in a running server's
/// `/metrics`, or a cluster-only one in docs/METRICS.md's cluster table.
async fn assert_metrics_exist(source: &str, named: &BTreeSet<String>) {
    assert!(named.len() >= 5, "{source}: {named:?}");
    let server = Server::start(Driver::Epoll, &[], &[]);
    let (status, exposed) = server.http("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let exposed = metric_names(&exposed);
    let docs = include_str!("../docs/METRICS.md");
    let cluster_docs = &docs[docs.find("## Cluster mode").expect("cluster section")..];
    for name in named {
        let in_cluster_docs =
            name.starts_with("tickcast_cluster_") && cluster_docs.contains(&format!("`{name}`"));
        assert!(
            exposed.contains(name) || in_cluster_docs,
            "{name} ({source}) is not a tickcast metric"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_name_exists() {
    let rules = std::fs::read_to_string(format!("{DIR}/alerts.yml")).unwrap();
    assert_metrics_exist("tuning/prometheus/alerts.yml", &metric_names(&rules)).await;
}

/// The Grafana dashboard (tuning/grafana/tickcast.json) is valid JSON with a Prometheus
/// datasource variable, and every query it runs names metrics that exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/grafana/tickcast.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut queries = String::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("every panel queries");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            queries.push_str(t["expr"].as_str().expect("a PromQL expr"));
            queries.push('\n');
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            queries.push_str(q);
        }
    }
    assert!(
        dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus")
    );
    assert_metrics_exist("tuning/grafana/tickcast.json", &metric_names(&queries)).await;
}
