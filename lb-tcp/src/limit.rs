//! The global connection limit (pen's `-x`): a counter with a limit that can change at run
//! time, and waiting for a free slot with a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// What to do with a connection that finds the balancer full (the global limit reached, or
/// every backend at its own limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Close the client connection at once (pen's behaviour).
    Refuse,
    /// Wait up to this long for a connection to end, then refuse.
    Wait(Duration),
}

/// A connection limit shared by the tasks of one proxy.
#[derive(Debug)]
pub(crate) struct ConnLimit {
    limit: AtomicUsize,
    active: AtomicUsize,
    /// Signalled when a connection ends and someone waits (a slot may be free).
    freed: Notify,
    /// Tasks waiting on `freed`; releases skip the notification when there are none.
    waiting: AtomicUsize,
}

/// Counts a waiter for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One held slot; released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    limit: Arc<ConnLimit>,
}

impl ConnLimit {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(ConnLimit {
            limit: AtomicUsize::new(limit),
            active: AtomicUsize::new(0),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit();
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                limit: self.clone(),
            })
    }

    /// Takes a slot, waiting for one as `when_full` says.
    pub(crate) async fn acquire(self: &Arc<Self>, when_full: WhenFull) -> Option<Slot> {
        let wait = match when_full {
            WhenFull::Refuse => return self.try_acquire(),
            WhenFull::Wait(d) => d,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let _waiting = Waiting::new(&self.waiting);
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_acquire();
            }
        }
    }

    /// Waits until some connection ends or `deadline` passes; false when the deadline passed.
    pub(crate) async fn wait_freed(&self, deadline: tokio::time::Instant) -> bool {
        let _waiting = Waiting::new(&self.waiting);
        tokio::time::timeout_at(deadline, self.freed.notified())
            .await
            .is_ok()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit.active.fetch_sub(1, Ordering::SeqCst);
        // notify_waiters takes a lock: skip it on the hot path when nobody waits.
        if self.limit.waiting.load(Ordering::SeqCst) > 0 {
            self.limit.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refuse_wait_and_release() {
        let limit = ConnLimit::new(1);
        let first = limit.acquire(WhenFull::Refuse).await.unwrap();
        assert!(limit.acquire(WhenFull::Refuse).await.is_none());
        assert!(
            limit
                .acquire(WhenFull::Wait(Duration::from_secs(1)))
                .await
                .is_none()
        );
        let l2 = limit.clone();
        let waiter = tokio::spawn(async move {
            l2.acquire(WhenFull::Wait(Duration::from_secs(10)))
                .await
                .is_some()
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(limit.active(), 0);
        limit.set_limit(0);
        assert!(limit.acquire(WhenFull::Refuse).await.is_none());
    }
}
