//! `tickcast client URL`: an interactive protocol v1 client for trying things against a running
//! server. Commands are read one per line (at a prompt with line editing on a terminal, from
//! stdin otherwise); every server message is printed as one readable line, or verbatim with
//! `--json`. A dropped connection is reopened with a bounded, jittered backoff, and every pattern
//! is subscribed again with `since` = the last position seen per exact topic
//! (docs/PROTOCOL.md "Recovery").
//!
//! One thread owns the connection (blocking `tungstenite` with a short read timeout: the
//! client needs no runtime); another reads the user's lines and hands them over a channel.

mod command;
mod conn;
mod render;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use indexmap::IndexMap;
use serde_json::Value;
use tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

use command::{Command, Since};
use conn::{Target, Ws};
use render::Style;

/// What `tickcast client` was asked to do.
pub struct Options {
    pub url: String,
    pub token: Option<String>,
    /// Print server messages verbatim (one JSON text per line); the client's own notes go to
    /// stderr.
    pub json: bool,
    /// Exit (closing normally) after this many data frames.
    pub exit_after: Option<u64>,
    /// A PEM CA certificate to trust for `wss://`, besides the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Exit when the connection drops instead of reconnecting.
    pub no_reconnect: bool,
}

/// The "not known yet" epoch (docs/PROTOCOL.md: compared by `seq` alone).
const NO_EPOCH: &str = "0000000000000000";
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long `quit` waits for the server's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Lines typed while disconnected, sent after reconnecting; beyond this they are refused.
const QUEUED_MAX: usize = 100;

enum Input {
    Line(String),
    /// End of input (Ctrl-D at the prompt, or the end of piped stdin).
    Eof,
    /// Ctrl-C at the prompt.
    Interrupt,
}

/// Runs the client; returns the exit status.
pub fn run(opts: Options) -> i32 {
    let target = match Target::parse(&opts.url, opts.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tickcast client: {e}");
            return 2;
        }
    };
    let stdin_tty = std::io::stdin().is_terminal();
    let stdout_tty = std::io::stdout().is_terminal();
    let style = Style {
        colour: stdout_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    // Ctrl-C when there is no prompt (piped stdin): a normal close, then exit; a second one
    // exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone());
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let (tx, rx) = mpsc::channel();
    let interactive = stdin_tty && stdout_tty;
    let saved_termios = interactive
        .then(|| rustix::termios::tcgetattr(std::io::stdin()).ok())
        .flatten();
    let out = if interactive {
        match prompt(tx.clone()) {
            Ok(printer) => Output::Prompt(printer),
            Err(e) => {
                eprintln!("tickcast client: no line editing ({e}); reading plain lines");
                read_lines(tx);
                Output::Plain
            }
        }
    } else {
        read_lines(tx);
        Output::Plain
    };
    let mut session = Session {
        out,
        style,
        json: opts.json,
        exit_after: opts.exit_after,
        no_reconnect: opts.no_reconnect,
        stdin_tty,
        rx,
        stop,
        token: opts.token,
        next_id: 0,
        pending: HashMap::new(),
        patterns: IndexMap::new(),
        positions: HashMap::new(),
        queued: VecDeque::new(),
        frames: 0,
        quitting: false,
        input_done: false,
        recovered: None,
    };
    if stdin_tty && !interactive {
        session.note("(stdout is not a terminal: no prompt; type commands, one per line)");
    } else if interactive {
        session.note(&format!(
            "connecting to {}; type help for the commands",
            target.url
        ));
    }
    let code = session.run(&target);
    drop(session);
    if let Some(t) = saved_termios {
        // The prompt thread may still be in raw mode, waiting for a key.
        let _ =
            rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &t);
        println!();
    }
    code
}

/// The line-editing prompt, on its own thread; returns the printer that writes above it.
fn prompt(
    tx: mpsc::Sender<Input>,
) -> rustyline::Result<Box<dyn rustyline::ExternalPrinter + Send>> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let printer = editor.create_external_printer()?;
    std::thread::Builder::new()
        .name("client-prompt".into())
        .spawn(move || {
            loop {
                let input = match editor.readline("> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        Input::Line(line)
                    }
                    Err(rustyline::error::ReadlineError::Interrupted) => Input::Interrupt,
                    Err(_) => Input::Eof,
                };
                // After `quit`, Ctrl-C or Ctrl-D the prompt is not shown again.
                let last = match &input {
                    Input::Line(l) => matches!(command::parse(l), Ok(Command::Quit)),
                    _ => true,
                };
                if tx.send(input).is_err() || last {
                    return;
                }
            }
        })
        .expect("spawn the prompt thread");
    Ok(Box::new(printer))
}

