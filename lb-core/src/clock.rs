//! A monotonic millisecond clock on `tokio::time`, so that tests can pause time.
//!
//! Live state (error-until deadlines) is kept in atomics as milliseconds since a process-wide
//! origin, 30 days before the first reading; readings come from [`tokio::time::Instant`],
//! which follows a paused test clock.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// How far before the first reading the origin lies. Several tokio runtimes in one process
/// (tests, each with its own paused clock) read this clock; a paused clock starts at the real
/// time its runtime was built and may have been advanced by hours when it happens to take
/// the first reading. An origin that far ahead of another runtime's clock would make every
/// reading there saturate to the same value, so the origin is set well before.
const ORIGIN_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Milliseconds since the process-wide origin, never 0 (0 means "no deadline" in state).
pub fn now_ms() -> u64 {
    let origin = *ORIGIN.get_or_init(|| {
        let first = Instant::now();
        first.checked_sub(ORIGIN_MARGIN).unwrap_or(first)
    });
    let ms = Instant::now().saturating_duration_since(origin).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX).saturating_add(1)
}

/// The clock reading `after` from now.
pub fn deadline_ms(after: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
}

/// The time left until a deadline in milliseconds (zero when passed).
pub fn remaining(deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms()))
}
