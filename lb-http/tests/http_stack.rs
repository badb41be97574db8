//! The lb-http stack in process, over real loopback sockets: the lease is held while a
//! response streams, and a member's `max` queues then refuses with 503.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use lb_core::Balancer;
use lb_http::member::MemberSpec;
use lb_http::router::{Router, SharedRouter, Site, SiteConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Chunks = std::sync::Arc<tokio::sync::Mutex<Option<mpsc::Receiver<Bytes>>>>;

/// Serves `svc` with hyper's HTTP/1 server on a loopback port (a clone of it per
/// connection) and returns the address.
async fn hyper_backend<S, B>(svc: S) -> std::net::SocketAddr
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc.clone()),
            );
        }
    });
    addr
}

/// A backend whose first response streams what the test sends on the channel.
async fn streaming_backend() -> (std::net::SocketAddr, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let chunks: Chunks = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let svc = hyper::service::service_fn(move |_req| {
        let chunks = chunks.clone();
        async move {
            let rx = chunks.lock().await.take();
            let body = match rx {
                Some(rx) => {
                    let s = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                    });
                    StreamBody::new(s).boxed()
                }
                None => http_body_util::Full::new(Bytes::from_static(b"plain"))
                    .map_err(|e| match e {})
                    .boxed(),
            };
            Ok::<_, Infallible>(hyper::Response::new(body))
        }
    });
    (hyper_backend(svc).await, tx)
}

async fn serve(balancer: Balancer) -> std::net::SocketAddr {
    serve_with(balancer, SiteConfig::default()).await
}

/// lb-http's server on loopback with one site, `/`, over `balancer`.
async fn serve_with(balancer: Balancer, config: SiteConfig) -> std::net::SocketAddr {
    let router = SharedRouter::new(Router::new(vec![Site::new("/", balancer, config)]));
    serve_service(router, Default::default()).await
}

/// lb-http's server on loopback with one site, `/`, over `balancer`, configured as `config`.
async fn serve_configured(
    balancer: Balancer,
    config: lb_http::server::ServerConfig,
) -> std::net::SocketAddr {
    let router = SharedRouter::new(Router::new(vec![Site::new(
        "/",
        balancer,
        SiteConfig::default(),
    )]));
    serve_service(router, config).await
}

/// lb-http's server on loopback, serving `svc` as `config` says, until the test ends.
async fn serve_service<S, B>(svc: S, config: lb_http::server::ServerConfig) -> std::net::SocketAddr
where
    S: tower::Service<http::Request<lb_http::body::ProxyBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: Into<lb_http::BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<lb_http::BoxError>,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(lb_http::server::serve(
        l,
        svc,
        config,
        std::future::pending(),
    ));
    addr
}

/// The backend of member URL `url` (with its `key=value` settings, if any).
fn member(url: &str) -> lb_core::Backend {
    url.parse::<MemberSpec>().unwrap().to_backend().unwrap()
}

/// A balancer over the one member at `url`.
fn one_member(url: &str) -> Balancer {
    Balancer::builder().backend(member(url)).build().unwrap()
}

/// HAProxy's `first` over two members: every request goes to the first member first, and
/// a retry would pick it again if it were not excluded.
fn first_of(members: [std::net::SocketAddr; 2]) -> Balancer {
    let backends = members.map(|a| member(&format!("http://{a}")));
    Balancer::builder()
        .backends(backends)
        .scheduler("first".parse::<lb_core::scheduler::AnyScheduler>().unwrap())
        .build()
        .unwrap()
}

/// Retry on 503, reading bodies up to `max_replay_body` first.
fn retry_on_503(max_replay_body: u64) -> SiteConfig {
    SiteConfig {
        retry: Some(lb_http::retry::RetryConfig {
            statuses: vec![503],
            max_replay_body,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn send(addr: std::net::SocketAddr) -> hyper::Response<hyper::body::Incoming> {
    send_request(
        addr,
        hyper::Request::get("/")
            .header("host", "t")
            .body(lb_http::body::empty())
            .unwrap(),
    )
    .await
}

/// Sends `req` on a new HTTP/1.1 connection to `addr`.
async fn send_request(
    addr: std::net::SocketAddr,
    req: hyper::Request<lb_http::body::ProxyBody>,
) -> hyper::Response<hyper::body::Incoming> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx.send_request(req).await.unwrap()
}

#[tokio::test]
async fn lease_is_held_until_the_response_body_ends() {
    let (backend, chunks) = streaming_backend().await;
    let balancer = one_member(&format!("http://{backend}"));
    let addr = serve(balancer.clone()).await;
    let resp = send(addr).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    chunks.send(Bytes::from_static(b"first")).await.unwrap();
    let f = body.frame().await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "first");
    // Headers are done, the body is streaming: the member is still busy.
    assert_eq!(balancer.stats().active, 1);
    chunks.send(Bytes::from_static(b"second")).await.unwrap();
    drop(chunks);
    let mut rest = Vec::new();
    while let Some(f) = body.frame().await {
        rest.extend_from_slice(&f.unwrap().into_data().unwrap());
    }
    assert_eq!(rest, b"second");
    let mut released = false;
    for _ in 0..100 {
        if balancer.stats().active == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(released, "lease not released after the body ended");
    let m = &balancer.stats().backends[0];
    assert_eq!(m.bytes_in, 11, "bytes received from the member are counted");
}

#[tokio::test]
async fn member_max_queues_then_refuses_with_503() {
    let (backend, chunks) = streaming_backend().await;
    let balancer = one_member(&format!("http://{backend},max=1"));
    let addr = serve(balancer.clone()).await;
    // The first request holds the only slot while its body streams.
    let first = send(addr).await;
    assert_eq!(first.status(), 200);
    // The second waits for the queue timeout (1 s), then gets 503.
    let second = send(addr).await;
    assert_eq!(second.status(), 503);
    let text = second.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("busy"), "{text:?}");
    drop(chunks);
    drop(first);
}

/// A backend answering every request with `status`.
async fn status_backend(status: u16) -> std::net::SocketAddr {
    counting_status_backend(status).await.0
}

/// A backend answering `status`, and the number of requests it received.
async fn counting_status_backend(
    status: u16,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    let svc = hyper::service::service_fn(move |_req| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut r = hyper::Response::new(lb_http::body::full(status.to_string()));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(r)
        }
    });
    (hyper_backend(svc).await, hits)
}

