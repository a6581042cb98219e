//! The Kubernetes manifests of tuning/k8s/:
//!
//! - every manifest validates against the Kubernetes API's own schemas with PyPI
//!   `kubernetes-validate` (pinned in tests/run.sh, which passes its path as
//!   `TICKCAST_TEST_KUBERNETES_VALIDATE`), strictly: an unknown field is an error, and so is a
//!   kind it has no schema for (which the tool itself only warns about). A broken copy of the
//!   StatefulSet is refused, so the check cannot pass by checking nothing;
//! - kustomization.yaml applies every manifest of the directory;
//! - the tickcast configuration in the ConfigMap is accepted by the real binary
//!   (`tickcast check-config`) with the environment the StatefulSet gives the container
//!   (Secret values replaced by test ones), and a real `tickcast serve` with it connects to a
//!   real `nats-server` run with the NATS ConfigMap's configuration, as the pods would: the
//!   password from the Secret, the node user's permissions, JetStream;
//! - what the manifests promise each other holds: the mounts the configuration names, the
//!   termination grace period and the liveness probe against the drain.
//!
//! YAML is read with the PyYAML that `kubernetes-validate` installs into the suite's venv
//! (`TICKCAST_TEST_PYTHON`), turned into JSON.

mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use common::*;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/k8s");

/// The Kubernetes versions the manifests are checked against: the newest the pinned validator
/// knows, and 1.32, the oldest whose kubelet allows every sysctl statefulset.yaml sets.
const VERSIONS: &[&str] = &["1.37.0", "1.32.0"];

fn suite_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the suite with `bash tests/run.sh`, which installs \
             kubernetes-validate into target/venv and sets it (alone: \
             TICKCAST_TEST_PYTHON=target/venv/bin/python \
             TICKCAST_TEST_KUBERNETES_VALIDATE=target/venv/bin/kubernetes-validate \
             cargo test --test k8s)"
        )
    })
}

/// The YAML files of tuning/k8s/ that are Kubernetes objects (not kustomization.yaml).
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().unwrap() != "kustomization.yaml")
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

/// `kubernetes-validate --strict` on `file` for `version`: `Err` with its output unless it
/// passed every object in the file (exit 0, no warning such as an unknown kind).
fn validate(file: &Path, version: &str) -> Result<(), String> {
    let out = Command::new(suite_var("TICKCAST_TEST_KUBERNETES_VALIDATE"))
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = text.lines().filter(|l| l.contains(" passed ")).count();
    let objects = yaml_docs(file).len();
    if out.status.success() && !text.contains("WARN") && passed == objects {
        Ok(())
    } else {
        Err(format!(
            "{} ({version}): {} of {objects} objects passed\n{text}",
            file.display(),
            passed
        ))
    }
}

/// The documents of a YAML file, as JSON (PyYAML in the suite's venv).
fn yaml_docs(file: &Path) -> Vec<Value> {
    let out = Command::new(suite_var("TICKCAST_TEST_PYTHON"))
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(file)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("{other}"),
    }
}

/// The object of `kind` named `name` in the manifests.
fn object(kind: &str, name: &str) -> Value {
    manifests()
        .iter()
        .flat_map(|f| yaml_docs(f))
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in tuning/k8s"))
}

