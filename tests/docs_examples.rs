//! Docs that run: every code block of README.md and docs/*.md marked with an HTML comment
//! `<!-- example … -->` on the line before its fence is run, as written, against
//! `tickcast serve --demo-feed` (the README's server: its address `127.0.0.1:8080` in the
//! example is replaced by the test server's). A marked example must exit 0 and print
//! something, or, with `timeout=N` (an example that streams until stopped), print something
//! and no error within N seconds, when it is stopped.
//!
//! Marker settings, space-separated: `timeout=N`; `error` (an `sh` example that shows an HTTP
//! error answer on purpose: any other printing `{"error":…}` fails); `env=KEY=VALUE` (a server setting, e.g.
//! `env=TICKCAST_DEMO__FORMAT=binance`); `var=KEY=VALUE` (a variable of the example's own
//! environment, one its text tells the reader to set); `client=centrifugo|binance` (the pinned SDKs of
//! tests/clients/<client>/ instead of the Python `websockets` / Node `ws` of the suite). Blocks
//! are `sh` (bash, with the built `tickcast` on PATH), `python` and `js` (Node, CommonJS).
//! tests/run.sh passes where the pinned clients are (`TICKCAST_TEST_*`).
//!
//! Transcripts (`marked_transcripts_print_what_they_show`): an indented block after a
//! `<!-- transcript -->` line, made of `$ command` lines each followed by what it prints, must
//! print exactly that (commands that need no server: configuration checks, errors).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

#[derive(Debug)]
struct Example {
    /// `file:line` of the fence.
    at: String,
    lang: String,
    code: String,
    timeout_s: Option<u64>,
    env: Vec<(String, String)>,
    client: Option<String>,
    /// `error`: the example shows an error answer on purpose.
    shows_error: bool,
    /// `var=KEY=VALUE`: the example's own environment (what its text says to set first).
    vars: Vec<(String, String)>,
}

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The marked examples of `text` (from `name`).
fn examples_in(name: &str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(marker) = line
            .trim()
            .strip_prefix("<!-- example")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        let lang = fence
            .strip_prefix("```")
            .unwrap_or_else(|| panic!("{name}:{}: a marker must precede a fence", i + 1));
        let end = lines[i + 2..]
            .iter()
            .position(|l| l.trim() == "```")
            .unwrap_or_else(|| panic!("{name}:{}: unterminated block", i + 2));
        let mut ex = Example {
            at: format!("{name}:{}", i + 2),
            lang: lang.to_string(),
            code: lines[i + 2..i + 2 + end].join("\n") + "\n",
            timeout_s: None,
            env: Vec::new(),
            client: None,
            shows_error: false,
            vars: Vec::new(),
        };
        for setting in marker.split_whitespace() {
            if setting == "error" {
                ex.shows_error = true;
                continue;
            }
            match setting.split_once('=') {
                Some(("timeout", n)) => ex.timeout_s = Some(n.parse().unwrap()),
                Some(("env", kv)) => {
                    let (k, v) = kv.split_once('=').expect("env=KEY=VALUE");
                    ex.env.push((k.into(), v.into()));
                }
                Some(("var", kv)) => {
                    let (k, v) = kv.split_once('=').expect("var=KEY=VALUE");
                    ex.vars.push((k.into(), v.into()));
                }
                Some(("client", c)) => ex.client = Some(c.into()),
                _ => panic!("{}: unknown marker setting {setting:?}", ex.at),
            }
        }
        out.push(ex);
    }
    out
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with `bash tests/run.sh`, which installs the pinned clients")
    })
}

/// The command that runs `ex` (its code in `file`).
fn command(ex: &Example, file: &Path) -> Command {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tickcast")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = match (ex.lang.as_str(), ex.client.as_deref()) {
        ("sh", _) => {
            let mut c = Command::new("bash");
            // `python3` in a shell example is the suite's, with `websockets`.
            let venv = Path::new(&var("TICKCAST_TEST_PYTHON"))
                .parent()
                .unwrap()
                .to_path_buf();
            c.arg(file)
                .env("PATH", format!("{}:{path}", venv.display()));
            return c;
        }
        ("python", None) => Command::new(var("TICKCAST_TEST_PYTHON")),
        ("python", Some("centrifugo")) => Command::new(var("TICKCAST_TEST_CENTRIFUGO_PYTHON")),
        ("python", Some("binance")) => Command::new(var("TICKCAST_TEST_BINANCE_PYTHON")),
        ("js", client) => {
            let mut c = Command::new("node");
            let modules = match client {
                None => var("TICKCAST_TEST_NODE_PATH"),
                Some("centrifugo") => var("TICKCAST_TEST_CENTRIFUGO_NODE_PATH"),
                Some("binance") => var("TICKCAST_TEST_BINANCE_NODE_PATH"),
                Some(other) => panic!("{}: no client {other}", ex.at),
            };
            c.env("NODE_PATH", modules);
            c
        }
        (lang, client) => panic!("{}: cannot run {lang} with {client:?}", ex.at),
    };
    cmd.arg(file).env("PATH", path);
    cmd
}

