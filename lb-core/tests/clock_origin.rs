//! The clock's origin is process-wide, but tests run many tokio runtimes, each with its own
//! paused clock. A runtime whose clock was advanced by hours may take the first reading;
//! another runtime, whose clock is behind it, must still see time pass.
//!
//! In a file of its own: the origin is taken once per process, so this test must be first.

use std::time::Duration;

use lb_core::clock;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

#[test]
fn a_runtime_behind_the_first_reading_still_sees_time_pass() {
    // The first reading, from a clock two hours ahead of the real time.
    paused_runtime().block_on(async {
        tokio::time::advance(Duration::from_secs(2 * 3600)).await;
        clock::now_ms();
    });
    // A fresh runtime: its clock starts at the real time, two hours behind that reading.
    paused_runtime().block_on(async {
        let a = clock::now_ms();
        tokio::time::advance(Duration::from_millis(10)).await;
        let b = clock::now_ms();
        assert_eq!(b - a, 10, "readings {a} and {b}");
        let deadline = clock::deadline_ms(Duration::from_secs(5));
        assert_eq!(clock::remaining(deadline), Duration::from_secs(5));
    });
}
