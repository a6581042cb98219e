#!/usr/bin/env python3
"""Where a node's CPU samples go, by thread and subsystem, from `perf script -F comm,ip,sym`
of a `perf record -g` profile (stdin). Prints a table: thread kind, subsystem, samples, %.

Usage: perf script -i perf.data -F comm,ip,sym | python3 perf/scenarios/perf_groups.py

Each sample's call chain is classified once. A sample whose leaf is in the kernel is put under
the first kernel rule any of its frames matches (a write's TCP work under "sendmsg" however
deep); a sample in user space under the first user rule matched walking from the leaf up.
"""
import sys
from collections import Counter

# (subsystem, substrings of a frame's symbol), first match wins.
KERNEL = [
    ("kernel: sendmsg (socket writes, loopback delivery to the reader)",
     ["__sys_sendmsg", "____sys_sendmsg", "tcp_sendmsg", "sock_sendmsg", "__sys_sendto", "sock_write_iter"]),
    ("kernel: recv/read (socket reads)",
     ["tcp_recvmsg", "sock_recvmsg", "__sys_recvfrom", "__sys_recvmsg", "sock_read_iter", "ksys_read"]),
    ("kernel: wake another thread (eventfd, futex wake)", ["eventfd_write", "futex_wake", "eventfd_signal"]),
    ("kernel: io_uring submit/wait", ["io_uring_enter", "io_cqring_wait", "io_submit_sqes"]),
    ("kernel: epoll", ["do_epoll_wait", "do_epoll_ctl", "ep_poll", "epoll_"]),
    ("kernel: futex wait / sleep", ["futex_wait", "do_nanosleep", "hrtimer_nanosleep"]),
    ("kernel: close/accept/other socket calls", ["__x64_sys_close", "__sys_accept", "__sys_shutdown", "setsockopt"]),
    ("kernel: scheduler (switch, idle, preempt)", ["schedule", "finish_task_switch", "__switch_to"]),
    ("kernel: timer/irq/softirq (not in a syscall)", ["irq", "softirq", "hrtimer", "apic"]),
    ("kernel: other syscall", ["entry_SYSCALL", "do_syscall"]),
]
USER = [
    ("user: allocator", ["malloc", "free", "realloc", "_int_", "cfree", "mi_", "je_", "tcache"]),
    ("user: NATS client (async-nats: parse, subscriptions)", ["async_nats"]),
    ("user: tokio runtime (bridge thread)", ["tokio::"]),
    ("user: cluster bridge (envelope decode, ring push)", ["tickcast::cluster", "envelope"]),
    ("user: cluster owner path (on_remote)", ["on_remote", "accept_remote", "shard::remote"]),
    ("user: fan-out and writes (deliver_local, flush, out queue)",
     ["deliver_local", "flush_conn", "flush_dirty", "flush_out", "shard::out", "shard::fanout", "for_each_subscriber", "commit"]),
    ("user: mesh (cross-shard rings)", ["tickcast::mesh", "drain_mesh", "on_mesh"]),
    ("user: reading connections (frames, JSON)", ["conn::read", "readiness", "conn::poll", "simd_json", "protocol::"]),
    ("user: timers, pings", ["shard::timer", "timer_task", "scan"]),
    ("user: monoio runtime", ["monoio"]),
    ("user: libc (memcpy, syscalls wrappers)", ["libc", "__memmove", "__memcpy", "memcpy", "memmove"]),
]


def is_kernel(ip):
    return ip.startswith("ffff")


def thread_kind(comm):
    if comm.startswith("tc-shard"):
        return "shard"
    if comm.startswith("tc-bridge"):
        return "bridge"
    return comm


def classify(frames):
    if not frames:
        return "unknown"
    if is_kernel(frames[0][0]):
        for name, keys in KERNEL:
            if any(k in sym for _, sym in frames for k in keys):
                return name
        return "kernel: other"
    for _, sym in frames:
        for name, keys in USER:
            if any(k in sym for k in keys):
                return name
    return "user: other (" + frames[0][1][:40] + ")"


def samples(lines):
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        if not line.startswith((" ", "\t")):
            if comm is not None:
                yield comm, frames
            comm, frames = line.split()[0], []
            continue
        parts = line.strip().split(None, 1)
        frames.append((parts[0], parts[1] if len(parts) > 1 else "?"))
    if comm is not None:
        yield comm, frames


def main():
    by = Counter()
    threads = Counter()
    total = 0
    for comm, frames in samples(sys.stdin):
        kind = thread_kind(comm)
        by[(kind, classify(frames))] += 1
        threads[kind] += 1
        total += 1
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    print(f"{'thread':<8} {'%':>6} {'samples':>8}  subsystem")
    for kind, n in threads.most_common():
        print(f"{kind:<8} {100 * n / total:6.1f} {n:8d}  (all)")
        for (k, name), m in sorted(by.items(), key=lambda kv: -kv[1]):
            if k == kind and 100 * m / total >= 0.3:
                print(f"{'':<8} {100 * m / total:6.1f} {m:8d}  {name}")


if __name__ == "__main__":
    main()