/// Runs `ex` against the server at `addr`: its output, or why it failed.
fn run(ex: &Example, addr: &str, dir: &Path) -> Result<String, String> {
    let file = dir.join(format!(
        "example.{}",
        match ex.lang.as_str() {
            "js" => "cjs",
            "python" => "py",
            _ => "sh",
        }
    ));
    std::fs::write(&file, ex.code.replace("127.0.0.1:8080", addr)).unwrap();
    let mut cmd = command(ex, &file);
    no_inherited_settings(&mut cmd);
    cmd.envs(ex.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // Its own process group: a shell example's children (`python3 -m websockets …`) are
    // stopped with it, or they would hold its output open.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    // Open and silent, as a terminal nobody types in (`python3 -m websockets` reads it).
    let stdin = child.stdin.take();
    let limit = Duration::from_secs(ex.timeout_s.unwrap_or(60));
    let start = Instant::now();
    let stopped = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if start.elapsed() >= limit {
            let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let failed = match (stopped, ex.timeout_s) {
        // An example that streams until stopped: stopping it is its end.
        (true, Some(_)) => stderr.contains("Traceback") || stderr.contains("Error"),
        (true, None) => return Err(format!("did not finish in {limit:?}: {stdout}{stderr}")),
        (false, _) => !out.status.success(),
    };
    // An HTTP API answer that is an error (`{"error":…}`, e.g. a 401 for a key the server
    // does not know) is a failed example unless it is marked as showing one.
    let refused = ex.lang == "sh" && !ex.shows_error && stdout.contains("{\"error\":");
    if failed || refused || stdout.trim().is_empty() {
        return Err(format!(
            "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        ));
    }
    Ok(stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_examples_run_against_the_readme_server() {
    let mut examples = Vec::new();
    for file in docs() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        examples.extend(examples_in(&name, &std::fs::read_to_string(&file).unwrap()));
    }
    assert!(examples.len() >= 6, "marked examples: {examples:?}");
    let dir = std::env::temp_dir().join(format!("tickcast-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    // One server per distinct set of server settings; the README's server otherwise, with
    // the shipped defaults (no test harness rights: the examples run as a new user's would).
    let mut settings: Vec<Vec<(String, String)>> = examples.iter().map(|e| e.env.clone()).collect();
    settings.sort();
    settings.dedup();
    for env in settings {
        let mut cmd = tickcast_cmd();
        cmd.args(["serve", "--demo-feed", "--listen", "127.0.0.1:0"])
            .env("TICKCAST_SERVER__PIN_CORES", "false")
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped());
        let mut server = ServerProcess::spawn(cmd);
        let addr = server.addr.clone();
        for ex in examples.iter().filter(|e| e.env == env) {
            let (ex_addr, dir) = (addr.clone(), dir.clone());
            let at = ex.at.clone();
            let result = tokio::task::block_in_place(|| run(ex, &ex_addr, &dir));
            if let Err(why) = result {
                failures.push(format!("{at}: {why}"));
            }
        }
        server.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "examples that do not run:\n{}",
        failures.join("\n\n")
    );
}

/// A `tickcast serve` with the shipped settings (not the harness' open ones).
struct ServerProcess {
    child: std::process::Child,
    addr: String,
}

impl ServerProcess {
    fn spawn(mut cmd: Command) -> ServerProcess {
        use std::io::BufRead;
        let mut child = cmd.spawn().expect("spawn tickcast");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        ServerProcess { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A shell transcript of the docs: `    $ command` lines, each followed by what it prints.
#[derive(Debug)]
struct Transcript {
    at: String,
    /// Which `<!-- transcript -->` block of its file.
    block: usize,
    command: String,
    output: String,
}

/// The transcripts of the indented blocks that follow a `<!-- transcript -->` line.
fn transcripts_in(name: &str, text: &str) -> Vec<Transcript> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Transcript> = Vec::new();
    let mut i = 0;
    let mut blocks = 0;
    while i < lines.len() {
        if lines[i].trim() != "<!-- transcript -->" {
            i += 1;
            continue;
        }
        blocks += 1;
        i += 1;
        while lines.get(i).is_some_and(|l| l.trim().is_empty()) {
            i += 1;
        }
        let start = out.len();
        // An empty line inside the block is output; the block ends at the first line that
        // is neither indented nor followed by an indented one.
        let in_block = |i: usize| {
            lines.get(i).and_then(|l| {
                l.strip_prefix("    ").or((l.is_empty()
                    && lines.get(i + 1).is_some_and(|n| n.starts_with("    ")))
                .then_some(""))
            })
        };
        while let Some(line) = in_block(i) {
            match line.strip_prefix("$ ") {
                Some(command) => {
                    let at = format!("{name}:{}", i + 1);
                    let mut command = command.to_string();
                    // A here-document: its lines, to the `EOF` line, are part of the command.
                    if command.contains("<<EOF") || command.contains("<<'EOF'") {
                        loop {
                            i += 1;
                            let l = lines.get(i).and_then(|l| {
                                l.strip_prefix("    ").or(l.is_empty().then_some(""))
                            });
                            let l = l.unwrap_or_else(|| panic!("{at}: here-document without EOF"));
                            command.push('\n');
                            command.push_str(l);
                            if l == "EOF" {
                                break;
                            }
                        }
                    }
                    out.push(Transcript {
                        at,
                        block: blocks,
                        command,
                        output: String::new(),
                    });
                }
                None => {
                    let here = out.len() > start;
                    let t = out
                        .last_mut()
                        .filter(|_| here)
                        .unwrap_or_else(|| panic!("{name}:{}: output before a `$` line", i + 1));
                    t.output.push_str(line);
                    t.output.push('\n');
                }
            }
            i += 1;
        }
        assert!(
            out.len() > start,
            "{name}:{i}: a transcript marker without `$` lines"
        );
    }
    out
}

/// Docs that show what a command prints: every `<!-- transcript -->` block's commands, run
/// in order with bash in a new directory of their own (with `config/` of the repository in it;
/// `tickcast` on PATH, no `TICKCAST_*` inherited), print exactly what the block shows, stdout
/// and stderr together.
#[test]
fn marked_transcripts_print_what_they_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tickcast")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut all = Vec::new();
    for file in docs() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        all.extend(transcripts_in(
            &name,
            &std::fs::read_to_string(&file).unwrap(),
        ));
    }
    assert!(all.len() >= 10, "transcripts: {all:?}");
    let mut wrong = Vec::new();
    let scratch = std::env::temp_dir().join(format!("tickcast-transcripts-{}", std::process::id()));
    // One shell per block, as in a terminal: a command may use what an earlier one set or
    // wrote. Each command's output ends at a separator line.
    const SEP: &str = "@@tickcast-transcript@@";
    let mut blocks: Vec<(String, usize, Vec<&Transcript>)> = Vec::new();
    for t in &all {
        let file = t.at.split(':').next().unwrap().to_string();
        match blocks.last_mut() {
            Some((f, b, ts)) if *f == file && *b == t.block => ts.push(t),
            _ => blocks.push((file, t.block, vec![t])),
        }
    }
    for (file, block, ts) in &blocks {
        let dir = scratch.join(file).join(block.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(root.join("config"), dir.join("config")).unwrap();
        let script: String = ts
            .iter()
            .map(|t| format!("{{ {}\n}} 2>&1\nprintf '\\n{SEP}\\n'\n", t.command))
            .collect();
        let mut cmd = Command::new("bash");
        no_inherited_settings(&mut cmd);
        let out = cmd
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .env("PATH", &path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let sep = format!("\n{SEP}\n");
        let mut got = stdout.split(sep.as_str());
        for t in ts {
            let got = got.next().unwrap_or("(nothing: the shell stopped)");
            if got.trim_end() != t.output.trim_end() {
                wrong.push(format!(
                    "{}: $ {}\n  the docs show:\n{}\n  it prints:\n{}",
                    t.at, t.command, t.output, got
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        wrong.is_empty(),
        "transcripts that drifted:\n{}",
        wrong.join("\n")
    );
}
