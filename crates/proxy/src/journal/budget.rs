//! [`JournalBudget`]: the bytes all sessions' journals may keep together
//! (`journal.max_total_bytes`). A session whose next message does not fit
//! keeps relaying but is marked not replayable until its unit ends, exactly
//! as with the per-session limits.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes kept by every journal of the proxy, against a maximum.
#[derive(Debug)]
pub struct JournalBudget {
    used: AtomicUsize,
    max: usize,
}

impl JournalBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Self {
        JournalBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes `n` bytes from the budget; false (and nothing taken) when they
    /// do not fit.
    pub fn try_charge(&self, n: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(n).filter(|next| *next <= self.max) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Default for JournalBudget {
    fn default() -> Self {
        JournalBudget::new(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::JournalBudget;

    #[test]
    fn charges_fit_until_the_maximum_and_releases_make_room() {
        let budget = JournalBudget::new(10);
        assert!(budget.try_charge(6));
        assert!(!budget.try_charge(5), "6 + 5 exceeds 10");
        assert_eq!(budget.used(), 6, "a refused charge takes nothing");
        assert!(budget.try_charge(4));
        budget.release(6);
        assert!(budget.try_charge(5));
        assert_eq!(budget.used(), 9);
    }
}
