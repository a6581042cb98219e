//! The systemd notify protocol (`Type=notify`, `sd_notify(3)`) against a real `NOTIFY_SOCKET`:
//! a datagram socket this test binds, handed to the server as systemd would. `READY=1` once
//! it serves, `WATCHDOG=1` while every shard's loop moves (and not once one is stuck),
//! `RELOADING=1` then `READY=1` around SIGHUP, `STOPPING=1` on SIGTERM.

mod common;

use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::*;

both_drivers!(the_service_manager_hears_ready_status_watchdog_reload_and_stop);

/// `WATCHDOG_USEC` given to the server: it pings every half of it.
const WATCHDOG_USEC: u64 = 400_000;

/// The service manager's end: a bound datagram socket in a fresh directory.
struct NotifySocket {
    sock: UnixDatagram,
    dir: PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = std::env::temp_dir().join(format!(
            "tickcast-notify-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = UnixDatagram::bind(dir.join("notify")).unwrap();
        NotifySocket { sock, dir }
    }

    fn path(&self) -> String {
        self.dir.join("notify").to_string_lossy().into_owned()
    }

    /// The next datagram within `wait`, as text; `None` if none came.
    fn recv(&self, wait: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Datagrams until one has the line `want` (returned), within the test deadline.
    fn until(&self, want: &str) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            assert!(!left.is_zero(), "no {want} from the server");
            if let Some(msg) = self.recv(left) {
                if msg.lines().any(|l| l == want) {
                    return msg;
                }
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A suffix unique within this process (tests run in parallel).
fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn start(driver: Driver, notify: &NotifySocket) -> Server {
    let path = notify.path();
    let usec = WATCHDOG_USEC.to_string();
    Server::start(
        driver,
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", usec.as_str()),
        ],
        &[],
    )
}

/// The shipped unit (tuning/systemd/tickcast.service) asks for what the server does, and
/// `systemd-analyze verify` accepts it where systemd is installed (with `ExecStart=` pointed
/// at the binary under test: the unit's own path is where an operator installs it).
#[test]
fn the_shipped_unit_uses_notify_and_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tuning/systemd/tickcast.service"
    ))
    .unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in the unit");
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    };
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("tickcast-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tickcast.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tickcast", env!("CARGO_BIN_EXE_tickcast")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

fn signal(server: &Server, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

async fn the_service_manager_hears_ready_status_watchdog_reload_and_stop(driver: Driver) {
    let notify = NotifySocket::bind();
    let mut server = start(driver, &notify);
    let ready = notify.until("READY=1");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("connections")),
        "{ready:?}"
    );
    // While it serves, the pings come (every 200 ms here).
    notify.until("WATCHDOG=1");
    let (_ws, _) = connect(&server).await;
    notify.until("WATCHDOG=1");
    // SIGHUP: reloading, then ready again (with the monotonic time notify-reload wants).
    signal(&server, rustix::process::Signal::HUP);
    let reloading = notify.until("RELOADING=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    notify.until("READY=1");
    // SIGTERM: stopping, then a clean exit (the datagram waits in the socket).
    assert!(server.terminate().success());
    notify.until("STOPPING=1");
}

/// Needs the `fault-injection` feature (tests/run.sh enables it).
#[cfg(feature = "fault-injection")]
mod stuck {
    use super::*;

    both_drivers!(a_stuck_shard_stops_the_watchdog_pings);

    /// A shard stuck for good (fault injection: a publish to `fault.stall.shard` blocks the
    /// shard that owns the topic) stops the watchdog pings, so systemd restarts the service.
    async fn a_stuck_shard_stops_the_watchdog_pings(driver: Driver) {
        let notify = NotifySocket::bind();
        let server = start(driver, &notify);
        notify.until("WATCHDOG=1");
        let (mut ws, _) = connect(&server).await;
        send_json(
            &mut ws,
            serde_json::json!({"op":"publish","topic":"fault.stall.shard","data":1}),
        )
        .await;
        // Pings may still come until the next look at the shards; then none: a quiet spell of
        // five ping intervals must follow within the deadline.
        let quiet = Duration::from_micros(WATCHDOG_USEC / 2 * 5);
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "the watchdog pings never stopped with a shard stuck"
            );
            let spell = Instant::now();
            let mut pinged = false;
            loop {
                let left = quiet.saturating_sub(spell.elapsed());
                if left.is_zero() {
                    break;
                }
                if let Some(msg) = notify.recv(left) {
                    if msg.lines().any(|l| l == "WATCHDOG=1") {
                        pinged = true;
                        break;
                    }
                }
            }
            if !pinged {
                break;
            }
        }
        // The process itself is alive: only the watchdog tells systemd it is not well.
        assert!(std::path::Path::new(&format!("/proc/{}", server.pid())).exists());
    }
}