#[tokio::test]
async fn retry_sends_idempotent_requests_to_another_member() {
    let (bad, bad_hits) = counting_status_backend(503).await;
    let (good, good_hits) = counting_status_backend(200).await;
    let balancer = first_of([bad, good]);
    let addr = serve_with(balancer.clone(), retry_on_503(0)).await;
    for _ in 0..6 {
        assert_eq!(send(addr).await.status(), 200);
    }
    // Both members were used: the 503s were retried, not avoided.
    let totals: Vec<u64> = balancer.stats().backends.iter().map(|b| b.total).collect();
    assert!(totals.iter().all(|&t| t > 0), "{totals:?}");
    // Each member's count is the requests it received: a retry skips the member that
    // answered 503 without counting a request on it.
    let hits = [bad_hits, good_hits].map(|h| h.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(totals, hits.to_vec());
    assert_eq!(hits, [6, 6]);
}

#[tokio::test]
async fn retry_covers_lbs_own_502_for_idempotent_requests_only() {
    use std::sync::atomic::Ordering::SeqCst;
    let retry_on = |statuses: Vec<u16>| SiteConfig {
        retry: Some(lb_http::retry::RetryConfig {
            statuses,
            ..Default::default()
        }),
        ..Default::default()
    };
    let request = |method: &str| {
        hyper::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "t")
            .body(lb_http::body::empty())
            .unwrap()
    };
    for (method, statuses, want) in [
        ("GET", vec![502], 200),
        ("PUT", vec![502, 503], 200),
        ("POST", vec![502], 502),
        ("GET", vec![503], 502),
    ] {
        // The first member reads the request and closes without answering.
        let (closer, _, closer_requests) =
            raw_backend_scripted("127.0.0.1:0", |_| b"", true, false).await;
        let (good, good_hits) = counting_status_backend(200).await;
        let addr = serve_with(first_of([closer, good]), retry_on(statuses.clone())).await;
        let (status, _) = status_and_body(addr, request(method)).await;
        assert_eq!(status, want, "{method} with retries on {statuses:?}");
        // The request reached the closing member once, and the second only on a retry.
        assert_eq!(closer_requests.load(SeqCst), 1, "{method} {statuses:?}");
        let retried = want == 200;
        assert_eq!(
            good_hits.load(SeqCst),
            u64::from(retried),
            "{method} {statuses:?}"
        );
    }
}

/// A backend answering `status` with the request's method and body, and counting the
/// bodies it received.
async fn echo_backend(
    status: u16,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let method = req.method().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            log.lock().unwrap().push(body.clone());
            let mut r = hyper::Response::new(lb_http::body::full(format!("{method} {body}")));
            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(r)
        }
    });
    (hyper_backend(svc).await, seen)
}

