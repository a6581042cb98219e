//! Spreading connections over groups and driving the groups: how many worker processes the
//! open-file limit calls for, each group's thread plans, starting the groups, and collecting
//! their connect stats and round results.

use super::{Common, Res};
use crate::{
    group::{Group, GroupPlan, split},
    plan::{Dialects, RoundPlan, Target, ThreadPlan, Topics},
    stats::{ConnectStats, RoundStats},
};

/// File descriptors a process keeps for itself beyond its sockets.
const SPARE_FDS: u64 = 200;

/// Raises the soft open-file limit to the hard one and returns it.
fn open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Connections to spread over groups.
pub(super) struct Spread {
    pub(super) first: u64,
    pub(super) count: u64,
    pub(super) topics: Topics,
    pub(super) connect_rate: Option<f64>,
    pub(super) deadline_ns: u64,
    /// Sockets this process holds besides these (the publishers).
    pub(super) extra_local_sockets: u64,
    /// Global indices (sorted) of the connections that stall.
    pub(super) stalled: Vec<u64>,
    /// What the connections speak (`--dialect`).
    pub(super) dialects: Dialects,
    /// Distinct subscription filters (`--filters`) and consecutive subscribers per filter
    /// (`--filters-in-blocks`; 0: interleaved).
    pub(super) filters: u32,
    pub(super) filter_block: u64,
}

/// How many worker processes `plan_groups` planned (0: all in this process).
pub(super) fn worker_processes(plans: &[(GroupPlan, bool)]) -> usize {
    if plans.first().is_some_and(|p| p.1) {
        plans.len()
    } else {
        0
    }
}

/// Plans subscriber groups: in-process threads, or worker processes past `per_process` sockets.
pub(super) fn plan_groups(
    c: &Common,
    targets: &[Target],
    s: Spread,
) -> Res<Vec<(GroupPlan, bool)>> {
    let Spread {
        first,
        count,
        topics,
        connect_rate,
        deadline_ns,
        extra_local_sockets,
        stalled,
        dialects,
        filters,
        filter_block,
    } = s;
    let fd_limit = open_files_limit();
    let per_process = c.per_process.min(fd_limit.saturating_sub(SPARE_FDS)).max(1);
    let workers = c
        .workers
        .unwrap_or(if count + extra_local_sockets > per_process {
            count.div_ceil(per_process)
        } else {
            0
        });
    if workers == 0 && count + extra_local_sockets + SPARE_FDS > fd_limit {
        return Err(format!(
            "{} sockets do not fit in one process (open files limit {fd_limit})",
            count + extra_local_sockets
        ));
    }
    if workers > 0 && count.div_ceil(workers) + SPARE_FDS > fd_limit {
        return Err(format!(
            "{count} sockets over {workers} workers exceed {fd_limit} files each"
        ));
    }
    let groups = workers.max(1);
    let threads = c.threads.max(1) as u64;
    let rate_per_thread = connect_rate.map(|r| r / (groups * threads) as f64);
    Ok(split(first, count, groups)
        .into_iter()
        .map(|(gfirst, gcount)| {
            let threads = split(gfirst, gcount, threads)
                .into_iter()
                .map(|(tfirst, tcount)| ThreadPlan {
                    targets: targets.to_vec(),
                    source_ips: c.source_ips.clone(),
                    first: tfirst,
                    count: tcount,
                    topics: topics.clone(),
                    connect_rate: rate_per_thread,
                    concurrency: c.concurrency.max(1),
                    connect_timeout_ms: c.connect_timeout_ms,
                    recv_pause_us: c.recv_pause_us,
                    stalled: stalled
                        .iter()
                        .copied()
                        .filter(|i| (tfirst..tfirst + tcount).contains(i))
                        .collect(),
                    deflate: c.deflate,
                    tls_ca: c.tls_ca.clone(),
                    dialects,
                    filters,
                    filter_block,
                })
                .collect();
            (
                GroupPlan {
                    threads,
                    deadline_ns,
                },
                workers > 0,
            )
        })
        .collect())
}

pub(super) fn start_groups(plans: &[(GroupPlan, bool)]) -> Res<Vec<Group>> {
    plans
        .iter()
        .map(|(p, remote)| Group::start(p, *remote).map_err(|e| format!("start group: {e}")))
        .collect()
}

pub(super) fn wait_connected(groups: &mut [Group]) -> Res<ConnectStats> {
    let mut total = ConnectStats::default();
    for g in groups.iter_mut() {
        total.merge(&g.wait_connected().map_err(|e| format!("group: {e}"))?);
    }
    Ok(total)
}

pub(super) fn run_round(groups: &mut [Group], plan: &RoundPlan) -> Res<RoundStats> {
    for g in groups.iter_mut() {
        g.send_round(plan).map_err(|e| format!("group: {e}"))?;
    }
    let mut total = RoundStats::default();
    for g in groups.iter_mut() {
        total.merge(&g.wait_round().map_err(|e| format!("group: {e}"))?);
    }
    Ok(total)
}
