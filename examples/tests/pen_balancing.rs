//! lb-pen through the binary: how connections are spread over real loopback backends.

mod pen_support;

use std::time::Duration;

use pen_support::*;

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let b: Vec<_> = backends(["a", "b", "c"]).await;
    let port = free_port();
    let mut args = strings(&["-r", &port.to_string()]);
    args.extend(b.iter().map(Backend::spec));
    let _pen = LbPen::start(&args, lo(port)).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(ask_new(lo(port)).await);
    }
    let t = tally(&answers);
    assert_eq!(t.get("a"), Some(&10), "{t:?}");
    assert_eq!(t.get("b"), Some(&10), "{t:?}");
    assert_eq!(t.get("c"), Some(&10), "{t:?}");
}

async fn backends<const N: usize>(names: [&str; N]) -> Vec<Backend> {
    let mut v = Vec::new();
    for n in names {
        v.push(Backend::start(n, Mode::Http).await);
    }
    v
}

#[tokio::test]
async fn weights_share_concurrent_connections() {
    let b = backends(["light", "heavy"]).await;
    let port = free_port();
    let args = strings(&[
        "-r",
        "-W",
        &port.to_string(),
        &format!("{}:0:0:1", b[0].spec()),
        &format!("{}:0:0:3", b[1].spec()),
    ]);
    let _pen = LbPen::start(&args, lo(port)).await;
    // Hold every connection open: weight mode balances connections per unit of weight.
    let mut held = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(lo(port)).await.unwrap();
        answers.push(ask(&mut s).await);
        held.push(s);
    }
    let t = tally(&answers);
    assert_eq!(t.get("light"), Some(&2), "{t:?}");
    assert_eq!(t.get("heavy"), Some(&6), "{t:?}");
}

#[tokio::test]
async fn hash_keeps_each_client_address_on_one_server() {
    let b = backends(["a", "b", "c"]).await;
    let port = free_port();
    // -r: no client table, so only the hash can keep clients in place.
    let mut args = strings(&["-r", "-h", &port.to_string()]);
    args.extend(b.iter().map(Backend::spec));
    let _pen = LbPen::start(&args, lo(port)).await;
    let mut used = std::collections::BTreeSet::new();
    for last in 2..18 {
        let src = format!("127.0.0.{last}");
        let first = ask_from(&src, lo(port)).await.expect("answer");
        for _ in 0..3 {
            assert_eq!(
                ask_from(&src, lo(port)).await.as_deref(),
                Some(first.as_str()),
                "client {src}"
            );
        }
        used.insert(first);
    }
    assert!(
        used.len() >= 2,
        "16 client addresses all hashed to {used:?}"
    );
}

#[tokio::test]
async fn client_table_keeps_clients_and_tracking_expires_them() {
    let b = backends(["a", "b"]).await;
    let port = free_port();
    let mut args = strings(&["-T", "1", &port.to_string()]);
    args.extend(b.iter().map(Backend::spec));
    let _pen = LbPen::start(&args, lo(port)).await;
    let first = ask_from("127.0.0.7", lo(port)).await.expect("answer");
    for _ in 0..4 {
        assert_eq!(
            ask_from("127.0.0.7", lo(port)).await.as_deref(),
            Some(first.as_str())
        );
    }
    // Another client takes the next server in round robin.
    let other = ask_from("127.0.0.8", lo(port)).await.expect("answer");
    assert_ne!(other, first);
    // After the tracking time (-T 1) 127.0.0.8's entry has expired: it is scheduled
    // anew, and round robin (which gave `first`, then `other`) now gives `first`.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = ask_from("127.0.0.8", lo(port)).await.expect("answer");
    assert_eq!(
        again, first,
        "expired client 127.0.0.8 should be re-balanced to the next server"
    );
}
