//! Network namespaces for tests that change the network between clients and the server
//! (tests/netem.rs): one created per test with `ip netns add`, only its own loopback, deleted
//! when the guard drops (also when the test fails). The harness reaches a server in it
//! ([`super::Server::start_in_netns`]) with sockets made from inside it: a socket belongs to
//! the namespace of the thread that creates it, so a fresh thread enters the namespace
//! (`setns`), connects, and hands the connected socket back.

use std::{
    net::SocketAddr,
    os::fd::AsFd,
    process::{Command, Output},
};

use tokio::net::TcpStream;

use super::DEADLINE;

/// A network namespace of this test process, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add` a namespace named after `tag` and this process, with its loopback up.
    /// `Err` says why it cannot be had here (not root, no `ip`, the kernel or a sandbox
    /// refusing namespaces): the caller skips, saying so.
    pub fn create(tag: &str) -> Result<Netns, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("not root: creating a network namespace needs CAP_SYS_ADMIN".into());
        }
        let name = format!("tickcast-{tag}-{}", std::process::id());
        // A namespace left by an earlier process with the same id (killed before its drop).
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]).map_err(|e| format!("`ip netns add` failed: {e}"))?;
        let ns = Netns { name };
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])
            .map_err(|e| format!("`ip link set lo up` in the namespace failed: {e}"))?;
        Ok(ns)
    }

    /// Runs `argv` inside the namespace (`ip netns exec`); its output, or why it failed.
    pub fn exec(&self, argv: &[&str]) -> Result<String, String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run(&full).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Enters the namespace on the calling thread: only for a thread of its own, since every
    /// socket the thread creates afterwards is in the namespace.
    pub fn enter(name: &str) -> std::io::Result<()> {
        let ns = std::fs::File::open(format!("/var/run/netns/{name}"))?;
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(argv: &[&str]) -> Result<Output, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{argv:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A TCP connection to `addr` made from inside the namespace `name`.
pub async fn connect(name: &str, addr: SocketAddr) -> TcpStream {
    let name = name.to_string();
    // A thread of its own (not tokio's blocking pool, whose threads are reused): it enters the
    // namespace, connects and ends.
    let std_stream = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            Netns::enter(&name)?;
            std::net::TcpStream::connect_timeout(&addr, DEADLINE)
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("connect to {addr} in the namespace: {e}"));
    std_stream.set_nonblocking(true).unwrap();
    TcpStream::from_std(std_stream).unwrap()
}