#[tokio::test]
async fn retry_sends_a_small_request_body_again_and_streams_a_large_one_once() {
    let (bad, bad_seen) = echo_backend(503).await;
    let (good, good_seen) = echo_backend(200).await;
    let addr = serve_with(first_of([bad, good]), retry_on_503(1024)).await;
    let put = |body: String| async move {
        let resp = send_request(
            addr,
            hyper::Request::put("/")
                .header("host", "t")
                .body(lb_http::body::full(body))
                .unwrap(),
        )
        .await;
        let status = resp.status().as_u16();
        let body = body_of(resp).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // Small: the 503 is retried on the other member with the same body.
    assert_eq!(
        put("small body".into()).await,
        (200, "PUT small body".into())
    );
    assert_eq!(*bad_seen.lock().unwrap(), ["small body"]);
    assert_eq!(*good_seen.lock().unwrap(), ["small body"]);
    // Larger than max_replay_body: streamed once, the 503 goes back to the client.
    let large = "x".repeat(4096);
    let (status, _) = put(large.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(bad_seen.lock().unwrap().len(), 2);
    assert_eq!(bad_seen.lock().unwrap()[1], large);
    assert_eq!(good_seen.lock().unwrap().len(), 1);
}

/// An HTTP/2 client (prior knowledge, h2c) connected to `addr`.
async fn h2_client(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<lb_http::body::ProxyBody> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}

#[tokio::test]
async fn http2_clients_are_served() {
    let good = status_backend(200).await;
    let balancer = one_member(&format!("http://{good}"));
    let addr = serve(balancer).await;
    let mut tx = h2_client(addr).await;
    for _ in 0..3 {
        let req = hyper::Request::get(format!("http://{addr}/"))
            .body(lb_http::body::empty())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
    }
}

/// RFC 9110 section 8.6: no Content-Length in a 204, which a backend may send anyway (with
/// a body, even): HTTP/2 clients get none, as HTTP/1 ones do.
#[tokio::test]
async fn a_204_reaches_http2_clients_without_content_length() {
    let (addr, _) = behind_raw_backend(
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
        false,
        false,
    )
    .await;
    let mut tx = h2_client(addr).await;
    let req = hyper::Request::get(format!("http://{addr}/"))
        .body(lb_http::body::empty())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers().get(http::header::CONTENT_LENGTH), None);
    assert_eq!(body_of(resp).await, "");
}

#[tokio::test]
async fn http2_heads_are_checked_as_http1_heads_are() {
    let good = status_backend(200).await;
    let addr = serve(one_member(&format!("http://{good}"))).await;
    let mut tx = h2_client(addr).await;
    let mut send = async |uri: &str, fields: &[(&str, String)]| {
        let mut req = hyper::Request::get(uri);
        for (k, v) in fields {
            req = req.header(*k, v.as_str());
        }
        let resp = tx
            .send_request(req.body(lb_http::body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(send("http://a.example/", &[]).await.0, 200);
    let same = [("host", "A.example".to_string())];
    assert_eq!(send("http://a.example/", &same).await.0, 200);
    // A Host naming another authority than :authority (RFC 9113 section 8.3.1).
    let other = [("host", "b.example".to_string())];
    let (status, body) = send("http://a.example/", &other).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Host b.example differs from :authority a.example\n")
    );
    let (status, body) = send("http://user@a.example/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (400, ":authority user@a.example holds userinfo\n")
    );
    let (status, body) = send("http://a.example:99999/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (400, ":authority a.example:99999 has an invalid port\n")
    );
    // More fields than the limit (100 by default): 431, as over HTTP/1.1.
    let many: Vec<_> = (0..150).map(|i| ("x-field", i.to_string())).collect();
    let (status, body) = send("http://a.example/", &many).await;
    assert_eq!(
        (status, body.as_str()),
        (431, "more than 100 header fields\n")
    );
    // The connection goes on.
    assert_eq!(send("http://a.example/", &[]).await.0, 200);
}

/// An address, and the count of connections accepted by the backend behind it.
type AddrAndAccepted = (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
);

/// A raw backend on `bind`: counts the connections it accepts and answers each request
/// with `answer`; when `close_after_each` it closes the connection after every response.
async fn raw_backend(bind: &str, answer: &'static [u8], close_after_each: bool) -> AddrAndAccepted {
    raw_backend_paced(bind, answer, close_after_each, false).await
}

/// [`raw_backend`], writing its answer one byte at a time when `trickle`: each byte its own
/// TCP segment, so the proxy meets every line and field split at every point.
async fn raw_backend_paced(
    bind: &str,
    answer: &'static [u8],
    close_after_each: bool,
    trickle: bool,
) -> AddrAndAccepted {
    let (addr, accepted, _) =
        raw_backend_scripted(bind, move |_| answer, close_after_each, trickle).await;
    (addr, accepted)
}

/// [`raw_backend_paced`], answering the `n`th request on a connection (from 0) with
/// `answer(n)`; also returns the count of requests it answered.
async fn raw_backend_scripted(
    bind: &str,
    answer: impl Fn(usize) -> &'static [u8] + Copy + Send + 'static,
    close_after_each: bool,
    trickle: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (count, answered) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_nodelay(true);
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut held = Vec::new();
                let mut on_conn = 0;
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    held.extend_from_slice(&buf[..n]);
                    // Requests here have no body: one answer per complete head.
                    while let Some(end) = held.windows(4).position(|w| w == b"\r\n\r\n") {
                        held.drain(..end + 4);
                        answered.fetch_add(1, Ordering::SeqCst);
                        let answer = answer(on_conn);
                        on_conn += 1;
                        let pieces: Vec<&[u8]> = if trickle {
                            answer.chunks(1).collect()
                        } else {
                            vec![answer]
                        };
                        for piece in pieces {
                            if s.write_all(piece).await.is_err() {
                                return;
                            }
                            if trickle {
                                // Long enough for the proxy to read each byte alone.
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        if close_after_each {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted, requests)
}

/// lb-http's server over one [`raw_backend_paced`] on loopback: the server's address and
/// the backend's count of accepted connections.
async fn behind_raw_backend(
    answer: &'static [u8],
    close_after_each: bool,
    trickle: bool,
) -> AddrAndAccepted {
    let (backend, accepted) =
        raw_backend_paced("127.0.0.1:0", answer, close_after_each, trickle).await;
    (
        serve(one_member(&format!("http://{backend}"))).await,
        accepted,
    )
}

/// The whole body of `resp`.
async fn body_of(resp: hyper::Response<hyper::body::Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let (lb, accepted) = behind_raw_backend(OK, false, false).await;
    for _ in 0..20 {
        let resp = send(lb).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_of(resp).await, "ok");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "20 requests one after another should share one backend connection"
    );
}

#[tokio::test]
async fn a_backend_closing_kept_alive_connections_costs_no_request() {
    // The backend says nothing about closing, then closes after each response: the pooled
    // connection is dead when the next request comes, which must go out on a new one.
    let (lb, accepted) = behind_raw_backend(OK, true, false).await;
    for i in 0..10 {
        let resp = send(lb).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(body_of(resp).await, "ok");
        // Let the close reach the proxy (or not: both orders must work).
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_response_abandoned_midway_does_not_return_its_connection() {
    let (backend, chunks) = streaming_backend().await;
    let lb = serve(one_member(&format!("http://{backend}"))).await;
    let resp = send(lb).await;
    let mut body = resp.into_body();
    chunks.send(Bytes::from_static(b"part")).await.unwrap();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "part");
    // The client goes away with the backend's response unfinished.
    drop(body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The next request is answered on another backend connection, not queued behind (or
    // mixed into) the unfinished one.
    let resp = tokio::time::timeout(Duration::from_secs(5), send(lb))
        .await
        .expect("second request hung");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_of(resp).await, "plain");
}

#[tokio::test]
async fn members_named_by_host_name_or_ipv6_literal_are_reached() {
    let (v4, _) = raw_backend("127.0.0.1:0", OK, false).await;
    let (v6, _) = raw_backend("[::1]:0", OK, false).await;
    for url in [
        format!("http://localhost:{}", v4.port()),
        format!("http://[::1]:{}", v6.port()),
    ] {
        let lb = serve(one_member(&url)).await;
        let resp = send(lb).await;
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(body_of(resp).await, "ok");
    }
}

/// Sends a `method` request for `/` through the balancer at `lb`, on a new connection.
async fn send_method(
    lb: std::net::SocketAddr,
    method: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri("/")
        .header("host", "t");
    if method == "POST" {
        req = req.header("content-length", "0");
    }
    send_request(lb, req.body(lb_http::body::empty()).unwrap()).await
}

#[tokio::test]
async fn backend_responses_are_read_by_their_framing() {
    // (backend's answer, backend closes after it, body the client gets, backend
    // connections for three requests)
    let cases: [(&'static [u8], bool, &str, usize); 7] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            false,
            "hello world",
            1,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
            "abc",
            1,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
            "ok",
            1,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false, "", 1),
        // Neither Content-Length nor chunked: the body ends when the connection does.
        (
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            true,
            "until close",
            3,
        ),
        (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            true,
            "ok",
            3,
        ),
        // An HTTP/1.0 backend that does not say keep-alive closes: not reused, even if it
        // left the connection open.
        (
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
            "ok",
            3,
        ),
    ];
    for (answer, close, body, conns) in cases {
        let what = String::from_utf8_lossy(answer);
        let (lb, accepted) = behind_raw_backend(answer, close, false).await;
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(5), async {
                let resp = send(lb).await;
                assert!(resp.status().is_success(), "{what}");
                body_of(resp).await
            })
            .await
            .expect("the response should end");
            assert_eq!(got, body, "{what}");
        }
        let accepted = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(accepted, conns, "backend connections for {what}");
    }
}

#[tokio::test]
async fn a_response_to_head_has_no_body_whatever_its_length_says() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
    let (lb, accepted) = behind_raw_backend(answer, false, false).await;
    for _ in 0..3 {
        let resp = tokio::time::timeout(Duration::from_secs(5), async {
            let resp = send_method(lb, "HEAD").await;
            let length = resp.headers().get("content-length").cloned();
            let body = body_of(resp).await;
            (length, body)
        })
        .await
        .expect("the response should end");
        assert_eq!(resp.0.unwrap(), "100");
        assert!(resp.1.is_empty());
    }
    // Had the proxy waited for 100 bytes, the second request would have hung or been
    // read as the first one's body.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_backend_response_heads_give_502() {
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let answers: [&'static [u8]; 9] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        b"nonsense\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-le",
        huge,
    ];
    for answer in answers {
        let what = String::from_utf8_lossy(&answer[..answer.len().min(80)]).into_owned();
        let (lb, _) = behind_raw_backend(answer, true, false).await;
        let resp = send(lb).await;
        assert_eq!(resp.status(), 502, "{what}");
    }
}

#[tokio::test]
async fn a_malformed_or_cut_backend_body_cuts_the_response() {
    let answers: [&'static [u8]; 4] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    ];
    for answer in answers {
        let what = String::from_utf8_lossy(answer);
        let (lb, _) = behind_raw_backend(answer, true, false).await;
        let s = TcpStream::connect(lb).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/")
            .header("host", "t")
            .body(lb_http::body::empty())
            .unwrap();
        // The proxy may have the bad part before it sends the head (then the client gets
        // no response at all) or after (then the body is cut): never a complete response.
        let complete = tokio::time::timeout(Duration::from_secs(5), async {
            match tx.send_request(req).await {
                Ok(resp) => resp.into_body().collect().await.is_ok(),
                Err(_) => false,
            }
        })
        .await
        .expect("the response should end");
        assert!(!complete, "a complete response was passed on for {what}");
    }
}

#[tokio::test]
async fn a_request_that_may_not_be_repeated_is_not_sent_on_a_closed_connection() {
    // A POST without a body is not repeated on another connection if the first one does
    // not answer: so it must not be sent on a kept-alive connection the backend closed.
    let (lb, accepted) = behind_raw_backend(OK, true, false).await;
    for i in 0..5 {
        let resp = send_method(lb, "POST").await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(body_of(resp).await, "ok");
        // Time for the backend's close to arrive.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_member_that_cannot_be_reached_passes_the_request_on_unchanged() {
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // The backend answers with the forwarding fields it got.
    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
        let fields = ["x-forwarded-for", "via"].map(|name| {
            let values: Vec<_> = req.headers().get_all(name).iter().collect();
            format!("{name}={values:?}")
        });
        Ok::<_, Infallible>(hyper::Response::new(lb_http::body::full(fields.join(" "))))
    });
    let alive = hyper_backend(svc).await;
    let lb = serve(first_of([dead, alive])).await;
    for method in ["GET", "POST", "DELETE"] {
        let resp = send_method(lb, method).await;
        assert_eq!(resp.status(), 200, "{method}");
        let body = body_of(resp).await;
        // Forwarded once: the attempt on the dead member did not leave its fields behind.
        assert_eq!(
            body, r#"x-forwarded-for=["127.0.0.1"] via=["1.1 lb"]"#,
            "{method}"
        );
    }
}

#[tokio::test]
async fn responses_arriving_a_byte_at_a_time_are_read_whole() {
    let cases: [(&'static [u8], &str); 3] = [
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n1a\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nx-sum: 9\r\n\r\n",
            "hello abcdefghijklmnopqrstuvwxy",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nx-pad: aaaaaaaaaaaa\r\n\r\nhello world",
            "hello world",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "abc",
        ),
    ];
    for (answer, want) in cases {
        let what = String::from_utf8_lossy(answer);
        let (lb, _) = behind_raw_backend(answer, false, true).await;
        // Twice: the second request reuses the connection, so the first response must have
        // been read exactly to its end.
        for _ in 0..2 {
            let got = tokio::time::timeout(Duration::from_secs(10), async {
                let resp = send(lb).await;
                assert_eq!(resp.status(), 200, "{what}");
                body_of(resp).await
            })
            .await
            .expect("the response should end");
            assert_eq!(got, want, "{what}");
        }
    }
}

/// The proxy's response carries none of the request's extensions (the direct path reuses
/// the request's extension map for the response, emptied).
#[tokio::test]
async fn a_response_carries_none_of_the_request_extensions() {
    use tower::ServiceExt;
    #[derive(Clone, Debug, PartialEq)]
    struct Marker(u32);
    let (addr, _) = raw_backend(
        "127.0.0.1:0",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
    )
    .await;
    let proxy = lb_http::proxy::Proxy::new(lb_http::proxy::ProxyConfig::default());
    for _ in 0..2 {
        let mut req = http::Request::new(lb_http::body::empty());
        req.extensions_mut()
            .insert(lb_http::proxy::Target::from_url(&format!("http://{addr}")).unwrap());
        req.extensions_mut().insert(Marker(7));
        req.extensions_mut().insert(lb_http::headers::ClientInfo {
            addr: "192.0.2.1:5000".parse().unwrap(),
            tls: false,
        });
        let resp = proxy.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.extensions().get::<Marker>().is_none());
        assert!(
            resp.extensions()
                .get::<lb_http::headers::ClientInfo>()
                .is_none()
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }
}

/// A request's header map is kept for a later response's fields on the same thread: none of
/// its fields may show in either response, only the backend's.
#[tokio::test]
async fn a_response_carries_none_of_the_request_fields() {
    use tower::ServiceExt;
    let (addr, _) = raw_backend(
        "127.0.0.1:0",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-backend: 1\r\n\r\nok",
        false,
    )
    .await;
    let proxy = lb_http::proxy::Proxy::new(lb_http::proxy::ProxyConfig::default());
    for i in 0..3 {
        let mut req = http::Request::get("/")
            .header("host", "t")
            .header("authorization", format!("Bearer client-{i}"))
            .header("cookie", format!("session={i}"))
            .body(lb_http::body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(lb_http::proxy::Target::from_url(&format!("http://{addr}")).unwrap());
        let resp = proxy.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let names: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["content-length", "x-backend", "via"],
            "round {i}: {:?}",
            resp.headers()
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }
}

/// Hop-by-hop fields of a backend's response (RFC 9110 section 7.6.1), and the fields its
/// Connection names, do not reach the client; the rest do, and the connection is reused.
#[tokio::test]
async fn hop_by_hop_fields_of_a_response_are_removed() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Secret\r\n\
        X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
        Upgrade: h2c\r\nConnection: x-other\r\nX-Other: 2\r\nX-Kept: yes\r\nClose: kept\r\n\
        content-length: 2\r\n\r\nok";
    let (lb, accepted) = behind_raw_backend(ANSWER, false, false).await;
    for _ in 0..3 {
        let resp = send(lb).await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "x-other",
        ] {
            assert!(!h.contains_key(gone), "{gone} reached the client: {h:?}");
        }
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["close"], "kept", "close names no field");
        assert_eq!(h["via"], "1.1 lb");
        assert_eq!(body_of(resp).await, "ok");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An HTTP/2 client's cookies, sent as separate fields, reach an HTTP/1.1 backend as one
/// `Cookie` field (RFC 9113 section 8.2.3), on both the direct path (no body) and hyper's
/// client (a body).
#[tokio::test]
async fn http2_cookie_fields_are_joined_for_the_backend() {
    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
        let cookies: Vec<String> = req
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        Ok::<_, Infallible>(hyper::Response::new(lb_http::body::full(cookies.join("|"))))
    });
    let backend = hyper_backend(svc).await;
    let addr = serve(one_member(&format!("http://{backend}"))).await;
    let mut tx = h2_client(addr).await;
    for body in ["", "with a body"] {
        let req = hyper::Request::post(format!("http://{addr}/"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("cookie", "c=3")
            .body(lb_http::body::full(body))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(body_of(resp).await, "a=1; b=2; c=3", "body {body:?}");
    }
}

/// HAProxy's default (without `option abortonclose`): a client that shuts its sending side
/// down after its request still gets the response. With `abort_on_close` the request is given
/// up when the client's end closes, and the connection closes without a response.
#[tokio::test]
async fn a_client_that_half_closes_gets_its_response_unless_abort_on_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for abort in [false, true] {
        let (arrived_tx, mut arrived) = mpsc::channel::<()>(4);
        let (release, released) = tokio::sync::watch::channel(false);
        let svc = hyper::service::service_fn(move |_req| {
            let arrived_tx = arrived_tx.clone();
            let mut released = released.clone();
            async move {
                let _ = arrived_tx.send(()).await;
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                    Bytes::from_static(b"answered"),
                )))
            }
        });
        let backend = hyper_backend(svc).await;
        let config = lb_http::server::ServerConfig {
            abort_on_close: abort,
            ..Default::default()
        };
        let addr = serve_configured(one_member(&format!("http://{backend}")), config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        arrived.recv().await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        if abort {
            // The backend never answers: only the client's close can end this.
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
                .await
                .expect("the connection is closed")
                .unwrap();
            assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        } else {
            // Time for the client's FIN to reach the proxy before the backend answers.
            tokio::time::sleep(Duration::from_millis(50)).await;
            release.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
                .await
                .expect("the response and the close")
                .unwrap();
            let out = String::from_utf8_lossy(&out);
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            assert!(out.ends_with("answered"), "{out}");
        }
        drop(release);
    }
}

/// With the latency scheduler (`ewma`) requests are timed and the slow member is avoided;
/// the others do not time requests, and still spread them.
#[tokio::test]
async fn the_ewma_scheduler_learns_which_member_is_slow() {
    let backend = |delay_ms: u64| {
        hyper_backend(hyper::service::service_fn(move |_req| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                Bytes::from(delay_ms.to_string()),
            )))
        }))
    };
    let (fast, slow) = (backend(0).await, backend(30).await);
    for (method, fast_at_least) in [("ewma", 35), ("roundrobin", 20)] {
        let lb = Balancer::builder()
            .backends([fast, slow].map(|a| member(&format!("http://{a}"))))
            .scheduler(method.parse::<lb_core::scheduler::AnyScheduler>().unwrap())
            .build()
            .unwrap();
        let addr = serve(lb).await;
        let mut to_fast = 0;
        for _ in 0..40 {
            if body_of(send(addr).await).await == "0" {
                to_fast += 1;
            }
        }
        if method == "ewma" {
            assert!(
                to_fast >= fast_at_least,
                "{method}: {to_fast} of 40 to the fast member"
            );
        } else {
            assert_eq!(to_fast, fast_at_least, "{method}: {to_fast} of 40");
        }
    }
}

