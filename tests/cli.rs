//! The `tickcast` command line: configuration layering, validation, startup refusals.

mod common;

use std::process::Command;

fn tickcast(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = common::tickcast_cmd();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tickcast")
}

#[test]
fn shipped_default_toml_is_exactly_the_built_in_defaults() {
    let built_in = tickcast(&["config"], &[]);
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");
    let shipped = tickcast(&["config", "--config", file], &[]);
    assert!(built_in.status.success() && shipped.status.success());
    assert_eq!(
        String::from_utf8_lossy(&shipped.stdout),
        String::from_utf8_lossy(&built_in.stdout)
    );
    // The file spells out every key (omitting one would also compare equal above).
    let text = std::fs::read_to_string(file).unwrap();
    let shipped: toml::Table = text.parse().unwrap();
    let built_in: toml::Table = String::from_utf8_lossy(&built_in.stdout).parse().unwrap();
    for (section, table) in &built_in {
        let Some(table) = table.as_table() else {
            assert!(
                shipped.contains_key(section),
                "config/default.toml lacks {section}"
            );
            continue;
        };
        for key in table.keys() {
            assert!(
                shipped.get(section).and_then(|s| s.get(key)).is_some(),
                "config/default.toml lacks {section}.{key}"
            );
        }
    }
    // And what `tickcast config` prints is the values themselves (the file is read above, so
    // a value shown altered in both outputs alike, e.g. by the URL redaction, differs here).
    assert_eq!(
        shipped, built_in,
        "config/default.toml against `tickcast config`"
    );
}

