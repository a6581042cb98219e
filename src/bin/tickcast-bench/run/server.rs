//! What the bench reads from the servers under test: CPU seconds and RSS of their processes
//! (from `/proc`, summed over `--server-pid`) and their `/metrics`, summed over the URLs.

use super::Common;
use crate::{plan::Target, procfs};

/// CPU seconds of the server processes, summed; `None` without pids or if one cannot be read.
pub(super) fn server_cpu(c: &Common) -> Option<f64> {
    if c.server_pids.is_empty() {
        return None;
    }
    c.server_pids
        .iter()
        .map(|&p| procfs::cpu_seconds(Some(p)).ok())
        .sum()
}

/// RSS of the server processes, summed; `None` without pids or if one cannot be read.
pub(super) fn server_rss(c: &Common) -> Option<procfs::Mem> {
    if c.server_pids.is_empty() {
        return None;
    }
    let mut total = procfs::Mem::default();
    for &p in &c.server_pids {
        let m = procfs::mem(p).ok()?;
        total.vm_rss_bytes += m.vm_rss_bytes;
        total.rss_anon_bytes += m.rss_anon_bytes;
    }
    Some(total)
}

/// `/metrics` of every server (at `--metrics-url`, else at `--url`), summed; `None` if none
/// answers (a `wss://` URL is not scraped: tickcast-bench reads `/metrics` over plain HTTP).
pub(super) fn scrape_all(c: &Common) -> Option<std::collections::BTreeMap<String, f64>> {
    let urls = c.metrics_url.as_deref().unwrap_or(&c.url);
    let targets: Vec<Target> = super::flags::parse_targets(urls, c.allow_remote).ok()?;
    let mut total: Option<std::collections::BTreeMap<String, f64>> = None;
    for t in targets.iter().filter(|t| !t.tls) {
        if let Some(m) = procfs::scrape_metrics(t.addr, &t.host) {
            let into = total.get_or_insert_with(Default::default);
            for (k, v) in m {
                *into.entry(k).or_insert(0.0) += v;
            }
        }
    }
    total
}