/// `serve` keeps the empty extension maps of responses for later requests; a response whose
/// map holds something hyper reads (a custom reason phrase) keeps it, every time.
#[tokio::test]
async fn a_reason_phrase_set_by_the_service_reaches_the_client() {
    let svc = tower::service_fn(|req: http::Request<lb_http::body::ProxyBody>| async move {
        let mut resp = http::Response::new(lb_http::body::full("ok"));
        if req.uri().path() == "/fine" {
            resp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Indeed"));
        }
        Ok::<_, Infallible>(resp)
    });
    let addr = serve_service(svc, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for (path, line) in [
        ("/", "http/1.1 200 ok\r\n"),
        ("/fine", "http/1.1 200 fine indeed\r\n"),
        ("/", "http/1.1 200 ok\r\n"),
        ("/fine", "http/1.1 200 fine indeed\r\n"),
    ] {
        // (The head comes lowercased.)
        let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n");
        let (head, body) = exchange(&mut s, request.as_bytes()).await;
        assert!(head.starts_with(line), "{path}: {head}");
        assert_eq!(body, "ok");
    }
}

/// lb-http's server on loopback over a backend that answers after `delay`, with a 1 s idle
/// timeout.
async fn serve_slow_with_idle_1s(delay: Duration, abort_on_close: bool) -> std::net::SocketAddr {
    let svc = hyper::service::service_fn(move |_req| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
            Bytes::from_static(b"late"),
        )))
    });
    let backend = hyper_backend(svc).await;
    let mut config = lb_http::server::ServerConfig {
        abort_on_close,
        ..Default::default()
    };
    config.guard.idle_timeout = Duration::from_secs(1);
    serve_configured(one_member(&format!("http://{backend}")), config).await
}