/// Plain lines from stdin (a pipe, a file, or a terminal when stdout is not one).
fn read_lines(tx: mpsc::Sender<Input>) {
    std::thread::Builder::new()
        .name("client-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if tx.send(Input::Line(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::Eof);
        })
        .expect("spawn the stdin thread");
}

enum Output {
    Prompt(Box<dyn rustyline::ExternalPrinter + Send>),
    Plain,
}

/// A request waiting for its reply, by id.
enum Pending {
    /// With the filter's JSON text the request carried.
    Subscribe(Option<String>),
    Unsubscribe(Vec<String>),
    /// The reconnect's subscribe; how many topics it asked to recover.
    Resubscribe(usize),
    Publish(String),
    Ping(Instant),
    Auth(String),
}

/// How a connection ended.
enum End {
    /// Closed on purpose (`quit`, Ctrl-C, `--exit-after`): exit with this status.
    Exit(i32),
    /// Dropped: reconnect (unless `--no-reconnect`).
    Lost(String),
}

struct Session {
    out: Output,
    style: Style,
    json: bool,
    exit_after: Option<u64>,
    no_reconnect: bool,
    stdin_tty: bool,
    rx: mpsc::Receiver<Input>,
    stop: Arc<AtomicBool>,
    /// Presented at every (re)connect: `--token`, then the last token an `auth` ack accepted.
    token: Option<String>,
    next_id: u64,
    pending: HashMap<String, Pending>,
    /// Every pattern subscribed (acked) and not unsubscribed: what a reconnect subscribes again.
    /// With each its filter's JSON text (a raw subscribe's `filter`), so a reconnect asks for
    /// the same messages, not every message of the pattern.
    patterns: IndexMap<String, Option<String>>,
    /// Per exact topic, the last (seq, epoch) seen: what a reconnect asks to recover from.
    positions: HashMap<String, (u64, String)>,
    /// Lines typed while disconnected.
    queued: VecDeque<String>,
    /// Data frames printed.
    frames: u64,
    quitting: bool,
    /// stdin ended (piped input): keep printing until `--exit-after`, Ctrl-C or the end.
    input_done: bool,
    /// Set by the reconnect's ack: how many topics it recovered (printed after the ack).
    recovered: Option<usize>,
}

