//! Passive health: ejection after failures seen in real traffic.
//!
//! After `failures` consecutive failures a backend is put in error for `blacklist` (pen's
//! `-b`, 30 s by default; Apache's `retry`); each further ejection without a success in
//! between doubles the time, up to `max_backoff`. A success ends the streak and the error
//! state. Unless `eject_last` is set, the last usable backend is never ejected: failing
//! slowly beats failing everything.

use std::time::Duration;

/// Settings of passive health.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PassiveConfig {
    /// Consecutive failures that eject a backend; 0 turns passive health off.
    pub failures: u32,
    /// How long an ejected backend stays in error the first time.
    pub blacklist: Duration,
    /// The longest time in error after repeated ejections (at least `blacklist`).
    pub max_backoff: Duration,
    /// Whether the last usable backend may be ejected.
    pub eject_last: bool,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            failures: 1,
            blacklist: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            eject_last: false,
        }
    }
}

impl PassiveConfig {
    /// Passive health off: failures are counted but never eject.
    pub fn off() -> Self {
        PassiveConfig {
            failures: 0,
            ..PassiveConfig::default()
        }
    }

    /// Ejects after `failures` consecutive failures for `blacklist` (no backoff growth).
    pub fn new(failures: u32, blacklist: Duration) -> Self {
        PassiveConfig {
            failures,
            blacklist,
            max_backoff: blacklist,
            eject_last: false,
        }
    }

    /// Lets repeated ejections double the time in error up to `max`.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Allows ejecting the last usable backend.
    pub fn with_eject_last(mut self, eject_last: bool) -> Self {
        self.eject_last = eject_last;
        self
    }

    /// How long the `n`th consecutive ejection (0-based) lasts.
    pub fn backoff(&self, n: u32) -> Duration {
        let max = self.max_backoff.max(self.blacklist);
        self.blacklist
            .checked_mul(1u32 << n.min(20))
            .unwrap_or(max)
            .min(max)
    }
}
