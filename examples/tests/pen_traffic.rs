//! lb-pen through the binary: what passes through — -H, PROXY protocol, IPv6 in front of
//! IPv4, half-close, large transfers.

mod pen_support;

use std::net::SocketAddr;

use lb_tcp::proxy_protocol::ProxyHeader;
use pen_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn x_forwarded_for_reaches_the_backend_on_every_request() {
    let a = Backend::start("a", Mode::Http).await;
    let port = free_port();
    let _pen = LbPen::start(&strings(&["-H", &port.to_string(), &a.spec()]), lo(port)).await;
    let mut s = connect_from("127.0.0.9".parse().unwrap(), lo(port))
        .await
        .unwrap();
    assert_eq!(ask(&mut s).await.as_deref(), Some("a"));
    assert_eq!(ask(&mut s).await.as_deref(), Some("a"));
    // The start-up probe of LbPen::start is a connection without requests.
    let seen: Vec<_> = a
        .seen()
        .into_iter()
        .filter(|s| !s.heads.is_empty())
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].heads.len(), 2);
    for head in &seen[0].heads {
        assert!(
            head.contains("\r\nX-Forwarded-For: 127.0.0.9\r\n"),
            "{head:?}"
        );
    }
}

#[tokio::test]
async fn xff_first_only_matches_pen() {
    let a = Backend::start("a", Mode::Http).await;
    let port = free_port();
    let args = strings(&["-H", "--xff-first-only", &port.to_string(), &a.spec()]);
    let _pen = LbPen::start(&args, lo(port)).await;
    let mut s = TcpStream::connect(lo(port)).await.unwrap();
    ask(&mut s).await.unwrap();
    ask(&mut s).await.unwrap();
    let seen: Vec<_> = a
        .seen()
        .into_iter()
        .filter(|s| !s.heads.is_empty())
        .collect();
    let heads = &seen[0].heads;
    assert!(heads[0].contains("X-Forwarded-For"));
    assert!(!heads[1].contains("X-Forwarded-For"));
}

async fn ipv6_available() -> bool {
    tokio::net::TcpListener::bind("[::1]:0").await.is_ok()
}

#[tokio::test]
async fn ipv6_listener_in_front_of_an_ipv4_backend() {
    if !ipv6_available().await {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let a = Backend::start("v4", Mode::Http).await;
    // pen's bare form: the last colon separates the port.
    let port = free_port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let pen = LbPen::start(&strings(&[&format!("::1:{port}"), &a.spec()]), v6).await;
    assert_eq!(ask_new(v6).await.as_deref(), Some("v4"));
    drop(pen);
    // The bracketed wildcard form takes IPv6 and IPv4 clients.
    let port = free_port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let _pen = LbPen::start(&strings(&[&format!("[::]:{port}"), &a.spec()]), v6).await;
    assert_eq!(ask_new(v6).await.as_deref(), Some("v4"));
    assert_eq!(ask_new(lo(port)).await.as_deref(), Some("v4"));
}

async fn proxy_protocol(version: &str) {
    let a = Backend::start("a", Mode::Proxy).await;
    let port = free_port();
    let args = strings(&["--proxy-protocol", version, &port.to_string(), &a.spec()]);
    let _pen = LbPen::start(&args, lo(port)).await;
    let mut s = connect_from("127.0.0.5".parse().unwrap(), lo(port))
        .await
        .unwrap();
    let client = s.local_addr().unwrap();
    assert_eq!(ask(&mut s).await.as_deref(), Some("a"));
    // The readiness probe of LbPen::start made a first connection without a header.
    let seen = a.seen();
    let with_header: Vec<_> = seen.iter().filter_map(|s| s.proxied).collect();
    assert!(
        with_header.contains(&ProxyHeader::new(client, lo(port))),
        "{version}: backend saw {with_header:?}, client was {client}"
    );
}

#[tokio::test]
async fn proxy_protocol_v1_is_parsed_by_the_backend() {
    proxy_protocol("v1").await;
}

#[tokio::test]
async fn proxy_protocol_v2_is_parsed_by_the_backend() {
    proxy_protocol("v2").await;
}

#[tokio::test]
async fn half_closed_client_still_receives_the_whole_reply() {
    let a = Backend::start("a", Mode::AfterEof(3 << 20)).await;
    for extra in [&[][..], &["--no-splice"][..]] {
        let port = free_port();
        let mut args = strings(extra);
        args.extend(strings(&[&port.to_string(), &a.spec()]));
        let _pen = LbPen::start(&args, lo(port)).await;
        let mut s = TcpStream::connect(lo(port)).await.unwrap();
        s.write_all(b"the whole request").await.unwrap();
        s.shutdown().await.unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.unwrap();
        assert!(
            reply == pattern(3 << 20, 5),
            "{extra:?}: got {} bytes",
            reply.len()
        );
        assert!(a.seen().iter().any(|s| s.heads == ["the whole request"]));
    }
}

#[tokio::test]
async fn large_transfers_are_byte_exact_both_ways() {
    let echo = Backend::start("echo", Mode::Echo).await;
    for extra in [&[][..], &["--no-splice"][..]] {
        let port = free_port();
        let mut args = strings(extra);
        args.extend(strings(&[&port.to_string(), &echo.spec()]));
        let _pen = LbPen::start(&args, lo(port)).await;
        let s = TcpStream::connect(lo(port)).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let data = pattern(24 << 20, 9);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len(), "{extra:?}");
        assert!(back == data, "{extra:?}: bytes differ");
    }
}

#[tokio::test]
async fn chained_lb_pens_pass_the_client_address_through_proxy_headers() {
    // client 127.0.0.6 -> front (sends v1) -> back (trusts 127.0.0.1, sends v2) -> backend
    let a = Backend::start("a", Mode::Proxy).await;
    let (front, back) = (free_port(), free_port());
    let back_args = strings(&[
        "--accept-proxy-from",
        "127.0.0.1/32",
        "--proxy-protocol",
        "v2",
        &back.to_string(),
        &a.spec(),
    ]);
    let _back = LbPen::start(&back_args, lo(back)).await;
    let front_args = strings(&[
        "--proxy-protocol",
        "v1",
        &front.to_string(),
        &lo(back).to_string(),
    ]);
    let _front = LbPen::start(&front_args, lo(front)).await;
    let mut s = connect_from("127.0.0.6".parse().unwrap(), lo(front))
        .await
        .unwrap();
    let client = s.local_addr().unwrap();
    assert_eq!(ask(&mut s).await.as_deref(), Some("a"));
    let sources: Vec<_> = a
        .seen()
        .iter()
        .filter_map(|s| match s.proxied {
            Some(ProxyHeader::Proxy { source, .. }) => Some(source),
            _ => None,
        })
        .collect();
    assert!(
        sources.contains(&client),
        "backend saw {sources:?}, client was {client}"
    );

    // A peer outside the trusted networks is refused by the back lb-pen.
    let strict = free_port();
    let strict_args = strings(&[
        "--accept-proxy-from",
        "10.0.0.0/8",
        &strict.to_string(),
        &a.spec(),
    ]);
    let _strict = LbPen::start(&strict_args, lo(strict)).await;
    let mut header =
        ProxyHeader::new(client, lo(strict)).to_vec(lb_tcp::proxy_protocol::ProxyVersion::V1);
    header.extend_from_slice(REQUEST);
    let mut s = TcpStream::connect(lo(strict)).await.unwrap();
    let _ = s.write_all(&header).await;
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).await.unwrap_or(0), 0);
}
