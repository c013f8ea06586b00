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
//! such a branch costs a flag's load per wake-up. Written here because
//! neither tokio nor futures has the per-branch waker of `FuturesUnordered`
//! without its allocation per future and its queue.
//!
//! [`Gate`] is the same flag for a poll made by hand: the relay reads each
//! socket through one, so that a wake-up for the other direction does not
//! poll a read that is known to have nothing (two of the six socket polls of
//! a select-only transaction).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Wraps `F`, polling it only when it asked to be woken (and the first
/// time).
pub struct WakeGate<F> {
    future: Pin<Box<F>>,
    gate: Gate,
}

/// A waker of its own for one poll site, and whether it fired since the
/// site was last polled.
#[derive(Default)]
pub struct Gate {
    /// The gate's waker, bound to the task it wakes; `None` until the first
    /// poll.
    bound: Option<Bound>,
    /// Let the next poll through, woken or not.
    open: bool,
}

struct Bound {
    flag: Arc<WakeFlag>,
    /// The waker the site is polled with: it raises `flag`, then wakes the
    /// task.
    waker: Waker,
}

/// Whether the gate's waker fired, and the task it wakes.
struct WakeFlag {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Gate {
    /// A gate that lets the first poll through.
    pub fn new() -> Self {
        Gate::default()
    }

    /// The waker to poll the site with, when the site must be polled now:
    /// the gate's waker fired, or the gate was opened, since the last time
    /// this returned one; `None` otherwise.
    ///
    /// The gate's waker wakes the task of `cx`. Bound to the task once, it
    /// costs a comparison of two pointers per call and no atomic
    /// read-modify-write (an `AtomicWaker` registered at every call would
    /// cost more than the polls the gate saves); should the task's waker
    /// ever change, the gate binds to the new one and lets the poll through,
    /// which registers the new waker where the old one was. (`will_wake` may
    /// say no for wakers that are the same, e.g. `Waker::noop()`: the gate
    /// then lets every poll through, slower but never stuck. Tokio's task
    /// wakers compare equal.)
    #[inline]
    pub fn passes(&mut self, cx: &Context<'_>) -> Option<&Waker> {
        let rebind = match &self.bound {
            Some(bound) => !bound.flag.task.will_wake(cx.waker()),
            None => true,
        };
        if rebind {
            return Some(self.bind(cx.waker()));
        }
        let bound = self.bound.as_ref()?;
        // A wake between the load and the store comes before the poll this
        // lets through, which then sees what woke it.
        let woken = bound.flag.woken.load(Ordering::Acquire);
        if woken {
            bound.flag.woken.store(false, Ordering::Relaxed);
        }
        (std::mem::take(&mut self.open) || woken).then_some(&bound.waker)
    }

    #[cold]
    fn bind(&mut self, task: &Waker) -> &Waker {
        let flag = Arc::new(WakeFlag {
            woken: AtomicBool::new(false),
            task: task.clone(),
        });
        self.open = false;
        &self
            .bound
            .insert(Bound {
                waker: Waker::from(Arc::clone(&flag)),
                flag,
            })
            .waker
    }

    /// Lets the next poll through whether or not the waker fires: the site
    /// did not end up waiting on the gate's waker (it made progress, or it
    /// was polled with another waker).
    #[inline]
    pub fn open(&mut self) {
        self.open = true;
    }
}

impl<F: Future> WakeGate<F> {
    /// Gates `future`; it is polled at the gate's first poll.
    pub fn new(future: F) -> Self {
        WakeGate {
            future: Box::pin(future),
            gate: Gate::new(),
        }
    }
}

impl<F: Future> Future for WakeGate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(waker) = this.gate.passes(cx) else {
            return Poll::Pending;
        };
        this.future.as_mut().poll(&mut Context::from_waker(waker))
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

    /// A task waker that counts its wake-ups.
    struct CountingTask(std::sync::atomic::AtomicUsize);

    impl Wake for CountingTask {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_future_is_not_polled_without_its_own_wake_up() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut gate = Box::pin(WakeGate::new(std::future::poll_fn(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Poll::<()>::Pending
        })));
        let task = Arc::new(CountingTask(Default::default()));
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        for _ in 0..5 {
            assert!(gate.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once, at the start");
        let gate_waker = gate.gate.bound.as_ref().expect("bound at the first poll");
        gate_waker.waker.wake_by_ref();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the gate's wake woke the task"
        );
        assert!(gate.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "polled again once woken");
        assert!(gate.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "not again without a wake");
    }

    #[test]
    fn a_gate_polled_from_another_task_lets_the_poll_through_and_wakes_that_task() {
        let first = Waker::from(Arc::new(CountingTask(Default::default())));
        let second_task = Arc::new(CountingTask(Default::default()));
        let second = Waker::from(Arc::clone(&second_task));
        let mut gate = Gate::new();
        assert!(gate.passes(&Context::from_waker(&first)).is_some());
        assert!(gate.passes(&Context::from_waker(&first)).is_none());
        let waker = gate
            .passes(&Context::from_waker(&second))
            .expect("a new task's poll goes through")
            .clone();
        assert!(gate.passes(&Context::from_waker(&second)).is_none());
        waker.wake_by_ref();
        assert_eq!(second_task.0.load(Ordering::SeqCst), 1);
        assert!(gate.passes(&Context::from_waker(&second)).is_some());
    }

    #[test]
    fn an_opened_gate_lets_one_poll_through() {
        let task = Waker::from(Arc::new(CountingTask(Default::default())));
        let cx = Context::from_waker(&task);
        let mut gate = Gate::new();
        assert!(gate.passes(&cx).is_some());
        assert!(gate.passes(&cx).is_none());
        gate.open();
        assert!(gate.passes(&cx).is_some());
        assert!(gate.passes(&cx).is_none());
    }
}