/// The idle timeout is for a connection with no request in flight: a request slower than
/// it is answered, with `abort_on_close` (where hyper watches the client meanwhile) too.
#[tokio::test]
async fn a_request_slower_than_the_idle_timeout_is_answered() {
    use tokio::io::AsyncReadExt;
    for abort_on_close in [false, true] {
        let addr = serve_slow_with_idle_1s(Duration::from_millis(1800), abort_on_close).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (head, body) = exchange(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            head.starts_with("http/1.1 200"),
            "abort_on_close {abort_on_close}: {head}"
        );
        assert_eq!(body, "late");
        // Then idle: closed after the idle timeout.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an idle connection stays open")
            .unwrap();
        assert_eq!(n, 0);
    }
}

/// An HTTP/2 connection is closed after the idle timeout with no stream in flight, and not
/// while a request slower than it is waited for.
#[tokio::test]
async fn http2_connections_are_closed_when_idle_not_while_busy() {
    let addr = serve_slow_with_idle_1s(Duration::from_millis(1800), false).await;
    let mut tx = h2_client(addr).await;
    let req = hyper::Request::get(format!("http://{addr}/"))
        .body(lb_http::body::empty())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .expect("no response in 10 s")
        .expect("the connection was closed while the request was in flight");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_of(resp).await, "late");
    let mut closed = false;
    for _ in 0..200 {
        if tx.is_closed() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "an idle HTTP/2 connection stays open");
    // A client that stops after part of the preface is not kept either.
    let mut s = TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("a stalled preface keeps the connection open")
        .unwrap();
}

/// An HTTP/2 frame as it came off the wire.
#[derive(Debug)]
struct H2Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const H2_HEADERS: u8 = 0x1;
const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;
const H2_GOAWAY: u8 = 0x7;

/// The bytes of an HTTP/2 frame (RFC 9113 section 4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The next frame from the server; `None` once the connection has ended.
async fn read_h2_frame(s: &mut TcpStream) -> Option<H2Frame> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some(H2Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// A bare HTTP/2 client (prior knowledge) on `addr` that sends `GET http://a/` on stream 1,
/// then reads frames until the server ends the connection (at most 10 s and 100 frames),
/// acknowledging the server's settings, and its pings when `answer_pings`. The frames read,
/// each with the time it came.
async fn h2_get_then_listen(
    addr: std::net::SocketAddr,
    answer_pings: bool,
) -> Vec<(H2Frame, tokio::time::Instant)> {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&h2_frame(H2_SETTINGS, 0, 0, &[]));
    // END_STREAM | END_HEADERS; HPACK: :method GET, :scheme http, :path / (static table),
    // :authority a (a literal with the static name).
    let get = [0x82, 0x86, 0x84, 0x01, 0x01, b'a'];
    hello.extend_from_slice(&h2_frame(H2_HEADERS, 0x5, 1, &get));
    s.write_all(&hello).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut frames = Vec::new();
    for _ in 0..100 {
        let frame = tokio::time::timeout_at(deadline, read_h2_frame(&mut s))
            .await
            .unwrap_or_else(|_| panic!("the connection is still open after 10 s: {frames:?}"));
        let Some(frame) = frame else {
            return frames;
        };
        let ack = match frame.kind {
            H2_SETTINGS if frame.flags & 1 == 0 => Some(h2_frame(H2_SETTINGS, 1, 0, &[])),
            H2_PING if frame.flags & 1 == 0 && answer_pings => {
                Some(h2_frame(H2_PING, 1, 0, &frame.payload))
            }
            _ => None,
        };
        if let Some(ack) = ack {
            // The server may have closed already.
            let _ = s.write_all(&ack).await;
        }
        frames.push((frame, tokio::time::Instant::now()));
    }
    panic!("more than 100 frames: {frames:?}");
}

/// The last stream and the error code of a GOAWAY frame.
fn goaway_of(frame: &H2Frame) -> (u32, u32) {
    let p = &frame.payload;
    (
        u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
        u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
    )
}

