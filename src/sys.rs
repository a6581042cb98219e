//! The few OS calls tickcast makes itself, beside monoio's.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Borrows the descriptor of a monoio socket for a direct syscall (rustix needs `AsFd`, which
/// monoio's types do not implement).
pub fn fd_of<T: AsRawFd>(owner: &T) -> BorrowedFd<'_> {
    // SAFETY: monoio's `TcpStream`/`TcpListener` own their descriptor and close it only when
    // dropped; the returned borrow is tied to `owner`'s lifetime, so it cannot outlive it.
    unsafe { BorrowedFd::borrow_raw(owner.as_raw_fd()) }
}

/// Caps the unsent bytes the kernel queues for a TCP socket (`TCP_NOTSENT_LOWAT`): beyond it
/// the socket takes no more data. Neither rustix nor socket2 wraps this option, so it is one
/// plain integer `setsockopt` through libc.
pub fn set_tcp_notsent_lowat(fd: BorrowedFd<'_>, bytes: u32) -> std::io::Result<()> {
    let value = bytes.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; the option value
    // points to a `c_int` on this stack frame that outlives the call, and its exact size is
    // passed, as setsockopt(2) requires for TCP_NOTSENT_LOWAT.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the result (each connection is
/// a descriptor). Never fails: on error the current soft limit stands.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The soft RLIMIT_NOFILE (`u64::MAX` when unlimited).
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Opts the process out of transparent huge pages. tickcast's heap is many small per-connection
/// objects; backed by 2 MiB pages, partly used regions count whole in RSS (measured: ~600 B more
/// per idle connection at 10k connections). Returns whether the kernel accepted it.
pub fn disable_transparent_huge_pages() -> bool {
    rustix::thread::disable_transparent_huge_pages(true).is_ok()
}

/// The process's resident set size in bytes (`/proc/self/statm`, second field, in pages); `None`
/// where `/proc` is not mounted. A read of a tiny procfs file: for a metrics scrape, not for
/// the hot path.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = rustix::param::page_size() as u64;
    Some(pages * page)
}
