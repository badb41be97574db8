//! TcpProxy end to end on loopback: failover, emergency, limits, PROXY protocol, shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::{Backend, Balancer, Role};
use lb_tcp::proxy_protocol::{ProxyHeader, ProxyVersion, TrustedSources};
use lb_tcp::{ListenerConfig, ProxyConfig, TcpProxy, WhenFull};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A backend that answers every connection with its name, then echoes until EOF.
async fn named_backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// An address on loopback where nothing listens (bound then closed).
async fn refusing() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn start(proxy: &TcpProxy, listener: ListenerConfig) -> SocketAddr {
    let l = listener.bind().unwrap();
    let addr = l.local_addr().unwrap();
    let p = proxy.clone();
    tokio::spawn(async move { p.serve(l).await });
    addr
}

async fn first_bytes(addr: SocketAddr, n: usize) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

fn lo() -> ListenerConfig {
    ListenerConfig::new("127.0.0.1:0".parse().unwrap())
}

/// A proxy over `backends` with `config`.
fn proxy_over(backends: impl IntoIterator<Item = Backend>, config: ProxyConfig) -> TcpProxy {
    let balancer = Balancer::builder().backends(backends).build().unwrap();
    TcpProxy::new(balancer, config)
}

#[tokio::test]
async fn refused_connect_fails_over_within_the_client_connection() {
    let dead = refusing().await;
    let (b, _t) = named_backend("bbb").await;
    let proxy = proxy_over(
        [Backend::new(dead), Backend::new(b)],
        ProxyConfig::default(),
    );
    let addr = start(&proxy, lo()).await;
    for _ in 0..6 {
        assert_eq!(first_bytes(addr, 3).await.unwrap(), b"bbb");
    }
    let stats = proxy.balancer().stats();
    assert!(stats.backends.iter().any(|s| s.failures >= 1), "{stats:?}");
}

#[tokio::test]
async fn emergency_server_is_used_for_the_first_client() {
    let (e, _t) = named_backend("emg").await;
    let proxy = proxy_over(
        [
            Backend::new(refusing().await),
            Backend::new(refusing().await),
            Backend::new(e).with_role(Role::Emergency),
        ],
        ProxyConfig::default(),
    );
    let addr = start(&proxy, lo()).await;
    assert_eq!(first_bytes(addr, 3).await.unwrap(), b"emg");
}

