//! The service manager's notify protocol (systemd, `sd_notify(3)`), through the `sd-notify`
//! crate: `READY=1` once every shard listens, `STATUS=` lines, `RELOADING=1`/`READY=1` around a
//! SIGHUP reload, `STOPPING=1` at shutdown, and `WATCHDOG=1` only while every shard's loop is
//! moving. Without `NOTIFY_SOCKET` (not started by systemd with `Type=notify`) none of it runs.
//!
//! The watchdog: systemd sets `WATCHDOG_USEC` from `WatchdogSec=`; a thread wakes every half of
//! it and pings only if each shard's timer ticked since its last look (a shard's timer runs at
//! least once a second, `timeouts.tick_ms`). A shard stuck in a loop or a blocking call stops
//! the pings, and systemd kills and restarts the service (`Restart=`), which a process that
//! merely keeps its other threads alive would never get.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sd_notify::NotifyState;

use crate::topology::Monitor;

/// Set by [`Notifier::stopping`]: systemd stops the watchdog for a stopping service, and the
/// shards end one by one, which must not read as stuck.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// How often the status line is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The notify socket of the service manager that started this process.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    /// Half of `WATCHDOG_USEC`, when the service manager asks for pings.
    ping_every: Option<Duration>,
    /// A shard whose timer has not ticked for this long is stuck: half the watchdog period,
    /// but never under three ticks (`timeouts.tick_ms`), so a slow timer is not taken for a
    /// stuck one.
    stuck_after: Duration,
}

impl Notifier {
    /// `Some` when started with `NOTIFY_SOCKET` set (`Type=notify`).
    pub fn from_env(tick_ms: u64) -> Option<Notifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let ping_every = watchdog_usec()
            .map(|usec| Duration::from_micros(usec / 2).max(Duration::from_millis(1)));
        let ticks = Duration::from_millis(tick_ms.saturating_mul(3));
        Some(Notifier {
            ping_every,
            stuck_after: ping_every.unwrap_or_default().max(ticks),
        })
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "service manager notification failed");
        }
    }

    /// Every shard listens: the service is up.
    pub fn ready(&self, monitor: &Monitor) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(&status(monitor, None)),
        ]);
    }

    /// A SIGHUP reload begins (`Type=notify-reload` wants the monotonic time with it).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is done; `failed`: why it changed nothing (the old settings stay in force),
    /// shown in `systemctl status` until the next status line (`Type=notify` has no way to
    /// fail a reload: `systemctl reload` succeeds either way; the journal has the error).
    pub fn reloaded(&self, monitor: &Monitor, failed: Option<&str>) {
        match failed {
            None => self.ready(monitor),
            Some(why) => self.send(&[
                NotifyState::Ready,
                NotifyState::Status(&format!("reload failed, old settings kept: {why}")),
            ]),
        }
    }

    /// Shutdown begins: clients are being closed.
    pub fn stopping(&self) {
        STOPPING.store(true, Ordering::Relaxed);
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Starts the thread that refreshes the status line and pings the watchdog.
    pub fn spawn(self, monitor: Monitor) -> std::io::Result<()> {
        let every = self
            .ping_every
            .map_or(STATUS_EVERY, |p| p.min(STATUS_EVERY));
        std::thread::Builder::new()
            .name("tickcast-notify".into())
            .spawn(move || self.run(&monitor, every))
            .map(drop)
    }

    fn run(self, monitor: &Monitor, every: Duration) {
        // Each shard's tick count and when it was last seen to change.
        let mut seen: Vec<(u64, Instant)> = monitor
            .ticks()
            .into_iter()
            .map(|t| (t, Instant::now()))
            .collect();
        let mut last = (Instant::now(), monitor.deliveries());
        let mut last_status = Instant::now();
        let mut stuck_reported = false;
        loop {
            std::thread::sleep(every);
            if STOPPING.load(Ordering::Relaxed) {
                return;
            }
            if self.ping_every.is_some() {
                let now = Instant::now();
                for (s, t) in seen.iter_mut().zip(monitor.ticks()) {
                    if s.0 != t {
                        *s = (t, now);
                    }
                }
                let stuck: Vec<usize> = (0..seen.len())
                    .filter(|&s| now.duration_since(seen[s].1) > self.stuck_after)
                    .collect();
                if stuck.is_empty() {
                    self.send(&[NotifyState::Watchdog]);
                    stuck_reported = false;
                } else if !stuck_reported {
                    tracing::error!(shards = ?stuck, stuck_after_ms = self.stuck_after.as_millis() as u64,
                        "shard loop not moving: withholding the watchdog ping");
                    stuck_reported = true;
                }
            }
            if last_status.elapsed() >= STATUS_EVERY {
                let deliveries = monitor.deliveries();
                let secs = last.0.elapsed().as_secs_f64();
                let rate = deliveries.saturating_sub(last.1) as f64 / secs.max(1e-3);
                self.send(&[NotifyState::Status(&status(monitor, Some(rate)))]);
                last = (Instant::now(), deliveries);
                last_status = Instant::now();
            }
        }
    }
}

/// `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process: libsystemd's
/// `sd_watchdog_enabled` rules. (`sd_notify::watchdog_enabled` also wants `WATCHDOG_PID`
/// present, which systemd sets but other service managers and `systemd-run` wrappers may not.)
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then_some(usec)
}

/// `STATUS=` text: what `systemctl status` shows under the unit.
fn status(monitor: &Monitor, deliveries_per_s: Option<f64>) -> String {
    let conns = monitor.connections();
    match deliveries_per_s {
        Some(rate) => format!("{conns} connections, {rate:.0} deliveries/s"),
        None => format!("{conns} connections, serving"),
    }
}
