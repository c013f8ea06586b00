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

/// A process's CPU time so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    user_ticks: u64,
    system_ticks: u64,
}

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
pub fn sample(pid: u32) -> Option<CpuSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// `utime` and `stime`: the 12th and 13th fields after the command name (which is in
/// parentheses and may contain anything, so fields are counted from the last `)`).
fn parse_stat(stat: &str) -> Option<CpuSample> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    Some(CpuSample {
        user_ticks: fields.next()?.parse().ok()?,
        system_ticks: fields.next()?.parse().ok()?,
    })
}

/// The CPU used between `before` and `after`, per transaction of `transactions`; None
/// without transactions.
pub fn per_transaction(
    before: CpuSample,
    after: CpuSample,
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
        user_us: us(after.user_ticks.saturating_sub(before.user_ticks)),
        system_us: us(after.system_ticks.saturating_sub(before.system_ticks)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_after_the_command_name() {
        let stat = "4242 (pg (bouncer)) S 1 4242 4242 0 -1 4194560 700 0 0 0 1234 567 0 0 20 0 1";
        assert_eq!(
            parse_stat(stat),
            Some(CpuSample {
                user_ticks: 1234,
                system_ticks: 567
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_can_be_sampled_and_its_time_only_grows() {
        let pid = std::process::id();
        let before = sample(pid).expect("own stat");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let after = sample(pid).expect("own stat");
        assert!(x > 0);
        assert!(after.user_ticks + after.system_ticks >= before.user_ticks + before.system_ticks);
        assert!(sample(u32::MAX).is_none());
    }

    #[test]
    fn time_is_divided_by_the_transactions() {
        let before = CpuSample {
            user_ticks: 100,
            system_ticks: 1000,
        };
        let after = CpuSample {
            user_ticks: 120,
            system_ticks: 1200,
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
    }
}
