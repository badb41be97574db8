//! The response timeout as a socket timeout: the longest a backend may keep the proxy
//! waiting between two moves (Apache's `ProxyTimeout` and member `timeout`; nginx's
//! `proxy_send_timeout` and `proxy_read_timeout`). It times the body once the head is in,
//! and, on the direct path, the writing of the request and the reading of the head.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// About 30 years: a deadline that never comes.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Times the waits of a connection's reads and writes. Costs nothing until one has to
/// wait: most bodies arrive with their head, or in reads that never do. The timer is made
/// at the first wait and moved back only at a wait after bytes moved, so a body streaming
/// steadily reads the clock once per wait, not per frame. A connection's timer serves its
/// exchanges one after the other ([`rearm`](Self::rearm)), so the timer is made once per
/// connection.
///
/// Time spent while the body is not polled (the client is slow to take what was read) is
/// not the backend's, and does not count: the deadline is set when a wait begins.
#[derive(Debug)]
pub(crate) struct ReadTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes moved (or the body moved on) since the deadline was set.
    moved: bool,
    /// When the first wait since the last [`rearm`](Self::rearm) began.
    first_wait: Option<Instant>,
}

/// `timeout` from `now`. A timeout too large to add (`Duration::MAX` for "none") is capped,
/// as `tokio::time::sleep` caps it.
fn deadline(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or(now + FAR_FUTURE)
}

impl ReadTimer {
    pub(crate) fn new(timeout: Duration) -> ReadTimer {
        ReadTimer {
            timeout,
            sleep: None,
            moved: false,
            first_wait: None,
        }
    }

    /// The timeout this timer applies.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// For the next exchange or body, with `timeout`: its first wait starts a new deadline.
    pub(crate) fn rearm(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.moved = true;
        self.first_wait = None;
    }

    /// A read or a write moved bytes: the next wait starts a new deadline.
    pub(crate) fn moved(&mut self) {
        self.moved = true;
    }

    /// When the first wait since the last [`rearm`](Self::rearm) began; `None` when
    /// nothing has waited since.
    pub(crate) fn first_wait(&self) -> Option<Instant> {
        self.first_wait
    }

    /// A read or a write has to wait. True when it has waited the whole timeout since the
    /// last move (or since the first wait); otherwise `cx` is woken at the deadline.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let sleep = match &mut self.sleep {
            None => {
                let now = Instant::now();
                self.first_wait.get_or_insert(now);
                self.sleep
                    .insert(Box::pin(tokio::time::sleep_until(deadline(
                        now,
                        self.timeout,
                    ))))
            }
            Some(sleep) => {
                if self.moved {
                    let now = Instant::now();
                    sleep.as_mut().reset(deadline(now, self.timeout));
                    self.first_wait.get_or_insert(now);
                }
                sleep
            }
        };
        self.moved = false;
        sleep.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_last_wait_after_bytes() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut t = ReadTimer::new(Duration::from_secs(10));
        assert!(!t.expired(&mut cx), "the first wait starts the deadline");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!t.expired(&mut cx));
        // Bytes came; time not spent waiting (the client was slow) does not count.
        t.moved();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            !t.expired(&mut cx),
            "a wait after bytes starts a new deadline"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!t.expired(&mut cx));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.expired(&mut cx), "ten seconds of waiting with no bytes");

        // The next body on the connection: a new deadline at its first wait.
        t.rearm(Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!t.expired(&mut cx));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(t.expired(&mut cx));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_timeout_never_fires_and_does_not_overflow() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut t = ReadTimer::new(Duration::MAX);
        assert!(!t.expired(&mut cx));
        t.moved();
        assert!(!t.expired(&mut cx), "reset past the end of time");
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert!(!t.expired(&mut cx));
    }
}
