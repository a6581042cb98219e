//! A server process under a test's full control: its environment, an optional shell prefix
//! (`ulimit`), its stderr kept in a file, its exit status.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use super::{DEADLINE, OPEN_ENV};

pub struct Proc {
    pub addr: SocketAddr,
    child: Child,
    stderr: PathBuf,
    /// The test waited for the process to exit ([`Proc::wait_exit`]).
    exit_expected: bool,
}

impl Proc {
    /// `tickcast serve --listen 127.0.0.1:0 --shards 2 <args>` with `OPEN_ENV` and `env`,
    /// started through `sh -c '<shell>; exec tickcast …'` (e.g. `ulimit -n 200`).
    pub fn start(shell: &str, env: &[(&str, &str)], args: &[&str]) -> Proc {
        Proc::spawn(shell, OPEN_ENV, env, args)
    }

    /// [`Proc::start`] without `OPEN_ENV`: only what a config file (`--config`) and `env` say,
    /// and `RUST_LOG=info` (the test reads the log).
    pub fn start_bare(env: &[(&str, &str)], args: &[&str]) -> Proc {
        let mut env = env.to_vec();
        env.insert(0, ("RUST_LOG", "info"));
        Proc::spawn("", &[], &env, args)
    }

    fn spawn(shell: &str, base: &[(&str, &str)], env: &[(&str, &str)], args: &[&str]) -> Proc {
        let stderr = std::env::temp_dir().join(format!(
            "tickcast-test-{}-{}.log",
            std::process::id(),
            fastrand_suffix()
        ));
        let script = format!("{shell}\nexec \"$0\" \"$@\"");
        let mut cmd = Command::new("sh");
        super::no_inherited_settings(&mut cmd);
        cmd.arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_tickcast"))
            .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2"])
            .args(args)
            .env("TICKCAST_SERVER__PIN_CORES", "false")
            .env("RUST_LOG", "warn")
            .envs(base.iter().copied())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut child = cmd.spawn().expect("spawn tickcast");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read tickcast stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(&stderr).unwrap_or_default();
                panic!("unexpected first line {line:?}; stderr: {log}")
            })
            .parse()
            .unwrap();
        Proc {
            addr,
            child,
            stderr,
            exit_expected: false,
        }
    }

    /// What the process has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (bounded by `DEADLINE`) for the process to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.exit_expected = true;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the process did not exit; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server as the rest of the harness knows it (same address; not owning the process).
    pub fn server(&self) -> super::Server {
        super::Server::attach(self.addr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A process that ended by itself while the test did not wait for it crashed (a panic
        // exits with status 70): the test fails even if everything it checked held.
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.stderr();
        let _ = std::fs::remove_file(&self.stderr);
        if let Some(status) = exited {
            if !self.exit_expected && !std::thread::panicking() {
                panic!("tickcast exited by itself during the test: {status}; stderr: {log}");
            }
        }
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