#[test]
fn every_manifest_is_valid_against_the_kubernetes_schemas() {
    let mut failures = Vec::new();
    for file in manifests() {
        for version in VERSIONS {
            if let Err(e) = validate(&file, version) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The validator refuses what the API server would refuse: a wrong type, a misspelt field, an
/// unknown kind (each in a copy of statefulset.yaml).
#[test]
fn a_broken_manifest_is_refused() {
    let good = std::fs::read_to_string(format!("{DIR}/statefulset.yaml")).unwrap();
    let dir = std::env::temp_dir().join(format!("tickcast-k8s-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (from, to)) in [
        ("replicas: 3", "replicas: \"three\""),
        (
            "terminationGracePeriodSeconds:",
            "terminationGracePeriodSecond:",
        ),
        ("kind: StatefulSet", "kind: StatefullSet"),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(good.contains(from), "{from}");
        let file = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&file, good.replacen(from, to, 1)).unwrap();
        assert!(
            validate(&file, VERSIONS[0]).is_err(),
            "{to:?} in statefulset.yaml passed validation"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kustomization_applies_every_manifest() {
    let kustomization = yaml_docs(Path::new(&format!("{DIR}/kustomization.yaml")));
    let listed: BTreeSet<String> = kustomization[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let files: BTreeSet<String> = manifests()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, files);
}

/// The tickcast container of the StatefulSet.
fn tickcast_container() -> Value {
    let sts = object("StatefulSet", "tickcast");
    sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tickcast")
        .expect("container tickcast")
        .clone()
}

/// The configuration file of the ConfigMap, as the pods mount it.
fn configmap_toml() -> String {
    let cm = object("ConfigMap", "tickcast-config");
    cm["data"]["tickcast.toml"]
        .as_str()
        .expect("tickcast.toml")
        .to_string()
}

/// Test values for the Secret's keys (the Secret itself is the operator's: README).
fn secret_value(key: &str) -> String {
    match key {
        "nats-password" => "k8s-test-password".into(),
        // The key `k8s-test-key`: its SHA-256.
        "api-keys" => "[{name=\"svc-pricer\",sha256=\"9511ff3a2eb0cd74caaec7791921e888e7a8bc5b945d9b45fc37b08af6dc073f\",\
                       pubs=[\"trades.>\"],subs=[\"trades.>\"]}]"
            .into(),
        other => panic!("the StatefulSet reads Secret key {other:?}: give it a test value here"),
    }
}

/// The container's environment as the kubelet would set it in pod `tickcast-0`: field
/// references resolved, Secret keys replaced by test values, `$(VAR)` expanded.
fn container_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in tickcast_container()["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            "tickcast-0".into()
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "tickcast-secrets");
            secret_value(key)
        } else {
            panic!("env {e}: the test does not know how to resolve it")
        };
        env.push((name, value));
    }
    env
}

/// The ConfigMap's file, the StatefulSet's environment, the Secret's `jwt.secret` in a
/// credentials directory: what `tickcast` in the pod reads. Returns the file, the directory
/// and the environment (with `CREDENTIALS_DIRECTORY` pointing at the directory).
fn pod_files(tag: &str) -> (PathBuf, PathBuf, Vec<(String, String)>) {
    let dir = std::env::temp_dir().join(format!("tickcast-k8s-{tag}-{}", std::process::id()));
    let creds = dir.join("secrets");
    std::fs::create_dir_all(&creds).unwrap();
    let config = dir.join("tickcast.toml");
    std::fs::write(&config, configmap_toml()).unwrap();
    std::fs::write(creds.join("jwt.secret"), "k8s-test-".repeat(8)).unwrap();
    let mut env = container_env();
    for (k, v) in &mut env {
        if k == "CREDENTIALS_DIRECTORY" {
            *v = creds.to_string_lossy().into_owned();
        }
    }
    (config, dir, env)
}

#[test]
fn the_configmap_config_passes_check_config_with_the_pod_environment() {
    let (config, dir, env) = pod_files("check");
    let out = tickcast_cmd()
        .arg("check-config")
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run tickcast");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The paths and names the configuration and the StatefulSet give each other agree.
#[test]
fn the_manifests_agree_with_each_other() {
    let sts = object("StatefulSet", "tickcast");
    let pod = &sts["spec"]["template"]["spec"];
    let c = tickcast_container();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    // --config names the ConfigMap's key where the ConfigMap is mounted.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(config_path, format!("{}/tickcast.toml", mount_of("config")));
    assert_eq!(volume("config")["configMap"]["name"], "tickcast-config");
    // $CREDENTIALS_DIRECTORY/jwt.secret is the Secret's jwt.secret.
    let env = container_env();
    let creds = &env
        .iter()
        .find(|(k, _)| k == "CREDENTIALS_DIRECTORY")
        .unwrap()
        .1;
    assert_eq!(*creds, mount_of("secrets"));
    assert!(configmap_toml().contains("secret_file = \"$CREDENTIALS_DIRECTORY/jwt.secret\""));
    let secret = volume("secrets");
    assert_eq!(secret["secret"]["secretName"], "tickcast-secrets");
    assert!(
        secret["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == "jwt.secret" && i["path"] == "jwt.secret")
    );
    // The broker URL names the NATS Service and its client port.
    let url = &env
        .iter()
        .find(|(k, _)| k == "TICKCAST_CLUSTER__URL")
        .unwrap()
        .1;
    let nats = object("Service", "tickcast-nats");
    let port = nats["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "client")
        .unwrap()["port"]
        .clone();
    assert!(url.ends_with(&format!("@tickcast-nats:{port}")), "{url}");
    // The drain fits the grace period, and the liveness probe outlasts the closed listeners.
    let toml: toml::Value = toml::from_str(&configmap_toml()).unwrap();
    let drain_s = toml["timeouts"]["drain_s"].as_integer().unwrap();
    let grace_s = toml["timeouts"]["shutdown_grace_s"].as_integer().unwrap();
    let hook = c["lifecycle"]["preStop"]["exec"]["command"][2]
        .as_str()
        .unwrap();
    let hook_wait: i64 = hook
        .strip_prefix("sleep ")
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("preStop hook {hook:?}: expected `sleep N; kill -USR2 1; …`"));
    assert!(hook.contains("kill -USR2 1"), "{hook}");
    let termination = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        termination > hook_wait + drain_s + grace_s + 2,
        "terminationGracePeriodSeconds {termination} <= {hook_wait} + {drain_s} + {grace_s} + 2"
    );
    let live = &c["livenessProbe"];
    let tolerated =
        live["periodSeconds"].as_i64().unwrap() * live["failureThreshold"].as_i64().unwrap();
    assert!(
        tolerated > hook_wait + drain_s,
        "liveness gives up after {tolerated} s"
    );
    // As many shards as CPUs requested (0 would mean every CPU of the node).
    let shards = toml["server"]["shards"].as_integer().unwrap();
    let cpus: i64 = c["resources"]["requests"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(shards, cpus);
}

/// nats-server with the NATS ConfigMap's configuration (its store directory moved to a
/// temporary one, its ports to free loopback ones by flags) and the Secret's password, then a
/// tickcast node with the pod's configuration and environment (the broker's Service address
/// replaced by that server's): the node connects, with the user and permissions of the
/// ConfigMap, and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_pod_config_connects_to_nats_with_the_nats_config() {
    let nats_cm = object("ConfigMap", "tickcast-nats-config");
    let conf = nats_cm["data"]["nats.conf"].as_str().unwrap();
    let (config, dir, mut env) = pod_files("nats");
    let store = dir.join("jetstream");
    assert!(conf.contains("store_dir: /data"), "{conf}");
    let conf_file = dir.join("nats.conf");
    std::fs::write(
        &conf_file,
        conf.replace(
            "store_dir: /data",
            &format!("store_dir: {}", store.display()),
        ),
    )
    .unwrap();
    let nats = object("StatefulSet", "tickcast-nats");
    let password_env = nats["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["valueFrom"]["secretKeyRef"]["key"] == "nats-password")
        .expect("the NATS password from the Secret")["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut broker = Command::new("nats-server")
        .arg("-c")
        .arg(&conf_file)
        .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1"])
        .env(&password_env, secret_value("nats-password"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nats-server (tests/run.sh installs it)");
    let stderr = BufReader::new(broker.stderr.take().unwrap());
    let port = tokio::task::spawn_blocking(move || {
        let mut lines = stderr.lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                let port = addr.rsplit(':').next().unwrap().trim().to_string();
                // Keep reading (and discarding), so nats-server never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return port;
            }
        }
        panic!("nats-server exited before listening")
    });
    let port = tokio::time::timeout(DEADLINE, port)
        .await
        .expect("nats-server did not start listening")
        .unwrap();
    for (k, v) in &mut env {
        if k == "TICKCAST_CLUSTER__URL" {
            *v = v.replace("tickcast-nats:4222", &format!("127.0.0.1:{port}"));
        }
    }
    let config_arg = config.to_string_lossy().into_owned();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = proc::Proc::start_bare(&env_refs, &["--config", &config_arg]);
    let server = node.server();
    let start = Instant::now();
    let health = loop {
        let (status, body) = server.http_with("GET", "/ready", None, "").await;
        if status == 200 {
            break server.http_with("GET", "/health", None, "").await.1;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "/ready stayed {status} {body}; log: {}",
            node.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["node"], "tickcast-0", "{health}");
    assert_eq!(health["broker"], "up", "{health}");
    drop(node);
    let _ = broker.kill();
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