#[tokio::test]
async fn global_limit_refuses_or_waits() {
    let (b, _t) = named_backend("bbb").await;
    let proxy = proxy_over([Backend::new(b)], ProxyConfig::default().with_max_conns(1));
    let addr = start(&proxy, lo()).await;
    let mut held = TcpStream::connect(addr).await.unwrap();
    let mut three = [0u8; 3];
    held.read_exact(&mut three).await.unwrap();
    // The second client is closed without a byte.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let n = second.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0);
    // Waiting: the third client is served as soon as the first leaves.
    proxy.update_config(|c| c.when_full = WhenFull::Wait(Duration::from_secs(30)));
    let waiting = tokio::spawn(async move { first_bytes(addr, 3).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    assert_eq!(waiting.await.unwrap().unwrap(), b"bbb");
}

#[tokio::test]
async fn proxy_header_sent_and_accepted_only_from_trusted_peers() {
    // Backend that reports the PROXY header it received.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(&buf[..n]).await;
            });
        }
    });
    let proxy = proxy_over(
        [Backend::new(baddr)],
        ProxyConfig::default().with_proxy_protocol(Some(ProxyVersion::V1)),
    );
    let trusted = TrustedSources::new(["127.0.0.1".parse().unwrap()]);
    let addr = start(&proxy, lo().with_accept_proxy(trusted)).await;

    // A trusted peer says the client is 192.0.2.44:1234; the backend sees that.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let claimed = ProxyHeader::new("192.0.2.44:1234".parse().unwrap(), addr);
    let mut hello = claimed.to_vec(ProxyVersion::V2);
    hello.extend_from_slice(b"data");
    s.write_all(&hello).await.unwrap();
    let mut got = vec![0u8; 256];
    let mut len = 0;
    while !got[..len].ends_with(b"data") {
        let n = s.read(&mut got[len..]).await.unwrap();
        assert!(
            n > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&got[..len])
        );
        len += n;
    }
    let text = String::from_utf8_lossy(&got[..len]).to_string();
    assert!(
        text.starts_with("PROXY TCP4 192.0.2.44 127.0.0.1 1234 "),
        "{text}"
    );

    // A listener trusting nobody on loopback refuses the connection.
    let strict = start(
        &proxy,
        lo().with_accept_proxy(TrustedSources::new(["10.0.0.0/8".parse().unwrap()])),
    )
    .await;
    let mut s = TcpStream::connect(strict).await.unwrap();
    let _ = s.write_all(&hello).await;
    let mut buf = Vec::new();
    assert_eq!(s.read_to_end(&mut buf).await.unwrap_or(0), 0);
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_drains() {
    let (b, _t) = named_backend("bbb").await;
    let proxy = proxy_over([Backend::new(b)], ProxyConfig::default());
    let addr = start(&proxy, lo()).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    let mut three = [0u8; 3];
    open.read_exact(&mut three).await.unwrap();
    let p = proxy.clone();
    let shut = tokio::spawn(async move { p.shutdown(Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Still relaying during the drain.
    open.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    open.read_exact(&mut four).await.unwrap();
    assert_eq!(&four, b"ping");
    assert!(!shut.is_finished());
    drop(open);
    assert_eq!(shut.await.unwrap(), 0);
    // No longer accepting: the listening socket is closed.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_closes_connections_left_at_the_deadline() {
    let (b, _t) = named_backend("bbb").await;
    let proxy = proxy_over([Backend::new(b)], ProxyConfig::default());
    let addr = start(&proxy, lo()).await;
    let mut open = TcpStream::connect(addr).await.unwrap();
    let mut three = [0u8; 3];
    open.read_exact(&mut three).await.unwrap();
    assert_eq!(proxy.shutdown(Duration::from_millis(200)).await, 1);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), open.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn one_proxy_serves_several_listeners_and_hands_over_accepted_streams() {
    let (b, _t) = named_backend("bbb").await;
    let proxy = proxy_over([Backend::new(b)], ProxyConfig::default());
    let v4 = start(&proxy, lo()).await;
    let second = start(&proxy, lo()).await;
    assert_eq!(first_bytes(v4, 3).await.unwrap(), b"bbb");
    assert_eq!(first_bytes(second, 3).await.unwrap(), b"bbb");
    if let Ok(l6) = ListenerConfig::new("[::1]:0".parse().unwrap()).bind() {
        let a6 = l6.local_addr().unwrap();
        let p = proxy.clone();
        tokio::spawn(async move { p.serve(l6).await });
        assert_eq!(first_bytes(a6, 3).await.unwrap(), b"bbb");
    } else {
        eprintln!("IPv6 part skipped: no IPv6 loopback");
    }
    // An embedding program accepts itself and hands the stream over.
    let own = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own_addr = own.local_addr().unwrap();
    let p = proxy.clone();
    let handled = tokio::spawn(async move {
        let (s, peer) = own.accept().await.unwrap();
        p.handle(s, peer).await.unwrap()
    });
    let mut c = TcpStream::connect(own_addr).await.unwrap();
    let mut three = [0u8; 3];
    c.read_exact(&mut three).await.unwrap();
    c.write_all(b"12345").await.unwrap();
    let mut five = [0u8; 5];
    c.read_exact(&mut five).await.unwrap();
    drop(c);
    let stats = handled.await.unwrap();
    assert_eq!((stats.bytes_in, stats.bytes_out, stats.attempts), (5, 8, 1));
    let total: u64 = proxy.balancer().stats().bytes_in;
    assert!(total >= 5);
}
