//! The response timeout once the head is in: the longest a backend's body may keep the
//! proxy waiting between two reads (Apache's `ProxyTimeout` and member `timeout`, a socket
//! timeout; nginx's `proxy_read_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// About 30 years: a deadline that never comes.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Times the waits of a body. Costs nothing until a read has to wait: most bodies arrive
/// with their head, or in reads that never do. The timer is made at the first wait and
/// moved back only at a wait after bytes came, so a body streaming steadily reads the clock
/// once per wait, not per frame. A connection's timer serves its bodies one after the
/// other ([`rearm`](Self::rearm)), so the timer is made once per connection.
///
/// Time spent while the body is not polled (the client is slow to take what was read) is
/// not the backend's, and does not count: the deadline is set when a wait begins.
#[derive(Debug)]
pub(crate) struct ReadTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Bytes came (or the body moved on) since the deadline was set.
    moved: bool,
}

impl ReadTimer {
    pub(crate) fn new(timeout: Duration) -> ReadTimer {
        ReadTimer {
            timeout,
            sleep: None,
            moved: false,
        }
    }

    /// The timeout this timer applies.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// For the next body, with `timeout`: its first wait starts a new deadline.
    pub(crate) fn rearm(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.moved = true;
    }

    /// A read brought bytes: the next wait starts a new deadline.
    pub(crate) fn moved(&mut self) {
        self.moved = true;
    }

    /// A read has to wait. True when it has waited the whole timeout since the last read
    /// that brought bytes (or since the first wait); otherwise `cx` is woken at the deadline.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let sleep = match &mut self.sleep {
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep(self.timeout))),
            Some(sleep) => {
                if self.moved {
                    // A timeout too large to add (`Duration::MAX` for "none") is capped,
                    // as `tokio::time::sleep` caps it.
                    let now = Instant::now();
                    let deadline = now.checked_add(self.timeout).unwrap_or(now + FAR_FUTURE);
                    sleep.as_mut().reset(deadline);
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
