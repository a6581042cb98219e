//! Groups of I/O threads, in this process or in a worker process.
//!
//! A process may hold 20,000 open files here and the limit cannot be raised, so past
//! `--per-process` sockets the bench re-executes itself as `tickcast-bench worker`. The parent
//! and a worker talk in JSON lines: the parent writes the group's plan and then round commands
//! on the worker's stdin; the worker answers with its connect stats once, then one result per
//! round (histograms inside as hex of hdrhistogram's V2 serialization). A worker whose stdin
//! closes (its parent died) quits; every process also has a watchdog deadline.

use std::{
    io::{self, BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use mio::Waker;
use serde::{Deserialize, Serialize};

use crate::{
    engine::{Cmd, IoThread, Report, mono_ns},
    plan::{RoundPlan, ThreadPlan},
    procfs,
    stats::{ConnectStats, RoundStats},
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupPlan {
    pub threads: Vec<ThreadPlan>,
    /// CLOCK_MONOTONIC ns after which a worker exits whatever it is doing.
    pub deadline_ns: u64,
}

#[derive(Serialize, Deserialize)]
enum WorkerCmd {
    Round(RoundPlan),
    Quit,
}

#[derive(Serialize, Deserialize)]
enum WorkerMsg {
    Connected(ConnectStats),
    Round(RoundStats),
}

/// Splits `count` items starting at `first` into `parts` nearly equal ranges.
pub fn split(first: u64, count: u64, parts: u64) -> Vec<(u64, u64)> {
    let parts = parts.max(1);
    let mut out = Vec::new();
    let mut at = first;
    for p in 0..parts {
        let n = count / parts + u64::from(p < count % parts);
        out.push((at, n));
        at += n;
    }
    out
}

/// Exits the process at `deadline_ns` (CLOCK_MONOTONIC): no run outlives its bound.
pub fn watchdog(deadline_ns: u64, who: &'static str) {
    std::thread::spawn(move || {
        loop {
            let now = mono_ns();
            if now >= deadline_ns {
                eprintln!("tickcast-bench {who}: run deadline reached, exiting");
                std::process::exit(4);
            }
            std::thread::sleep(Duration::from_nanos((deadline_ns - now).min(1_000_000_000)));
        }
    });
}

pub struct LocalGroup {
    cmds: Vec<mpsc::Sender<Cmd>>,
    wakers: Vec<Arc<Waker>>,
    reports: mpsc::Receiver<Report>,
    handles: Vec<JoinHandle<()>>,
}

impl LocalGroup {
    pub fn start(plan: &GroupPlan) -> io::Result<LocalGroup> {
        let (report_tx, reports) = mpsc::channel();
        let mut g = LocalGroup {
            cmds: vec![],
            wakers: vec![],
            reports,
            handles: vec![],
        };
        for (i, tp) in plan.threads.iter().enumerate() {
            let (cmd_tx, cmd_rx) = mpsc::channel();
            let (io, waker) = IoThread::new(tp.clone(), cmd_rx, report_tx.clone())?;
            g.cmds.push(cmd_tx);
            g.wakers.push(waker);
            g.handles.push(
                std::thread::Builder::new()
                    .name(format!("bench-io-{i}"))
                    .spawn(move || io.run())?,
            );
        }
        Ok(g)
    }

    fn send(&self, make: impl Fn() -> Cmd) {
        for (tx, w) in self.cmds.iter().zip(&self.wakers) {
            let _ = tx.send(make());
            let _ = w.wake();
        }
    }

    pub fn wait_connected(&self) -> ConnectStats {
        let mut total = ConnectStats::default();
        let mut n = 0;
        while n < self.cmds.len() {
            match self.reports.recv() {
                Ok(Report::Connected(s)) => {
                    total.merge(&s);
                    n += 1;
                }
                Ok(Report::RoundDone(_)) => {}
                Err(_) => break,
            }
        }
        total
    }

    pub fn send_round(&self, r: &RoundPlan) {
        self.send(|| Cmd::Round(r.clone()));
    }

    pub fn wait_round(&self) -> RoundStats {
        let mut total = RoundStats::default();
        let mut n = 0;
        while n < self.cmds.len() {
            match self.reports.recv() {
                Ok(Report::RoundDone(s)) => {
                    total.merge(&s);
                    n += 1;
                }
                Ok(Report::Connected(_)) => {}
                Err(_) => break,
            }
        }
        total
    }

    pub fn quit(self) {
        self.send(|| Cmd::Quit);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

pub struct RemoteGroup {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RemoteGroup {
    pub fn start(plan: &GroupPlan) -> io::Result<RemoteGroup> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        writeln!(stdin, "{}", serde_json::to_string(plan)?)?;
        stdin.flush()?;
        Ok(RemoteGroup {
            child,
            stdin,
            stdout,
        })
    }

    fn read_msg(&mut self) -> io::Result<WorkerMsg> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(io::Error::other("worker exited early"));
        }
        serde_json::from_str(&line).map_err(io::Error::other)
    }

    fn write_cmd(&mut self, c: &WorkerCmd) -> io::Result<()> {
        writeln!(self.stdin, "{}", serde_json::to_string(c)?)?;
        self.stdin.flush()
    }
}

/// Threads in this process, or a worker process: the coordinator drives both the same way.
pub enum Group {
    Local(LocalGroup),
    Remote(RemoteGroup),
}

impl Group {
    pub fn start(plan: &GroupPlan, remote: bool) -> io::Result<Group> {
        Ok(if remote {
            Group::Remote(RemoteGroup::start(plan)?)
        } else {
            Group::Local(LocalGroup::start(plan)?)
        })
    }

    pub fn wait_connected(&mut self) -> io::Result<ConnectStats> {
        match self {
            Group::Local(g) => Ok(g.wait_connected()),
            Group::Remote(g) => match g.read_msg()? {
                WorkerMsg::Connected(s) => Ok(s),
                WorkerMsg::Round(_) => Err(io::Error::other("worker out of step")),
            },
        }
    }

    pub fn send_round(&mut self, r: &RoundPlan) -> io::Result<()> {
        match self {
            Group::Local(g) => {
                g.send_round(r);
                Ok(())
            }
            Group::Remote(g) => g.write_cmd(&WorkerCmd::Round(r.clone())),
        }
    }

    pub fn wait_round(&mut self) -> io::Result<RoundStats> {
        match self {
            Group::Local(g) => Ok(g.wait_round()),
            Group::Remote(g) => match g.read_msg()? {
                WorkerMsg::Round(s) => Ok(s),
                WorkerMsg::Connected(_) => Err(io::Error::other("worker out of step")),
            },
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Group::Remote(_))
    }

    pub fn quit(self) {
        match self {
            Group::Local(g) => g.quit(),
            Group::Remote(mut g) => {
                let _ = g.write_cmd(&WorkerCmd::Quit);
                drop(g.stdin);
                let deadline = mono_ns() + 10_000_000_000;
                loop {
                    match g.child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if mono_ns() > deadline => {
                            let _ = g.child.kill();
                            let _ = g.child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        }
    }
}

/// `tickcast-bench worker`: runs one group for a parent, JSON lines on stdin/stdout.
pub fn worker_main() -> io::Result<()> {
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let plan: GroupPlan = match lines.next() {
        Some(l) => serde_json::from_str(&l?).map_err(io::Error::other)?,
        None => return Ok(()),
    };
    watchdog(plan.deadline_ns, "worker");
    let group = LocalGroup::start(&plan)?;
    let mut out = io::stdout().lock();
    let emit = |out: &mut io::StdoutLock, m: &WorkerMsg| -> io::Result<()> {
        writeln!(out, "{}", serde_json::to_string(m)?)?;
        out.flush()
    };
    emit(&mut out, &WorkerMsg::Connected(group.wait_connected()))?;
    for line in lines {
        match serde_json::from_str::<WorkerCmd>(&line?).map_err(io::Error::other)? {
            WorkerCmd::Round(r) => {
                let cpu0 = procfs::cpu_seconds(None).unwrap_or(0.0);
                group.send_round(&r);
                let mut stats = group.wait_round();
                stats.client_cpu_s = procfs::cpu_seconds(None).unwrap_or(0.0) - cpu0;
                emit(&mut out, &WorkerMsg::Round(stats))?;
            }
            WorkerCmd::Quit => break,
        }
    }
    group.quit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_range() {
        assert_eq!(split(10, 7, 3), vec![(10, 3), (13, 2), (15, 2)]);
        assert_eq!(split(0, 2, 4), vec![(0, 1), (1, 1), (2, 0), (2, 0)]);
        assert_eq!(split(0, 5, 0), vec![(0, 5)]);
    }
}