impl Session {
    fn print(&mut self, line: &str) {
        match &mut self.out {
            Output::Prompt(p) => {
                let _ = p.print(format!("{line}\n"));
            }
            Output::Plain => {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{line}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    // The reader went away (`| head`): nothing more to do.
                    std::process::exit(0);
                }
            }
        }
    }

    /// The client's own messages: on stdout as dim lines, or on stderr with `--json` (stdout
    /// then holds only what the server sent).
    fn note(&mut self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            let line = self.style.dim(text).into_owned();
            self.print(&line);
        }
    }

    fn error(&mut self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            let line = format!("{} {text}", self.style.bad("!"));
            self.print(&line);
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn run(&mut self, target: &Target) -> i32 {
        let mut failures = 0u32;
        let mut connected_once = false;
        loop {
            match target.connect(self.token.as_deref()) {
                Ok(mut ws) => {
                    failures = 0;
                    if connected_once {
                        self.resubscribe(&mut ws);
                    }
                    connected_once = true;
                    while let Some(line) = self.queued.pop_front() {
                        self.handle_line(&mut ws, &line);
                    }
                    match self.pump(&mut ws) {
                        End::Exit(code) => return code,
                        End::Lost(why) => {
                            self.note(&format!("disconnected: {why}"));
                            if self.no_reconnect {
                                return 1;
                            }
                        }
                    }
                }
                Err(e) if !connected_once || e.fatal => {
                    self.error(&format!("cannot connect to {}: {}", target.url, e.message));
                    return 1;
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff(failures + 1);
                    self.note(&format!(
                        "reconnect failed: {}; next try in {:.1}s",
                        e.message,
                        delay.as_secs_f64()
                    ));
                    if let Some(code) = self.wait(delay) {
                        return code;
                    }
                    continue;
                }
            }
            let delay = backoff(1);
            self.note(&format!("reconnecting in {:.1}s", delay.as_secs_f64()));
            if let Some(code) = self.wait(delay) {
                return code;
            }
        }
    }

    /// Sleeps `delay` while still taking the user's lines (queued) and `quit`.
    fn wait(&mut self, delay: Duration) -> Option<i32> {
        let until = Instant::now() + delay;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Some(0);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            match self.rx.recv_timeout((until - now).min(conn::POLL)) {
                Ok(Input::Line(line)) => match command::parse(&line) {
                    Ok(Command::Quit) => return Some(0),
                    Ok(Command::Help) => self.note(command::HELP),
                    Ok(Command::Nothing) => {}
                    Err(e) => self.error(&e),
                    Ok(_) if self.queued.len() >= QUEUED_MAX => {
                        self.error("not connected, and too many lines queued: not sent")
                    }
                    Ok(_) => {
                        self.queued.push_back(line);
                        self.note("(not connected: sent once reconnected)");
                    }
                },
                Ok(Input::Interrupt) => return Some(0),
                Ok(Input::Eof) => {
                    if let Some(code) = self.input_ended() {
                        return Some(code);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(code) = self.input_ended() {
                        return Some(code);
                    }
                    std::thread::sleep((until - Instant::now().min(until)).min(conn::POLL));
                }
            }
        }
    }

    /// Ctrl-D at a terminal quits; the end of piped input does not (the frames of what it
    /// subscribed to keep coming until `--exit-after`, Ctrl-C or `quit`).
    fn input_ended(&mut self) -> Option<i32> {
        if self.stdin_tty {
            return Some(0);
        }
        self.input_done = true;
        None
    }

    /// After a reconnect: every pattern again, with `since` for every exact topic seen that a
    /// pattern covers.
    fn resubscribe(&mut self, ws: &mut Ws) {
        if self.patterns.is_empty() {
            self.note("reconnected");
            return;
        }
        // One subscribe per distinct filter: the patterns without one first, then each filter's
        // in the order first subscribed. An exact topic's `since` goes with the first group
        // whose patterns cover it, so no topic is replayed twice. The server judges a replayed
        // frame by all of the connection's subscriptions registered by then, so sending the
        // unfiltered patterns first makes a topic they cover come back in full whatever the
        // timing. (A topic covered only by patterns with different filters is replayed through
        // the first filter's subscribe: what only a later filter passes is replayed if that
        // subscribe is registered before the replay is judged.)
        let mut groups: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for (pattern, filter) in &self.patterns {
            match groups.iter_mut().find(|(f, _)| f == filter) {
                Some((_, g)) => g.push(pattern.clone()),
                None => groups.push((filter.clone(), vec![pattern.clone()])),
            }
        }
        groups.sort_by_key(|(f, _)| f.is_some());
        let mut recovered: std::collections::BTreeSet<&str> = Default::default();
        let mut requests = Vec::with_capacity(groups.len());
        for (filter, topics) in &groups {
            let since: BTreeMap<&str, Since> = self
                .positions
                .iter()
                .filter(|(t, _)| !recovered.contains(t.as_str()))
                .filter(|(t, _)| topics.iter().any(|p| crate::pubsub::topic::matches(p, t)))
                .map(|(t, (seq, epoch))| {
                    (
                        t.as_str(),
                        Since {
                            seq: *seq,
                            epoch: epoch.as_str(),
                        },
                    )
                })
                .collect();
            recovered.extend(since.keys().copied());
            self.next_id += 1;
            let id = self.next_id;
            requests.push((
                id,
                filter.clone(),
                command::subscribe(id, topics, &since, filter.as_deref()),
            ));
        }
        let n = recovered.len();
        let last = requests.len() - 1;
        for (i, (id, filter, req)) in requests.into_iter().enumerate() {
            // The last ack reports the recovery (`recovered`).
            let p = if i == last {
                Pending::Resubscribe(n)
            } else {
                Pending::Subscribe(filter)
            };
            self.pending.insert(id.to_string(), p);
            if self.send(ws, req).is_err() {
                // The read that follows reports the broken connection.
                break;
            }
        }
    }

    fn send(&mut self, ws: &mut Ws, text: String) -> Result<(), ()> {
        match ws.send(Message::text(text)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.error(&format!("send failed: {e}"));
                Err(())
            }
        }
    }

    /// Reads the server and the user's lines until the connection ends.
    fn pump(&mut self, ws: &mut Ws) -> End {
        let mut close_by: Option<Instant> = None;
        let mut server_close: Option<String> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                self.quitting = true;
            }
            while !self.quitting {
                match self.rx.try_recv() {
                    Ok(Input::Line(line)) => self.handle_line(ws, &line),
                    Ok(Input::Interrupt) => self.quitting = true,
                    Ok(Input::Eof) | Err(mpsc::TryRecvError::Disconnected) if !self.input_done => {
                        if self.input_ended().is_some() {
                            self.quitting = true;
                        }
                    }
                    Ok(Input::Eof) | Err(_) => break,
                }
            }
            if self.quitting && close_by.is_none() {
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                }));
                close_by = Some(Instant::now() + CLOSE_WAIT);
            }
            if close_by.is_some_and(|t| Instant::now() >= t) {
                return End::Exit(0);
            }
            match ws.read() {
                Ok(Message::Text(text)) => self.show(text.as_str()),
                Ok(Message::Close(frame)) => {
                    if close_by.is_some() {
                        continue;
                    }
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    server_close = Some(format!("server closed the connection: {code} {reason}"));
                    // Reconnecting cannot help: a refused token, a permission, or a server
                    // that ended the session normally.
                    if matches!(code, 1000 | 1008 | 4001 | 4003) {
                        let why = server_close.take().unwrap_or_default();
                        self.error(&why);
                        let _ = ws.flush();
                        return End::Exit(if code == 1000 { 0 } else { 1 });
                    }
                }
                Ok(Message::Binary(b)) => {
                    self.note(&format!("(binary message, {} bytes)", b.len()))
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    let _ = ws.flush();
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
                    if close_by.is_some() =>
                {
                    return End::Exit(0);
                }
                Err(tungstenite::Error::ConnectionClosed) => {
                    return End::Lost(server_close.unwrap_or_else(|| "closed".into()));
                }
                Err(e) => {
                    if close_by.is_some() {
                        return End::Exit(0);
                    }
                    return End::Lost(server_close.unwrap_or_else(|| e.to_string()));
                }
            }
        }
    }

    fn handle_line(&mut self, ws: &mut Ws, line: &str) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => return self.error(&e),
        };
        let req = match cmd {
            Command::Nothing => return,
            Command::Help => return self.note(command::HELP),
            Command::Quit => {
                self.quitting = true;
                return;
            }
            Command::Subscribe(topics, filter) => {
                let id = self.id();
                let req = command::subscribe(id, &topics, &BTreeMap::new(), filter.as_deref());
                self.pending
                    .insert(id.to_string(), Pending::Subscribe(filter));
                req
            }
            Command::Unsubscribe(topics) => {
                let id = self.id();
                let req = command::unsubscribe(id, &topics);
                self.pending
                    .insert(id.to_string(), Pending::Unsubscribe(topics));
                req
            }
            Command::Publish(topic, data) => {
                let id = self.id();
                let req = command::publish(id, &topic, &data);
                self.pending.insert(id.to_string(), Pending::Publish(topic));
                req
            }
            Command::Ping => {
                let id = self.id();
                self.pending
                    .insert(id.to_string(), Pending::Ping(Instant::now()));
                command::ping(id)
            }
            Command::Auth(token) => {
                let id = self.id();
                let req = command::auth(id, &token);
                self.pending.insert(id.to_string(), Pending::Auth(token));
                req
            }
            Command::History(topic, seq) => {
                let id = self.id();
                let epoch = self
                    .positions
                    .get(&topic)
                    .map_or(NO_EPOCH.to_string(), |(_, e)| e.clone());
                let mut since = BTreeMap::new();
                since.insert(topic.as_str(), Since { seq, epoch: &epoch });
                let req = command::subscribe(id, std::slice::from_ref(&topic), &since, None);
                self.pending
                    .insert(id.to_string(), Pending::Subscribe(None));
                req
            }
            Command::Raw(text) => {
                // Tracked like a typed command when it has an id, so its reply is understood
                // (a raw subscribe is then resubscribed after a reconnect).
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if let Some(id) = v.get("id").filter(|id| !id.is_null()) {
                        let p = match v["op"].as_str() {
                            Some("subscribe") => Some(Pending::Subscribe(
                                v.get("filter")
                                    .filter(|f| !f.is_null())
                                    .map(Value::to_string),
                            )),
                            Some("unsubscribe") => {
                                Some(Pending::Unsubscribe(strings(&v["topics"])))
                            }
                            Some("publish") => {
                                v["topic"].as_str().map(|t| Pending::Publish(t.into()))
                            }
                            Some("ping") => Some(Pending::Ping(Instant::now())),
                            Some("auth") => v["token"].as_str().map(|t| Pending::Auth(t.into())),
                            _ => None,
                        };
                        if let Some(p) = p {
                            self.pending.insert(id.to_string(), p);
                        }
                    }
                }
                text
            }
        };
        let _ = self.send(ws, req);
    }

    /// One server message: bookkeeping (positions, patterns), then one line.
    fn show(&mut self, text: &str) {
        match render::classify(text) {
            render::Message::Data(f) => {
                if self.exit_after.is_some_and(|n| self.frames >= n) {
                    // Exiting: the frames that arrive before the close are not shown.
                    return;
                }
                self.frames += 1;
                match self.positions.get_mut(f.topic.as_ref()) {
                    Some(p) => p.0 = f.seq,
                    None => {
                        self.positions
                            .insert(f.topic.to_string(), (f.seq, NO_EPOCH.into()));
                    }
                }
                let line = if self.json {
                    text.to_string()
                } else {
                    render::data(self.style, &f)
                };
                self.print(&line);
                if self.exit_after.is_some_and(|n| self.frames >= n) {
                    self.quitting = true;
                }
            }
            render::Message::Op(v) => {
                let rtt = self.reply(&v);
                let line = if self.json {
                    text.to_string()
                } else {
                    render::op(self.style, &v, rtt)
                };
                self.print(&line);
                if let Some(n) = self.recovered.take() {
                    self.note(&format!("reconnected; recovered {n} topics"));
                }
            }
            render::Message::Other => self.print(text),
        }
    }
}

