//! [`IdleTimer`]: `proxy.idle_in_transaction_timeout_ms` inside the relay's
//! poll loop — one reusable timer per session, armed only while the session
//! sits in a transaction with nothing in flight.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The timer of `proxy.idle_in_transaction_timeout_ms`: armed when the
/// session is inside a transaction with nothing in flight, disarmed as soon
/// as the client sends something.
pub struct IdleTimer {
    after: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl IdleTimer {
    /// A timer that fires after `after` of idleness in a transaction.
    pub fn new(after: Duration) -> Self {
        IdleTimer {
            after,
            sleep: Box::pin(tokio::time::sleep(after)),
            armed: false,
        }
    }

    /// The configured idle time.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// `Ready` once the session has been idle in a transaction for the
    /// whole period; `idle` says whether it is now.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, idle: bool) -> Poll<()> {
        if !idle {
            self.armed = false;
            return Poll::Pending;
        }
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + self.after);
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx)
    }
}
