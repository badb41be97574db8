//! The monitor with the built-in checks against real loopback listeners and real scripts.
//! Real time: waits are bounded and generous, nothing asserts on durations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_core::health::{ExecCheck, Monitor, MonitorConfig, TcpCheck};
use lb_core::{Backend, BackendId, Balancer, EventKind, Health, Subscription};
use tokio::net::TcpListener;

/// Waits (at most 20 s) for an event of `id` matching `want`.
async fn wait_for(events: &mut Subscription, id: BackendId, want: EventKind) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if e.backend == id && e.kind == want {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no {want:?} event for {id}");
}

fn fast() -> MonitorConfig {
    MonitorConfig::default()
        .with_interval(Duration::from_millis(50))
        .with_timeout(Duration::from_secs(5))
        .with_thresholds(2, 2)
}

#[tokio::test]
async fn tcp_check_follows_a_listener_going_away_and_coming_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let lb = Balancer::builder()
        .backend(Backend::new(addr))
        .build()
        .unwrap();
    let id = lb.members()[0].id();
    let mut events = lb.subscribe();
    let monitor = Monitor::new(lb.clone(), TcpCheck::new(), fast())
        .unwrap()
        .spawn();

    drop(listener);
    wait_for(&mut events, id, EventKind::Health(Health::Down)).await;
    let st = monitor.status_of(id).unwrap();
    assert_eq!(st.health, Health::Down);
    assert!(st.failures >= 2, "{st:?}");
    assert!(
        st.last_error
            .as_ref()
            .unwrap()
            .to_string()
            .contains(&addr.to_string()),
        "{st:?}"
    );

    let _listener = TcpListener::bind(addr).await.unwrap();
    wait_for(&mut events, id, EventKind::Health(Health::Up)).await;
    assert_eq!(lb.stats().usable, 1);
    monitor.shutdown().await;
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn exec_check_exit_codes_drive_health_and_weight() {
    let dir = TempDir(std::env::temp_dir().join(format!("lb-core-monitor-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let state = dir.0.join("status");
    let script = dir.0.join("check.sh");
    // keepalived misc_dynamic: the status file holds the exit code to return.
    std::fs::write(&script, "#!/bin/sh\nexit \"$(cat \"$STATUS_FILE\")\"\n").unwrap();
    // Replaced atomically, so the script never reads a half-written file.
    let set = |code: &str| {
        let tmp = dir.0.join("status.tmp");
        std::fs::write(&tmp, code).unwrap();
        std::fs::rename(&tmp, &state).unwrap();
    };
    set("5");

    let lb = Balancer::builder()
        .backend(Backend::new(SocketAddr::from(([192, 0, 2, 1], 80))))
        .build()
        .unwrap();
    let id = lb.members()[0].id();
    let mut events = lb.subscribe();
    let check = ExecCheck::new("/bin/sh")
        .arg(&script)
        .env("STATUS_FILE", &state)
        .dynamic_weight(true);
    let monitor = Monitor::new(lb.clone(), check, fast()).unwrap().spawn();

    wait_for(&mut events, id, EventKind::Weight(3)).await;
    assert_eq!(lb.get(id).unwrap().backend().weight(), 3);

    set("1");
    wait_for(&mut events, id, EventKind::Health(Health::Down)).await;
    assert_eq!(
        monitor
            .status_of(id)
            .unwrap()
            .last_error
            .unwrap()
            .to_string(),
        "health check got an unexpected answer: /bin/sh exited with status 1"
    );

    set("0");
    wait_for(&mut events, id, EventKind::Health(Health::Up)).await;
    assert_eq!(
        lb.get(id).unwrap().backend().weight(),
        3,
        "exit 0 keeps the weight"
    );
    monitor.shutdown().await;
}