impl Session {
    /// What a reply means for the session's state; the round trip of a timed ping.
    fn reply(&mut self, v: &Value) -> Option<Duration> {
        let op = v["op"].as_str().unwrap_or("");
        if op == "gap" {
            let (Some(topic), Some(epoch)) = (v["topic"].as_str(), v["epoch"].as_str()) else {
                return None;
            };
            if v["reason"] == "epoch" {
                // A new life of the topic: `to` is its current seq; live frames follow it.
                let to = v["to"].as_u64().unwrap_or(0);
                self.positions
                    .insert(topic.to_string(), (to, epoch.to_string()));
            } else if let Some(p) = self.positions.get_mut(topic) {
                p.1 = epoch.to_string();
            }
            return None;
        }
        if op == "ack" {
            for p in v["positions"].as_array().into_iter().flatten() {
                let (Some(topic), Some(seq), Some(epoch)) =
                    (p["topic"].as_str(), p["seq"].as_u64(), p["epoch"].as_str())
                else {
                    continue;
                };
                let known = self
                    .positions
                    .entry(topic.to_string())
                    .or_insert_with(|| (0, NO_EPOCH.into()));
                if known.1 == epoch || known.1 == NO_EPOCH {
                    // Frames may have come before the ack: keep the later position.
                    known.0 = known.0.max(seq);
                    known.1 = epoch.to_string();
                } else if epoch != NO_EPOCH {
                    *known = (seq, epoch.to_string());
                } else {
                    // The server holds nothing of the topic any more (a restart).
                    *known = (seq, NO_EPOCH.into());
                }
            }
        }
        let id = v.get("id").filter(|id| !id.is_null())?.to_string();
        if op == "error" {
            // A subscribe's errors come before its ack (if any pattern was accepted).
            if !matches!(
                self.pending.get(&id),
                Some(Pending::Subscribe(_) | Pending::Resubscribe(_))
            ) {
                self.pending.remove(&id);
            }
            return None;
        }
        match (op, self.pending.remove(&id)?) {
            ("ack", Pending::Subscribe(filter)) => {
                // A subscribe replaces an acked pattern's filter (or takes it away).
                for t in strings(&v["topics"]) {
                    self.patterns.insert(t, filter.clone());
                }
            }
            ("ack", Pending::Resubscribe(n)) => {
                // The last group of a reconnect: its patterns and filter are already kept.
                self.recovered = Some(n);
            }
            ("ack", Pending::Unsubscribe(asked)) => {
                let acked = strings(&v["topics"]);
                for t in if acked.is_empty() { asked } else { acked } {
                    self.patterns.shift_remove(&t);
                }
            }
            ("ack", Pending::Publish(topic)) => {
                if let (Some(p), Some(epoch)) =
                    (self.positions.get_mut(&topic), v["epoch"].as_str())
                {
                    if p.1 == NO_EPOCH {
                        p.1 = epoch.to_string();
                    }
                }
            }
            ("ack", Pending::Auth(token)) => self.token = Some(token),
            ("pong", Pending::Ping(sent)) => return Some(sent.elapsed()),
            _ => {}
        }
        None
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Full-jitter exponential backoff: 200 ms doubling to 5 s, each delay drawn in its upper half.
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(BACKOFF_MAX);
    ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
}
