//! Fault injection, for the tests that prove a crash ends the process (`cargo test --features
//! fault-injection`, which `tests/run.sh` uses). Without the feature every check compiles to
//! nothing.
//!
//! A publish to `fault.panic.shard` panics the shard it enters on; one to
//! `fault.panic.bridge` (cluster mode) panics the broker bridge; one to `fault.stall.shard`
//! blocks the shard it enters on for good (a stuck loop: the watchdog test).

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy)]
pub enum Site {
    Shard,
    Bridge,
}

/// Panics if `topic` asks for a fault at `site` (only with the `fault-injection` feature).
#[inline(always)]
pub fn check(site: Site, topic: &str) {
    #[cfg(feature = "fault-injection")]
    {
        let wanted = match site {
            Site::Shard => "fault.panic.shard",
            Site::Bridge => "fault.panic.bridge",
        };
        if topic == wanted {
            panic!("fault injection: publish to {topic}");
        }
        if matches!(site, Site::Shard) && topic == "fault.stall.shard" {
            tracing::warn!("fault injection: stalling this shard for good");
            loop {
                std::thread::park();
            }
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = (site, topic);
}