/// An idle HTTP/2 connection ends with GOAWAY (RFC 9113 section 6.8), not a silent close: a
/// client sending a request just then learns it was not taken and may retry it elsewhere.
/// The server first announces the end (last stream 2^31-1), then, once the client answered
/// its ping, names the last stream it took, and closes. A client that never answers is
/// closed anyway, after the head timeout.
#[tokio::test]
async fn an_idle_http2_connection_ends_with_goaway() {
    let svc = tower::service_fn(|_req: http::Request<lb_http::body::ProxyBody>| async {
        Ok::<_, Infallible>(http::Response::new(lb_http::body::full("ok")))
    });
    let mut config = lb_http::server::ServerConfig::default();
    config.guard.idle_timeout = Duration::from_secs(1);
    config.guard.head_timeout = Duration::from_secs(1);
    let addr = serve_service(svc, config).await;
    for answer_pings in [true, false] {
        let frames = h2_get_then_listen(addr, answer_pings).await;
        let response = frames
            .iter()
            .position(|(f, _)| f.kind == H2_HEADERS && f.stream == 1)
            .unwrap_or_else(|| panic!("no response: {frames:?}"));
        // (:status 200 from HPACK's static table.)
        assert_eq!(frames[response].0.payload.first(), Some(&0x88));
        let goaways: Vec<_> = frames
            .iter()
            .filter(|(f, _)| f.kind == H2_GOAWAY)
            .map(|(f, at)| (goaway_of(f), *at))
            .collect();
        let Some(&(_, first_at)) = goaways.first() else {
            panic!("closed without GOAWAY (pings answered: {answer_pings}): {frames:?}");
        };
        assert!(
            first_at - frames[response].1 >= Duration::from_millis(500),
            "GOAWAY long before the idle timeout"
        );
        let codes: Vec<_> = goaways
            .iter()
            .map(|((last, code), _)| (*last, *code))
            .collect();
        if answer_pings {
            assert_eq!(
                codes,
                [(0x7fff_ffff, 0), (1, 0)],
                "NO_ERROR, then stream 1 the last taken"
            );
        } else {
            assert_eq!(codes, [(0x7fff_ffff, 0)], "NO_ERROR, the end announced");
        }
    }
}

/// When the server shuts down, an HTTP/1 request in flight is answered and its connection
/// closed, an idle HTTP/2 client gets GOAWAY, and `serve` returns once both are gone.
#[tokio::test]
async fn shutdown_lets_requests_finish_and_sends_goaway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let svc = tower::service_fn(move |req: http::Request<lb_http::body::ProxyBody>| {
        let path = req.uri().path().to_string();
        let _ = seen_tx.send(path.clone());
        async move {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok::<_, Infallible>(http::Response::new(lb_http::body::full("ok")))
        }
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lb_http::server::serve(l, svc, Default::default(), async {
        let _ = stopped.await;
    }));
    let h2 = tokio::spawn(h2_get_then_listen(addr, true));
    let mut within = async |what: &str| {
        tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} request in 10 s"))
            .unwrap()
    };
    assert_eq!(within("HTTP/2").await, "/");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(within("HTTP/1").await, "/slow");
    stop.send(()).unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the HTTP/1 connection is still open 10 s after the shutdown")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    let frames = h2.await.unwrap();
    assert!(
        frames
            .iter()
            .any(|(f, _)| f.kind == H2_HEADERS && f.stream == 1),
        "no answer on HTTP/2: {frames:?}"
    );
    let goaways: Vec<_> = frames
        .iter()
        .filter(|(f, _)| f.kind == H2_GOAWAY)
        .map(|(f, _)| goaway_of(f))
        .collect();
    assert_eq!(goaways, [(0x7fff_ffff, 0), (1, 0)], "{frames:?}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve still runs 10 s after the shutdown")
        .unwrap();
}

/// A shutdown does not wait on an HTTP/2 client that never answers the GOAWAY's ping (hyper
/// waits for that answer before it closes): it is closed the head timeout after the
/// shutdown, not after its idle timeout ran out first (the review of the GOAWAY change:
/// the drain took idle + head timeout, or the whole drain timeout).
#[tokio::test]
async fn shutdown_closes_an_http2_client_that_never_answers_the_goaway() {
    let svc = tower::service_fn(|_req: http::Request<lb_http::body::ProxyBody>| async {
        Ok::<_, Infallible>(http::Response::new(lb_http::body::full("ok")))
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut config = lb_http::server::ServerConfig::default();
    config.guard.idle_timeout = Duration::from_secs(60);
    config.guard.head_timeout = Duration::from_secs(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lb_http::server::serve(l, svc, config, async {
        let _ = stopped.await;
    }));
    let h2 = tokio::spawn(h2_get_then_listen(addr, false));
    // The answer to the client's request, then the shutdown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve still runs 10 s after the shutdown: the client held the drain")
        .unwrap();
    let frames = h2.await.unwrap();
    let goaways: Vec<_> = frames
        .iter()
        .filter(|(f, _)| f.kind == H2_GOAWAY)
        .map(|(f, _)| goaway_of(f))
        .collect();
    assert_eq!(goaways, [(0x7fff_ffff, 0)], "{frames:?}");
}

/// A backend answering every request with its request target, and the name it is given.
async fn target_echo_backend(name: &'static str) -> std::net::SocketAddr {
    hyper_backend(hyper::service::service_fn(
        move |req: hyper::Request<hyper::body::Incoming>| async move {
            let text = format!("{name} {} {}", req.method(), req.uri());
            Ok::<_, Infallible>(hyper::Response::new(lb_http::body::full(text)))
        },
    ))
    .await
}

/// lb-http's server on loopback with the sites `(mount, member url)`, one member each.
async fn serve_sites(sites: &[(&str, String)]) -> std::net::SocketAddr {
    let sites = sites
        .iter()
        .map(|(mount, url)| Site::new(mount, one_member(url), SiteConfig::default()))
        .collect();
    serve_service(SharedRouter::new(Router::new(sites)), Default::default()).await
}

/// [`send_request`] for `GET target`, as written (no dot segment removed on the client
/// side), within 10 s: the status and the body.
async fn get_as_is(lb: std::net::SocketAddr, target: &str) -> (u16, String) {
    let req = hyper::Request::get(target)
        .header("host", "t")
        .body(lb_http::body::empty())
        .unwrap();
    status_and_body(lb, req).await
}

/// [`send_request`] within 10 s: the status and the body.
async fn status_and_body(
    lb: std::net::SocketAddr,
    req: hyper::Request<lb_http::body::ProxyBody>,
) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(10), async {
        let resp = send_request(lb, req).await;
        let status = resp.status().as_u16();
        (
            status,
            String::from_utf8_lossy(&body_of(resp).await).into_owned(),
        )
    })
    .await
    .expect("no response in 10 s")
}

