//! The CPU time a proxy spends per transaction: its user and system time (all threads)
//! from `/proc/<pid>/stat`, read before and after a pgbench run and divided by the
//! transactions of the run.
//!
//! On a machine where client, proxy and PostgreSQL share the CPUs, TPS moves by several
//! percent from run to run for reasons outside the proxy (scheduling, caches). The CPU a
//! proxy itself uses per transaction varies far less, and is what tells two proxies
//! apart when their TPS are within that noise.

use nix::unistd::{sysconf, SysconfVar};
use serde::Serialize;
use understudy_cluster::process::{self, CpuTicks};

/// CPU time per transaction, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuPerTransaction {
    /// User-space time.
    pub user_us: f64,
    /// Kernel time (for a proxy, mostly the loopback TCP work of its `recv` and `send`).
    pub system_us: f64,
}

impl CpuPerTransaction {
    /// User plus system time.
    pub fn total_us(&self) -> f64 {
        self.user_us + self.system_us
    }
}

/// The CPU time of `pid` so far; None when it cannot be read (the process is gone).
pub fn sample(pid: u32) -> Option<CpuTicks> {
    process::cpu_ticks(i32::try_from(pid).ok()?)
}

/// The CPU used between `before` and `after`, per transaction of `transactions`; None
/// without transactions.
pub fn per_transaction(
    before: CpuTicks,
    after: CpuTicks,
    transactions: u64,
) -> Option<CpuPerTransaction> {
    if transactions == 0 {
        return None;
    }
    let ticks_per_second = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    };
    let us = |ticks: u64| ticks as f64 / ticks_per_second * 1e6 / transactions as f64;
    Some(CpuPerTransaction {
        user_us: us(after.user.saturating_sub(before.user)),
        system_us: us(after.system.saturating_sub(before.system)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_divided_by_the_transactions() {
        let before = CpuTicks {
            user: 100,
            system: 1000,
        };
        let after = CpuTicks {
            user: 120,
            system: 1200,
        };
        let hz = match sysconf(SysconfVar::CLK_TCK) {
            Ok(Some(n)) if n > 0 => n as f64,
            _ => 100.0,
        };
        let per = per_transaction(before, after, 10_000).expect("transactions");
        assert!((per.user_us - 20.0 / hz * 100.0).abs() < 1e-9);
        assert!((per.system_us - 200.0 / hz * 100.0).abs() < 1e-9);
        assert!((per.total_us() - 220.0 / hz * 100.0).abs() < 1e-9);
        assert_eq!(per_transaction(before, after, 0), None);
        assert!(sample(std::process::id()).is_some());
        assert!(sample(u32::MAX).is_none());
    }
}
