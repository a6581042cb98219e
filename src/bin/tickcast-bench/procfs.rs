//! What the bench reads from /proc and from the server's `/metrics`.
//!
//! - Server memory: `VmRSS` (and `RssAnon`) from `/proc/PID/status`.
//! - CPU time: `utime + stime` (fields 14 and 15) from `/proc/PID/stat`, in clock ticks. Linux
//!   reports these in `USER_HZ`, which is 100 on x86-64 and arm64 whatever the kernel's `HZ`.
//! - `/metrics`: one plain HTTP/1.1 GET on the server's own host:port, Prometheus text; samples of
//!   the same name are summed over their labels (the `shard` label).

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// `USER_HZ`: the unit of the tick counts in `/proc/PID/stat`.
pub const CLOCK_TICKS_PER_S: u64 = 100;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    pub vm_rss_bytes: u64,
    pub rss_anon_bytes: u64,
}

/// Parses `VmRSS` and `RssAnon` (reported in kB, i.e. KiB) from a `/proc/PID/status` text.
pub fn parse_status(text: &str) -> Option<Mem> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.trim();
            let kib: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
            Some(kib * 1024)
        })
    };
    Some(Mem {
        vm_rss_bytes: field("VmRSS:")?,
        rss_anon_bytes: field("RssAnon:").unwrap_or(0),
    })
}

/// Parses `utime + stime` in ticks from a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // After ")" comes field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub fn mem(pid: u32) -> io::Result<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| io::Error::other("no VmRSS in status"))
}

/// CPU seconds (user + system) a process has used, all its threads included.
pub fn cpu_seconds(pid: Option<u32>) -> io::Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path)?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or_else(|| io::Error::other("bad stat"))?;
    Ok(ticks as f64 / CLOCK_TICKS_PER_S as f64)
}

/// Sums Prometheus text samples by metric name (labels dropped), keeping names with `prefix`.
/// Samples with a `format` label (`tickcast_serializations_total{format="centrifugo"}`) are
/// also summed by name and format, under the key `name{format="…"}`.
pub fn parse_prometheus(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(r) => match r.find('}') {
                Some(i) => (&r[..i], &r[i + 1..]),
                None => continue,
            },
            None => ("", &line[name_end..]),
        };
        // Value, then an optional timestamp.
        if let Some(v) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
            let format = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("format=\""))
                .and_then(|f| f.strip_suffix('"'));
            if let Some(f) = format {
                *out.entry(format!("{name}{{format=\"{f}\"}}"))
                    .or_insert(0.0) += v;
            }
        }
    }
    out
}

/// GETs `/metrics` from the server; `None` if it is not served (the baseline has none).
pub fn scrape_metrics(addr: SocketAddr, host: &str) -> Option<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = Vec::new();
    let _ = s.take(64 << 20).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return None;
    }
    let head_end = text.find("\r\n\r\n")?;
    let head = text[..head_end].to_ascii_lowercase();
    let body = &text[head_end + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.into()
    };
    Some(parse_prometheus(&body, "tickcast_"))
}

/// Decodes an HTTP/1.1 chunked body (enough for a Prometheus scrape).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some(line_end) = body.find("\r\n") {
        let size_field = body[..line_end].split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_field, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let Some(chunk) = body.get(start..start + size) else {
            out.push_str(&body[start..]);
            break;
        };
        out.push_str(chunk);
        body = body.get(start + size + 2..).unwrap_or("");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rss() {
        let text =
            "Name:\ttickcast\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t    2048 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Mem {
                vm_rss_bytes: 12345 * 1024,
                rss_anon_bytes: 2048 * 1024
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn stat_cpu_ticks_with_awkward_comm() {
        // Fields after comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let line = "4242 (tick cast) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_stat_cpu_ticks("1 (a) S 1 2"), None);
    }

    #[test]
    fn reads_own_proc_files() {
        let me = std::process::id();
        assert!(mem(me).unwrap().vm_rss_bytes > 0);
        assert!(cpu_seconds(None).unwrap() >= 0.0);
        assert!(cpu_seconds(Some(me)).is_ok());
    }

    #[test]
    fn prometheus_sums_over_labels() {
        let text = "# HELP tickcast_publishes_total x\n# TYPE tickcast_publishes_total counter\n\
                    tickcast_publishes_total{shard=\"0\"} 10\n\
                    tickcast_publishes_total{shard=\"1\"} 5 1700000000000\n\
                    tickcast_deliveries_total 1e3\nother_total 7\n";
        let m = parse_prometheus(text, "tickcast_");
        assert_eq!(m["tickcast_publishes_total"], 15.0);
        assert_eq!(m["tickcast_deliveries_total"], 1000.0);
        assert!(!m.contains_key("other_total"));
        let text = "tickcast_serializations_total{shard=\"0\",format=\"v1\"} 7\n\
                    tickcast_serializations_total{shard=\"1\",format=\"v1\"} 3\n\
                    tickcast_serializations_total{format=\"centrifugo\",shard=\"1\"} 4\n";
        let m = parse_prometheus(text, "tickcast_");
        assert_eq!(m["tickcast_serializations_total"], 14.0);
        assert_eq!(m["tickcast_serializations_total{format=\"v1\"}"], 10.0);
        assert_eq!(
            m["tickcast_serializations_total{format=\"centrifugo\"}"],
            4.0
        );
    }

    #[test]
    fn chunked_body() {
        let body = "5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n";
        assert_eq!(dechunk(body), "hello world!");
    }
}