#[tokio::test]
async fn dot_segments_neither_escape_a_member_prefix_nor_pick_another_balancer() {
    let public = target_echo_backend("public").await;
    let internal = target_echo_backend("internal").await;
    let lb = serve_sites(&[
        ("/", format!("http://{public}/public")),
        ("/admin", format!("http://{internal}/internal")),
    ])
    .await;
    for (target, want) in [
        ("/x/../admin/y", "internal GET /internal/y"),
        (
            "/admin/./y/../z?a=/../b",
            "internal GET /internal/z?a=/../b",
        ),
        ("/admin/..", "public GET /public/"),
        ("/a/%2e%2E/b/.", "public GET /public/b/"),
        ("/plain", "public GET /public/plain"),
        // An encoded slash alone is the application's business.
        ("/g/group%2Fname", "public GET /public/g/group%2Fname"),
    ] {
        assert_eq!(
            get_as_is(lb, target).await,
            (200, want.to_string()),
            "{target}"
        );
    }
    for target in ["/../secret", "/admin/../../etc", "/%2e%2e/x"] {
        let (status, body) = get_as_is(lb, target).await;
        assert_eq!(status, 400, "{target}: {body}");
    }
    // Dot segments only a backend would see: one that decodes `%2f`, takes `\` for a
    // separator, or reads `..;` as `..` (Tomcat) would climb out of `/internal`.
    for target in [
        "/admin/..%2fpublic/x",
        "/admin/%2e%2e%2Fpublic/x",
        "/admin/y\\..\\..\\x",
        "/admin/..;/public/x",
    ] {
        let (status, body) = get_as_is(lb, target).await;
        assert_eq!(
            (status, body.as_str()),
            (
                400,
                "the path has a dot segment behind an encoded slash, a backslash or a ';'\n"
            ),
            "{target}"
        );
    }
}

/// A backend answering every request with the `Set-Cookie` field `cookie`, if any.
async fn cookie_backend(cookie: Option<&'static str>) -> std::net::SocketAddr {
    hyper_backend(hyper::service::service_fn(
        move |_req: hyper::Request<hyper::body::Incoming>| async move {
            let mut resp = hyper::Response::new(lb_http::body::full("ok"));
            if let Some(c) = cookie {
                resp.headers_mut()
                    .insert("set-cookie", hyper::header::HeaderValue::from_static(c));
            }
            Ok::<_, Infallible>(resp)
        },
    ))
    .await
}

#[tokio::test]
async fn apache_sticky_sessions_keep_the_application_session_cookie() {
    let sticky = || SiteConfig {
        sticky: Some(lb_http::sticky::StickyConfig::apache("JSESSIONID|jsessionid").unwrap()),
        ..Default::default()
    };
    let app = cookie_backend(Some("JSESSIONID=abc123.a; Path=/")).await;
    let lb = serve_with(one_member(&format!("http://{app},route=a")), sticky()).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), send(lb))
        .await
        .expect("no response in 10 s");
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["JSESSIONID=abc123.a; Path=/"]);

    // An application that sets no session cookie still gets the route one (ROUTEID recipe).
    let plain = cookie_backend(Some("other=1")).await;
    let lb = serve_with(one_member(&format!("http://{plain},route=b")), sticky()).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), send(lb))
        .await
        .expect("no response in 10 s");
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["other=1", "JSESSIONID=.b; Path=/"]);

    // A session failing over from a member that is gone (route r4): its cookie holds the
    // application's session id, which lb must not replace with `.b` (a cluster replicating
    // sessions carries on with `abc.r4`). A cookie holding only a route is lb's to move.
    let with_cookie = |value: &'static str| {
        hyper::Request::get("/")
            .header("host", "t")
            .header("cookie", value)
            .body(lb_http::body::empty())
            .unwrap()
    };
    for (sent, expected) in [
        ("JSESSIONID=abc.r4", vec!["other=1"]),
        ("JSESSIONID=abc", vec!["other=1"]),
        ("JSESSIONID=.r4", vec!["other=1", "JSESSIONID=.b; Path=/"]),
    ] {
        let resp =
            tokio::time::timeout(Duration::from_secs(10), send_request(lb, with_cookie(sent)))
                .await
                .expect("no response in 10 s");
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, expected, "request cookie {sent}");
    }
}

#[tokio::test]
async fn a_status_retry_with_no_other_member_answers_the_backend_response() {
    let backend = hyper_backend(hyper::service::service_fn(
        |_req: hyper::Request<hyper::body::Incoming>| async {
            let mut resp = hyper::Response::new(lb_http::body::full("backend trouble"));
            *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            resp.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("7"));
            Ok::<_, Infallible>(resp)
        },
    ))
    .await;
    let config = SiteConfig {
        retry: Some(lb_http::retry::RetryConfig {
            statuses: vec![500],
            ..Default::default()
        }),
        ..Default::default()
    };
    let lb = serve_with(one_member(&format!("http://{backend}")), config).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), send(lb))
        .await
        .expect("no response in 10 s");
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(body_of(resp).await, "backend trouble");
}

#[tokio::test]
async fn a_request_with_a_body_fails_over_when_its_member_cannot_be_reached() {
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (alive, seen) = echo_backend(200).await;
    let lb = serve(first_of([dead, alive])).await;
    let post = |body: lb_http::body::ProxyBody| async move {
        let req = hyper::Request::post("/")
            .header("host", "t")
            .body(body)
            .unwrap();
        status_and_body(lb, req).await
    };
    assert_eq!(
        post(lb_http::body::full("hello")).await,
        (200, "POST hello".into())
    );
    // Streamed, of unknown length (chunked).
    let chunks = futures_util::stream::iter(
        ["one ", "two"].map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c)))),
    );
    let streamed = lb_http::body::boxed(StreamBody::new(chunks));
    assert_eq!(post(streamed).await, (200, "POST one two".into()));
    assert_eq!(*seen.lock().unwrap(), ["hello", "one two"]);
}

/// Writes `request` on `s` and reads the response, as [`read_response`] does.
async fn exchange(s: &mut TcpStream, request: &[u8]) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    s.write_all(request).await.unwrap();
    read_response(s).await
}

/// Reads one response with a `Content-Length` from `s` within 10 s: its head (lower case)
/// and body.
async fn read_response(s: &mut TcpStream) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]);
                    return (head, body.into_owned());
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response in 10 s")
}

#[tokio::test]
async fn http_1_0_clients_asking_for_keep_alive_keep_their_connection() {
    use tokio::io::AsyncReadExt;
    let backend = target_echo_backend("b").await;
    let lb = serve(one_member(&format!("http://{backend}"))).await;
    let mut s = TcpStream::connect(lb).await.unwrap();
    let (head, body) = exchange(
        &mut s,
        b"GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert_eq!(body, "b GET /a");
    // Without keep-alive: answered on the same connection, which then closes.
    let (head, body) = exchange(&mut s, b"GET /b HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("http/1.0 200"), "{head}");
    assert_eq!(body, "b GET /b");
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut rest))
        .await
        .expect("connection still open after 10 s");
    assert_eq!(n.unwrap_or(0), 0);
}

