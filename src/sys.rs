//! The few OS calls tickcast makes itself, beside monoio's.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Borrows the descriptor of a monoio socket for a direct syscall (rustix needs `AsFd`, which
/// monoio's types do not implement).
pub fn fd_of<T: AsRawFd>(owner: &T) -> BorrowedFd<'_> {
    // SAFETY: monoio's `TcpStream`/`TcpListener` own their descriptor and close it only when
    // dropped; the returned borrow is tied to `owner`'s lifetime, so it cannot outlive it.
    unsafe { BorrowedFd::borrow_raw(owner.as_raw_fd()) }
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

/// Opts the process out of transparent huge pages. tickcast's heap is many small per-connection
/// objects; backed by 2 MiB pages, partly used regions count whole in RSS (measured: ~600 B more
/// per idle connection at 10k connections). Returns whether the kernel accepted it.
pub fn disable_transparent_huge_pages() -> bool {
    rustix::thread::disable_transparent_huge_pages(true).is_ok()
}
