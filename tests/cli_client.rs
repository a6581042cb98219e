//! `tickcast client`: typed at a prompt in a real pseudo-terminal, driven by a script with
//! `--json`, and reconnecting with `since` across a dropped connection and a server restart.
//! Every wait is for a line of output, bounded by `DEADLINE`.

mod common;

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    process::{Child, Stdio},
    sync::mpsc,
    time::Instant,
};

use common::{ADMIN_KEY, DEADLINE, Driver, Server};
use serde_json::{Value, json};

/// Lines of a child's output as they come, from a reader thread.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(reader: impl Read + Send + 'static, clean: fn(&str) -> String) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            // A pty master reads EIO once the child is gone: the end, like EOF.
            while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                let line = String::from_utf8_lossy(&buf);
                if tx.send(clean(&line)).is_err() {
                    return;
                }
                buf.clear();
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line for which `want` holds; every line before it is kept in `seen`.
    fn wait(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line {what} within the deadline; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The `seq` of every data frame (`--json` lines) of `topic` seen so far, in order.
    fn seqs(&self, topic: &str) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["topic"] == topic && v.get("op").is_none())
            .map(|v| v["seq"].as_u64().unwrap())
            .collect()
    }
}

fn keep(line: &str) -> String {
    line.trim_end_matches(['\r', '\n']).to_string()
}

/// The text a terminal shows: ANSI escape sequences and carriage returns removed.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "the client did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A blocking HTTP request with the admin key; (status, body).
fn http(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    common::parse_http(&raw)
}

