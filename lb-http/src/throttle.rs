//! Warnings about a condition that can repeat thousands of times a second (a process out of
//! file descriptors fails every accept and every connect): one line a second at most, with
//! how many were left out.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Lets one warning a second through.
#[derive(Debug)]
pub(crate) struct Throttle {
    base: OnceLock<Instant>,
    /// Milliseconds after `base` of the last line let through, plus one; 0 for none yet.
    last: AtomicU64,
    /// Warnings left out since.
    left_out: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new() -> Throttle {
        Throttle {
            base: OnceLock::new(),
            last: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a warning may be written now, `n` being how many were left out since
    /// the last one; `None` to leave this one out.
    pub(crate) fn allow(&self) -> Option<u64> {
        let base = *self.base.get_or_init(Instant::now);
        let now = u64::try_from(base.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// " (N more since the last such line)", or nothing when none were left out.
pub(crate) fn left_out(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_warning_a_second_with_a_count_of_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(), None);
        }
        tokio::time::advance(std::time::Duration::from_millis(999)).await;
        assert_eq!(t.allow(), None);
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        assert_eq!(t.allow(), Some(6));
        assert_eq!(t.allow(), None);
        assert_eq!(left_out(0), "");
        assert_eq!(left_out(3), " (3 more since the last such line)");
    }
}