#[tokio::test]
async fn options_asterisk_is_forwarded_as_is_and_connect_is_refused() {
    let backend = target_echo_backend("b").await;
    // A member with a path prefix: `*` is not a path to put under it.
    let lb = serve_sites(&[("/", format!("http://{backend}/public"))]).await;
    let mut s = TcpStream::connect(lb).await.unwrap();
    let (head, body) = exchange(&mut s, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "b OPTIONS *");
    let (head, body) = exchange(
        &mut s,
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 405"), "{head}");
    assert!(head.contains("\r\nallow: get, "), "{head}");
    assert_eq!(body, "CONNECT is not supported by this reverse proxy\n");
}

/// HTTP/2 clients split Cookie into one field per cookie (RFC 9113 section 8.2.3, as
/// browsers do); the same cookies in HTTP/1.1 are one field. The guard allows them there.
#[tokio::test]
async fn h2_cookie_crumbs_are_not_counted_as_fields() {
    let good = status_backend(200).await;
    let addr = serve(one_member(&format!("http://{good}"))).await;
    let mut tx = h2_client(addr).await;
    let mut req = hyper::Request::get("http://a.example/");
    for i in 0..120 {
        req = req.header("cookie", format!("c{i}=v"));
    }
    let resp = tx
        .send_request(req.body(lb_http::body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "120 cookie crumbs over h2");
    // The same cookies over HTTP/1.1, in one field: accepted.
    let cookie: Vec<String> = (0..120).map(|i| format!("c{i}=v")).collect();
    let req = hyper::Request::get("/")
        .header("host", "a.example")
        .header("cookie", cookie.join("; "))
        .body(lb_http::body::empty())
        .unwrap();
    assert_eq!(send_request(addr, req).await.status().as_u16(), 200);
}

/// RFC 9113 section 8.3.1: Host and :authority are compared normalized (RFC 3986 section
/// 6.2): an explicit default port names the same authority.
#[tokio::test]
async fn h2_host_with_default_port_matches_authority() {
    let good = status_backend(200).await;
    let addr = serve(one_member(&format!("http://{good}"))).await;
    let mut tx = h2_client(addr).await;
    let req = hyper::Request::get("http://a.example/")
        .header("host", "a.example:80")
        .body(lb_http::body::empty())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// The URL parameter holding the application's session (`jsessionid=abc.r4`) fails over
/// as the cookie does: lb must not create `JSESSIONID=.b` under the application's name.
#[tokio::test]
async fn apache_sticky_url_session_keeps_application_cookie_name() {
    let sticky = SiteConfig {
        sticky: Some(lb_http::sticky::StickyConfig::apache("JSESSIONID|jsessionid").unwrap()),
        ..Default::default()
    };
    let plain = cookie_backend(Some("other=1")).await;
    let lb = serve_with(one_member(&format!("http://{plain},route=b")), sticky).await;
    let req = hyper::Request::get("/?jsessionid=abc.r4")
        .header("host", "t")
        .body(lb_http::body::empty())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send_request(lb, req))
        .await
        .unwrap();
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["other=1"]);
}

/// A malformed final response after an interim one is this request's answer, not stray
/// bytes from before it: it must not be sent again.
#[tokio::test]
async fn garbage_after_an_interim_response_is_not_retried() {
    use std::sync::atomic::Ordering;
    let (backend, _, requests) = raw_backend_scripted(
        "127.0.0.1:0",
        |n| {
            if n == 0 {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            } else {
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nnot a response\r\n\r\n"
            }
        },
        false,
        false,
    )
    .await;
    let addr = serve(one_member(&format!("http://{backend}"))).await;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        hyper::Request::get("/")
            .header("host", "t")
            .body(lb_http::body::empty())
            .unwrap()
    };
    let r = tx.send_request(get()).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.into_body().collect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = tx.send_request(get()).await.unwrap();
    let status = r.status().as_u16();
    let _ = r.into_body().collect().await;
    assert_eq!(
        (status, requests.load(Ordering::SeqCst)),
        (502, 2),
        "the second request was sent twice"
    );
}

/// A response head is held to one size limit whichever path its request takes: a bodiless
/// request goes straight on the connection, one with a body through hyper's client, and
/// before, the second let heads of up to about 400 KiB through where the first answered
/// 502 above 64 KiB (the fourth QA pass).
#[tokio::test]
async fn a_response_head_has_one_size_limit_with_or_without_a_request_body() {
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-big: ".to_vec();
    head.extend(std::iter::repeat_n(b'b', 70_000));
    head.extend_from_slice(b"\r\n\r\nok");
    let head: &'static [u8] = Box::leak(head.into_boxed_slice());
    for with_body in [false, true] {
        let (backend, _) = raw_backend_paced("127.0.0.1:0", head, true, false).await;
        let addr = serve_with(
            one_member(&format!("http://{backend}")),
            SiteConfig::default(),
        )
        .await;
        let req = hyper::Request::post("/")
            .header("host", "t")
            .body(if with_body {
                lb_http::body::full(Bytes::from_static(b"payload"))
            } else {
                lb_http::body::empty()
            })
            .unwrap();
        let (status, body) = status_and_body(addr, req).await;
        assert_eq!(status, 502, "with a body: {with_body}: {body}");
    }
}

/// The route cookie of a balancer mounted on a prefix is scoped to it (`Path=/app` for a
/// mount given as `/app/`), so a client sends it back on `/app` itself and under it, and
/// a balancer on another prefix never sees it; on the root mount it stays `Path=/`.
#[tokio::test]
async fn a_mounted_balancers_route_cookie_has_its_mount_as_path() {
    let backend = status_backend(200).await;
    let sticky = || lb_http::sticky::StickyConfig::apache("ROUTEID").unwrap();
    let site = |mount: &str| {
        Site::new(
            mount,
            one_member(&format!("http://{backend},route=r1")),
            SiteConfig {
                sticky: Some(sticky()),
                ..Default::default()
            },
        )
    };
    let router = SharedRouter::new(Router::new(vec![site("/app/"), site("/")]));
    let addr = serve_service(router, Default::default()).await;
    let set_cookie = |path: &'static str| async move {
        let req = hyper::Request::get(path)
            .header("host", "t")
            .body(lb_http::body::empty())
            .unwrap();
        let resp = send_request(addr, req).await;
        assert_eq!(resp.status(), 200, "{path}");
        resp.headers()["set-cookie"].to_str().unwrap().to_string()
    };
    assert_eq!(set_cookie("/app").await, "ROUTEID=.r1; Path=/app");
    assert_eq!(set_cookie("/app/x").await, "ROUTEID=.r1; Path=/app");
    assert_eq!(set_cookie("/apple").await, "ROUTEID=.r1; Path=/");
    // A path chosen by the caller is kept.
    let chosen = Site::new(
        "/api",
        one_member(&format!("http://{backend},route=r1")),
        SiteConfig {
            sticky: Some(sticky().with_cookie_path("/").unwrap()),
            ..Default::default()
        },
    );
    let addr = serve_service(
        SharedRouter::new(Router::new(vec![chosen])),
        Default::default(),
    )
    .await;
    let req = hyper::Request::get("/api/x")
        .header("host", "t")
        .body(lb_http::body::empty())
        .unwrap();
    assert_eq!(
        send_request(addr, req).await.headers()["set-cookie"],
        "ROUTEID=.r1; Path=/"
    );
}