fn publish(addr: SocketAddr, topic: &str, data: Value) -> u64 {
    let (status, body) = http(
        addr,
        "/v1/publish",
        &json!({"topic": topic, "data": data}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn typed_at_a_prompt_in_a_pseudo_terminal() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    // Anonymous clients may not publish here (the test default opens everything).
    let server = Server::start(
        Driver::Epoll,
        &[("TICKCAST_AUTH__ANONYMOUS_PUBS", "[]")],
        &["--demo-feed"],
    );
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 50,
            ws_col: 250,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut child = common::tickcast_cmd()
        .args(["client", &server.ws_url()])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut master = File::from(master);
    // Raw lines: colour escapes are checked, then stripped for matching.
    let mut out = Lines::new(master.try_clone().unwrap(), keep);
    let shown = |l: &str| strip_ansi(l);

    out.wait("welcome", |l| shown(l).contains("welcome conn="));
    master.write_all(b"sub trades.BTCUSDT\r").unwrap();
    out.wait("the ack", |l| {
        shown(l).contains("ack id=1 topics=[trades.BTCUSDT]")
    });
    let frame = out.wait("a trade", |l| {
        let s = shown(l);
        s.contains("trades.BTCUSDT #") && s.contains(r#""s":"BTCUSDT""#)
    });
    assert!(
        frame.contains("\x1b[36mtrades.BTCUSDT\x1b[0m"),
        "coloured on a terminal: {frame:?}"
    );

    master.write_all(b"pub signals.x {\"k\":1}\r").unwrap();
    out.wait("the refusal", |l| {
        shown(l).contains(
            "error forbidden: no permission to publish to this topic (topic signals.x) id=2",
        )
    });
    master.write_all(b"pub signals.x {oops}\r").unwrap();
    out.wait("the local JSON error", |l| {
        shown(l).contains("data is not valid JSON")
    });
    master.write_all(b"bogus\r").unwrap();
    out.wait("the hint", |l| {
        shown(l).contains("unknown command \"bogus\"; type help")
    });
    master.write_all(b"ping\r").unwrap();
    out.wait("the pong", |l| {
        shown(l).contains("pong id=3") && shown(l).contains("rtt=")
    });
    master.write_all(b"quit\r").unwrap();
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn piped_commands_print_json_frames_in_order() {
    let server = Server::start(Driver::Epoll, &[], &["--demo-feed"]);
    let mut child = common::tickcast_cmd()
        .args(["client", &server.ws_url(), "--json", "--exit-after", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As `printf 'sub trades.BTCUSDT\n' | tickcast client URL --json`: stdin then ends, and the
    // client goes on printing until --exit-after.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sub trades.BTCUSDT\n")
        .unwrap();
    let status = wait_exit(&mut child);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "{status:?} {stdout}");
    assert!(!stdout.contains('\x1b'), "no colour off a terminal");
    let msgs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(msgs[0]["op"], "welcome", "{stdout}");
    let ack = msgs.iter().find(|m| m["op"] == "ack").expect("an ack");
    let start = ack["positions"][0]["seq"].as_u64().unwrap();
    let seqs: Vec<u64> = msgs
        .iter()
        .filter(|m| m["topic"] == "trades.BTCUSDT")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 10, "--exit-after 10: {stdout}");
    assert_eq!(
        seqs,
        (start + 1..start + 11).collect::<Vec<_>>(),
        "{stdout}"
    );
}

/// `tickcast client URL --json` with piped stdio: the child, its stdin, its stdout and stderr lines.
fn json_client(server: &Server) -> (Child, std::process::ChildStdin, Lines, Lines) {
    let mut child = common::tickcast_cmd()
        .args(["client", &server.ws_url(), "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let out = Lines::new(child.stdout.take().unwrap(), keep);
    let notes = Lines::new(child.stderr.take().unwrap(), keep);
    (child, stdin, out, notes)
}

/// Reads data frames until each (topic, seq) has been seen (two topics' frames may come in
/// either order).
fn until_seen(out: &mut Lines, want: &[(&str, u64)]) {
    while !want.iter().all(|(t, n)| out.seqs(t).contains(n)) {
        out.wait("a data frame", |l| l.starts_with("{\"topic\""));
    }
}

/// Filtered subscriptions (docs/PROTOCOL.md "Filters"), one typed as a raw JSON subscribe and
/// one with `sub PATTERN FILTER`, keep their filters across a reconnect: what is replayed and
/// what comes live after it are each filter's messages only.
#[test]
fn filtered_subscriptions_stay_filtered_after_a_reconnect() {
    let topics = [("TICKCAST_TOPICS", r#"[{pattern="t.>",history_size=100}]"#)];
    let server = Server::start(Driver::Epoll, &topics, &[]);
    let addr = server.addr;
    let (mut child, mut stdin, mut out, mut notes) = json_client(&server);
    let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap();
    // Both topics get k = 2 then k = 1; t.x keeps k = 1, t.y keeps k = 2.
    let both = || {
        for k in [2, 1] {
            publish(addr, "t.x", json!({ "k": k }));
            publish(addr, "t.y", json!({ "k": k }));
        }
    };

    let welcome = parse(&out.wait("welcome", |l| l.contains("\"welcome\"")));
    stdin
        .write_all(b"{\"op\":\"subscribe\",\"id\":100,\"topics\":[\"t.x\"],\"filter\":{\"k\":1}}\n")
        .unwrap();
    out.wait("the first ack", |l| l.contains("\"ack\""));
    stdin.write_all(b"sub t.y {\"k\": {\"eq\": 2}}\n").unwrap();
    out.wait("the second ack", |l| {
        l.contains("\"ack\"") && l.contains("t.y")
    });
    both();
    until_seen(&mut out, &[("t.x", 2), ("t.y", 1)]);

    let (status, _) = http(
        addr,
        "/v1/disconnect",
        &json!({"conn": welcome["conn"], "code": 1001}).to_string(),
    );
    assert_eq!(status, 200);
    both();
    notes.wait("the recovery", |l| l == "reconnected; recovered 2 topics");
    both();
    until_seen(&mut out, &[("t.x", 6), ("t.y", 5)]);
    let seen = out.seen.join("\n");
    assert_eq!(out.seqs("t.x"), [2, 4, 6], "t.x, k = 1 only:\n{seen}");
    assert_eq!(out.seqs("t.y"), [1, 3, 5], "t.y, k = 2 only:\n{seen}");
    stdin.write_all(b"quit\n").unwrap();
    assert!(wait_exit(&mut child).success());
}

#[test]
fn reconnects_and_recovers_with_since() {
    let topics = [("TICKCAST_TOPICS", r#"[{pattern="t.>",history_size=100}]"#)];
    let mut server = Server::start(Driver::Epoll, &topics, &[]);
    let addr = server.addr;
    publish(addr, "t.x", json!(1));
    publish(addr, "t.x", json!(2));
    let (mut child, mut stdin, mut out, mut notes) = json_client(&server);
    let parse = |l: &str| serde_json::from_str::<Value>(l).unwrap();

    let welcome = parse(&out.wait("welcome", |l| l.contains("\"welcome\"")));
    stdin.write_all(b"sub t.x\n").unwrap();
    let ack = parse(&out.wait("the ack", |l| l.contains("\"ack\"")));
    assert_eq!(ack["positions"][0]["seq"], 2, "{ack}");
    let epoch = ack["positions"][0]["epoch"].as_str().unwrap().to_string();
    let is_data = |l: &str| l.starts_with("{\"topic\":\"t.x\"");
    for n in 3..=4 {
        assert_eq!(publish(addr, "t.x", json!(n)), n);
        out.wait("a frame", is_data);
    }

    // The server drops the connection (as a drain does); what is published meanwhile is
    // replayed after the reconnect, once.
    let (status, body) = http(
        addr,
        "/v1/disconnect",
        &json!({"conn": welcome["conn"], "code": 1001}).to_string(),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"disconnected":1}"#));
    publish(addr, "t.x", json!(5));
    publish(addr, "t.x", json!(6));
    notes.wait("the recovery", |l| l == "reconnected; recovered 1 topics");
    publish(addr, "t.x", json!(7));
    out.wait("frame 7", |l| is_data(l) && l.contains("\"seq\":7,"));
    assert_eq!(
        out.seqs("t.x"),
        [3, 4, 5, 6, 7],
        "no hole, no duplicate:\n{}",
        out.seen.join("\n")
    );
    let resub = out
        .seen
        .iter()
        .map(|l| parse(l))
        .filter(|m| m["op"] == "ack")
        .nth(1)
        .expect("the resubscribe's ack");
    assert_eq!(resub["positions"][0]["epoch"], epoch.as_str(), "{resub}");

    // A restart on the same address: the history is gone, the client is told (one gap,
    // reason epoch) and follows the topic's new life.
    server.kill();
    let server = Server::start_on(&addr.to_string(), Driver::Epoll, &topics, &[]);
    notes.wait("the second recovery", |l| {
        l == "reconnected; recovered 1 topics"
    });
    let gap = parse(&out.wait("the gap", |l| l.contains("\"gap\"")));
    assert_eq!(
        (gap["topic"].as_str(), gap["reason"].as_str()),
        (Some("t.x"), Some("epoch")),
        "{gap}"
    );
    assert_eq!(publish(server.addr, "t.x", json!("new life")), 1);
    let frame = parse(&out.wait("the first frame of the new life", is_data));
    assert_eq!(frame["seq"], 1, "{frame}");

    stdin.write_all(b"quit\n").unwrap();
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
}
