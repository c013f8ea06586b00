//! [`WakeGate`]: a future that is polled again only after its own waker
//! fired.
//!
//! A session's task waits on its relay and, beside it, on the topology and
//! shutdown `watch` channels. `tokio::select!` polls every branch at every
//! wake-up of the task, and nearly every wake-up is a socket becoming
//! readable: polling a `watch::Receiver::changed` future that has not
//! fired takes the channel's lock and the waiter list's lock each time —
//! about a tenth of the proxy's own instructions per select-only
//! transaction, for channels that change a few times a day. Behind a gate
//! such a branch costs one atomic swap per wake-up. Written here because
//! neither tokio nor futures has the per-branch waker of `FuturesUnordered`
//! without its allocation per future and its queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Wraps `F`, polling it only when it asked to be woken (and the first
/// time).
pub struct WakeGate<F> {
    future: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
    /// The waker `future` is polled with: it raises `flag`, then wakes the
    /// task.
    waker: Waker,
}

/// Whether the gated future was woken, and the task to wake for it.
struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WakeGate<F> {
    /// Gates `future`; it is polled at the gate's first poll.
    pub fn new(future: F) -> Self {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WakeGate {
            future: Box::pin(future),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }
}

impl<F: Future> Future for WakeGate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake between the two then
        // wakes this task again rather than being lost.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_gated_watch_wait_ends_when_the_value_changes() {
        let (tx, mut rx) = tokio::sync::watch::channel(0);
        let waiting = tokio::spawn(async move {
            WakeGate::new(async move {
                rx.changed().await.ok();
                *rx.borrow()
            })
            .await
        });
        tokio::task::yield_now().await;
        tx.send(7).ok();
        let seen = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the gate passes the wake-up on")
            .expect("task");
        assert_eq!(seen, 7);
    }

    #[test]
    fn a_gated_future_is_not_polled_without_its_own_wake_up() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut gate = Box::pin(WakeGate::new(std::future::poll_fn(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Poll::<()>::Pending
        })));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..5 {
            assert!(gate.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once, at the start");
        gate.flag.wake_by_ref();
        assert!(gate.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "polled again once woken");
    }
}