#[test]
fn hash_key_prints_the_sha256_of_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let out = tickcast(&["hash-key", "--generate"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("key:    ")
        .unwrap();
    let hash = text
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("sha256: ")
        .unwrap();
    assert_eq!(hash, tickcast::auth::hash_api_key(key));
}

#[test]
fn bad_auth_configuration_is_refused_naming_the_key() {
    let out = tickcast(
        &["config"],
        &[(
            "TICKCAST_AUTH__JWT_KEYS",
            "[{algorithm=\"RS256\",public_key_file=\"/nonexistent.pem\"}]",
        )],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.jwt_keys[0].public_key_file"), "{err}");
}

/// A `$CREDENTIALS_DIRECTORY/` file setting outside systemd (the variable unset) is refused
/// with what to do, not read from a path named `$CREDENTIALS_DIRECTORY`.
#[test]
fn a_credentials_path_needs_the_credentials_directory() {
    let mut cmd = common::tickcast_cmd();
    cmd.arg("config").env_remove("CREDENTIALS_DIRECTORY").env(
        "TICKCAST_AUTH__JWT_KEYS",
        r#"[{algorithm="HS256",secret_file="$CREDENTIALS_DIRECTORY/jwt.secret"}]"#,
    );
    let out = cmd.output().expect("run tickcast");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.jwt_keys[0].secret_file") && err.contains("LoadCredential="),
        "{err}"
    );
}

#[test]
fn environment_and_flags_override_the_file() {
    let out = tickcast(
        &["config", "--shards", "3"],
        &[
            ("TICKCAST_SERVER__LISTEN", "0.0.0.0:9999"),
            ("TICKCAST_LIMITS__MESSAGE_BYTES_MAX", "40000"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = \"0.0.0.0:9999\""), "{text}");
    assert!(text.contains("shards = 3"), "{text}");
    assert!(text.contains("message_bytes_max = 40000"), "{text}");
}

#[test]
fn invalid_configuration_is_refused_naming_the_key() {
    let out = tickcast(&["serve"], &[("TICKCAST_TIMEOUTS__IDLE_S", "5")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeouts.idle_s"), "{err}");
    let out = tickcast(&["serve"], &[("TICKCAST_LIMITS__NO_SUCH_KEY", "1")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let out = tickcast(&["serve", "--config", "/nonexistent/tickcast.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = tickcast(&["serve"], &[("TICKCAST_LOG__LEVEL", "tickcast=[")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.level"), "{err}");
}

/// Starts a server with `env`, stderr piped (not a terminal, as under systemd), until it has
/// printed its address; kills it and returns what it logged.
fn startup_log(env: &[(&str, &str)]) -> String {
    use std::io::{BufRead, Read};
    let mut cmd = common::tickcast_cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start tickcast");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // The address line comes after the startup log lines (or never: then EOF ends the loop).
    while out.read_line(&mut line).expect("read stdout") > 0 && !line.contains("listening on") {
        line.clear();
    }
    assert!(line.contains("listening on"), "tickcast did not start");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let text = startup_log(&[]);
    assert!(
        !text.contains('\x1b'),
        "no ANSI escapes off a terminal: {text:?}"
    );
    let limits = text
        .lines()
        .find(|l| l.contains("limits in force"))
        .unwrap_or_else(|| panic!("a line with the limits: {text}"));
    assert!(limits.contains("connections_max="), "{limits}");
    assert!(limits.contains("write_queue_bytes_max=1048576"), "{limits}");

    let json = startup_log(&[("TICKCAST_LOG__FORMAT", "json")]);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let limits = events
        .iter()
        .find(|e| e["fields"]["message"] == "limits in force")
        .unwrap_or_else(|| panic!("a limits event: {json}"));
    assert_eq!(limits["level"], "INFO");
    assert_eq!(limits["fields"]["write_queue_bytes_max"], 1048576);
    assert!(limits["fields"]["connections_max"].as_u64().unwrap() > 0);
}

#[test]
fn a_second_server_on_a_busy_port_refuses_to_start() {
    let first = common::Server::start(common::Driver::Epoll, &[], &[]);
    let addr = first.addr.to_string();
    let out = tickcast(&["serve", "--listen", &addr], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
}

/// The shipped presets pass `check-config` as a new user would run it; the production one with
/// its secret in a credentials directory, as systemd's `LoadCredential=` provides it, and is
/// refused without one, naming the key.
#[test]
fn the_presets_pass_check_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dev = format!("{root}/config/development.toml");
    let out = tickcast(&["check-config", &dev], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let prod = format!("{root}/config/production.toml");
    let creds = std::env::temp_dir().join(format!("tickcast-preset-creds-{}", std::process::id()));
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("jwt.secret"),
        "0123456789abcdef".repeat(4) + "\n",
    )
    .unwrap();
    let mut cmd = common::tickcast_cmd();
    cmd.args(["check-config", &prod])
        .env("CREDENTIALS_DIRECTORY", &creds);
    let out = cmd.output().expect("run tickcast");
    let _ = std::fs::remove_dir_all(&creds);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = common::tickcast_cmd();
    cmd.args(["check-config", &prod])
        .env_remove("CREDENTIALS_DIRECTORY");
    let out = cmd.output().expect("run tickcast");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.jwt_keys[0].secret_file"));
}

/// `check-config` refuses what `serve` would refuse, naming the key: a bad value, and a TLS
/// listener whose certificate file is missing (which `tickcast config` does not open).
#[test]
fn check_config_names_what_serve_would_refuse() {
    let dir = std::env::temp_dir().join(format!("tickcast-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[timeouts]\nidle_s = 5\n").unwrap();
    let tls = dir.join("tls.toml");
    std::fs::write(
        &tls,
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
    )
    .unwrap();
    let out_bad = tickcast(&["check-config", bad.to_str().unwrap()], &[]);
    let out_tls = tickcast(&["check-config", tls.to_str().unwrap()], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out_bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out_bad.stderr).contains("timeouts.idle_s"));
    assert_eq!(out_tls.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out_tls.stderr).contains("tls.cert_file"),
        "{}",
        String::from_utf8_lossy(&out_tls.stderr)
    );
}
