//! `lb_http::server::serve` answering HTTP/1.1 on loopback, as a client sees it byte for byte:
//! requests without a body answered by the server's own HTTP/1 path, requests with one
//! handed to hyper on the same connection, pipelining, framing, trailers, `Connection:
//! close`, a cut body, refusals after answered requests, and shutdown.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use lb_http::body::ProxyBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the test service answers:
/// - `/len`: `hello`, its size known;
/// - `/stream`: `ab` then `cd`, size unknown, with trailers: `x-sum` (declared in
///   `Trailer`), `content-type` (declared, but not a field trailers may carry) and
///   `x-undeclared`;
/// - `/short`: `Content-Length: 10` and a body of 3 bytes;
/// - `/echo`: the request body;
/// - `/interim`: `103 Early Hints` as if it were final;
/// - `/coded`: `abc` with `Transfer-Encoding: gzip` and `Content-Length: 3`;
/// - `/fail`: `ab`, then the body fails;
/// - `/nocontent`: `204` with `Content-Length: 0`.
///
/// Each answer says the method and target it saw in `x-seen`, and each request is sent on
/// `seen` too.
fn service(
    seen: mpsc::UnboundedSender<String>,
) -> impl tower::Service<
    http::Request<ProxyBody>,
    Response = http::Response<ProxyBody>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: http::Request<ProxyBody>| {
        let what = format!("{} {}", req.method(), req.uri());
        let _ = seen.send(what.clone());
        async move {
            let path = req.uri().path().to_string();
            let mut resp = match path.as_str() {
                "/len" => http::Response::new(lb_http::body::full("hello")),
                "/stream" => {
                    let frames = futures_util::stream::iter(vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from("ab"))),
                        Ok(Frame::data(Bytes::from("cd"))),
                        Ok(Frame::trailers({
                            let mut t = http::HeaderMap::new();
                            t.insert("x-sum", http::HeaderValue::from_static("2"));
                            t.insert("content-type", http::HeaderValue::from_static("a/b"));
                            t.insert("x-undeclared", http::HeaderValue::from_static("1"));
                            t
                        })),
                    ]);
                    let mut r = http::Response::new(lb_http::body::boxed(StreamBody::new(frames)));
                    r.headers_mut().insert(
                        http::header::TRAILER,
                        http::HeaderValue::from_static("X-Sum, content-type"),
                    );
                    r
                }
                "/coded" => {
                    let mut r = http::Response::new(lb_http::body::full("abc"));
                    r.headers_mut().insert(
                        http::header::TRANSFER_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                    r.headers_mut()
                        .insert(http::header::CONTENT_LENGTH, 3.into());
                    r
                }
                "/fail" => {
                    let frames = futures_util::stream::iter(vec![
                        Ok(Frame::data(Bytes::from("ab"))),
                        Err(std::io::Error::other("the body failed")),
                    ]);
                    http::Response::new(lb_http::body::boxed(StreamBody::new(frames)))
                }
                "/interim" => {
                    let mut r = http::Response::new(lb_http::body::empty());
                    *r.status_mut() = http::StatusCode::EARLY_HINTS;
                    r
                }
                "/nocontent" => {
                    let mut r = http::Response::new(lb_http::body::empty());
                    *r.status_mut() = http::StatusCode::NO_CONTENT;
                    r.headers_mut()
                        .insert(http::header::CONTENT_LENGTH, 0.into());
                    r
                }
                "/short" => {
                    let mut r =
                        http::Response::new(lb_http::body::boxed(http_body_util::StreamBody::new(
                            futures_util::stream::iter(vec![Ok::<_, Infallible>(Frame::data(
                                Bytes::from("abc"),
                            ))]),
                        )));
                    r.headers_mut()
                        .insert(http::header::CONTENT_LENGTH, 10.into());
                    r
                }
                "/echo" => {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    http::Response::new(lb_http::body::full(body))
                }
                _ => {
                    let mut r = http::Response::new(lb_http::body::empty());
                    *r.status_mut() = http::StatusCode::NOT_FOUND;
                    r
                }
            };
            resp.headers_mut()
                .insert("x-seen", http::HeaderValue::from_str(&what).unwrap());
            Ok::<_, Infallible>(resp)
        }
    })
}

/// The server on a loopback port, with the default configuration; `stop` ends it.
async fn start() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<String>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    start_with(Default::default()).await
}

async fn start_with(
    config: lb_http::server::ServerConfig,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<String>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lb_http::server::serve(l, service(seen_tx), config, async {
        let _ = stopped.await;
    }));
    (addr, seen, stop, server)
}

/// Sends `bytes` and reads until the server closes (within 10 s).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s).await
}

/// Reads until the server closes (within 10 s). A reset after some bytes counts as the
/// close: the server closing with pipelined requests unread resets the connection.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server did not close within 10 s");
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => {}
        other => {
            other.unwrap();
        }
    }
    out
}

/// One response read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits what the server sent into responses: one per entry of `heads` (true: the answer
/// to a HEAD, no body), framed as RFC 9112 says.
fn responses(mut wire: &[u8], heads: &[bool]) -> Vec<Resp> {
    let mut out = Vec::new();
    for &head in heads {
        let end = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no whole head in {:?}", String::from_utf8_lossy(wire)));
        let text = std::str::from_utf8(&wire[..end]).unwrap();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        wire = &wire[end + 4..];
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head || status == 204 || status == 304 {
        } else if let Some(n) = r.header("content-length") {
            let n: usize = n.parse().unwrap();
            r.body = wire[..n].to_vec();
            wire = &wire[n..];
        } else {
            assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
            loop {
                let line_end = wire.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&wire[..line_end]).unwrap(), 16)
                        .unwrap();
                wire = &wire[line_end + 2..];
                if size == 0 {
                    break;
                }
                r.body.extend_from_slice(&wire[..size]);
                assert_eq!(&wire[size..size + 2], b"\r\n");
                wire = &wire[size + 2..];
            }
            loop {
                let line_end = wire.windows(2).position(|w| w == b"\r\n").unwrap();
                let line = std::str::from_utf8(&wire[..line_end]).unwrap().to_string();
                wire = &wire[line_end + 2..];
                if line.is_empty() {
                    break;
                }
                let (n, v) = line.split_once(':').unwrap();
                r.trailers.push((n.to_string(), v.trim().to_string()));
            }
        }
        out.push(r);
    }
    assert!(
        wire.is_empty(),
        "more than the responses expected: {:?}",
        String::from_utf8_lossy(wire)
    );
    out
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_one_with_a_body_by_hyper() {
    let (addr, mut seen, _stop, _server) = start().await;
    let wire = exchange(
        addr,
        b"GET /len?a=1 HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /len HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd\
          GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let r = responses(&wire, &[false, true, false, false]);
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].header("x-seen"), Some("GET /len?a=1"));
    assert_eq!(r[0].header("content-length"), Some("5"));
    assert_eq!(r[0].body, b"hello");
    assert!(r[0].header("date").is_some(), "{:?}", r[0]);
    assert_eq!(r[0].header("connection"), None);
    // HEAD: the length a GET would have had, no body.
    assert_eq!(r[1].header("x-seen"), Some("HEAD /len"));
    assert_eq!(r[1].header("content-length"), Some("5"));
    assert!(r[1].body.is_empty());
    assert_eq!(r[2].header("x-seen"), Some("POST /echo"));
    assert_eq!(r[2].body, b"abcd");
    // Size unknown: chunked; no trailers, as the client did not ask for them.
    assert_eq!(r[3].header("x-seen"), Some("GET /stream"));
    assert_eq!(r[3].body, b"abcd");
    assert!(r[3].trailers.is_empty());
    assert_eq!(r[3].header("connection"), Some("close"));
    let mut order = Vec::new();
    while let Ok(s) = seen.try_recv() {
        order.push(s);
    }
    assert_eq!(
        order,
        ["GET /len?a=1", "HEAD /len", "POST /echo", "GET /stream"]
    );
}

/// Declared ones, that trailers may carry, to a client that takes them.
#[tokio::test]
async fn trailers_go_to_a_client_that_takes_them() {
    let (addr, _seen, _stop, _server) = start().await;
    let wire = exchange(
        addr,
        b"GET /stream HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close, te\r\n\r\n",
    )
    .await;
    let r = responses(&wire, &[false]);
    assert_eq!(r[0].body, b"abcd");
    assert_eq!(r[0].trailers, [("x-sum".to_string(), "2".to_string())]);
}

#[tokio::test]
async fn an_interim_status_as_the_answer_becomes_500_and_204_has_no_length() {
    let (addr, _seen, _stop, _server) = start().await;
    let wire = exchange(
        addr,
        b"GET /nocontent HTTP/1.1\r\nHost: t\r\n\r\nGET /interim HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /len HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    // The 103 is the last answer: the connection closes after it.
    let r = responses(&wire, &[false, false]);
    assert_eq!(r[0].status, 204);
    assert_eq!(r[0].header("content-length"), None, "{:?}", r[0]);
    assert_eq!(r[1].status, 500);
    assert_eq!(r[1].header("connection"), Some("close"));
}

/// The HTTP/2 preface, an empty SETTINGS frame, then HEADERS on stream 1 (END_STREAM,
/// END_HEADERS): GET, http, /, and :authority t (HPACK static table entries 2, 6, 4; a
/// literal for 1).
fn http2_get() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0, 6, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41, 1, b't']);
    bytes
}

#[tokio::test]
async fn with_http2_off_a_preface_is_not_taken() {
    let config = lb_http::server::ServerConfig {
        http2: false,
        ..Default::default()
    };
    let (addr, mut seen, _stop, _server) = start_with(config).await;
    let wire = exchange(addr, &http2_get()).await;
    assert!(
        wire.is_empty() || wire.starts_with(b"HTTP/1.1 4"),
        "answered: {wire:?}"
    );
    assert!(
        seen.try_recv().is_err(),
        "the HTTP/2 request reached the service"
    );
    // With it on (the default), the same bytes are a request.
    let (addr, mut seen, _stop, _server) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&http2_get()).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
    assert_eq!(seen.unwrap().as_deref(), Some("GET http://t/"));
}

/// Transfer codings besides chunked stay, chunked goes last, and Content-Length goes (RFC
/// 9112 section 6.1: not both).
#[tokio::test]
async fn other_transfer_codings_are_kept_with_chunked_last() {
    let (addr, _seen, _stop, _server) = start().await;
    let wire = exchange(
        addr,
        b"GET /coded HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&wire);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(!head.contains("content-length"), "{text}");
    assert!(
        head.contains("transfer-encoding: gzip\r\ntransfer-encoding: chunked"),
        "{text}"
    );
    assert_eq!(body, "3\r\nabc\r\n0\r\n\r\n");
}

/// What was gathered goes out, then the connection closes without the last chunk: the
/// client sees a response cut short.
#[tokio::test]
async fn a_failing_body_cuts_the_response() {
    let (addr, _seen, _stop, _server) = start().await;
    let wire = exchange(addr, b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n2\r\nab\r\n"), "{text}");
}

/// RFC 9113 section 3.4: the preface counts only as a connection's first bytes.
#[tokio::test]
async fn an_http2_preface_after_a_request_is_not_taken() {
    let (addr, mut seen, _stop, _server) = start().await;
    let mut bytes = b"GET /len HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    bytes.extend_from_slice(&http2_get());
    let wire = exchange(addr, &bytes).await;
    // The request answered, then the connection closed, with an HTTP/1 error status or
    // nothing (hyper's HTTP/1 server closes at an HTTP/2 preface without one): no HTTP/2
    // frames.
    let text = String::from_utf8_lossy(&wire);
    let first = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + 5;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let rest = &wire[first..];
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 4"),
        "after the answer: {rest:?}"
    );
    assert_eq!(seen.try_recv().unwrap(), "GET /len");
    assert!(
        seen.try_recv().is_err(),
        "the HTTP/2 request reached the service"
    );
}

#[tokio::test]
async fn keep_alive_goes_on_until_the_client_says_close() {
    let (addr, _seen, _stop, _server) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /len HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // One whole response (its body is 5 bytes), within 10 s.
        while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"hello")) {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("no response within 10 s")
                .unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let wire = read_to_close(&mut s).await;
    let r = responses(&wire, &[false]);
    assert_eq!(r[0].status, 404);
    assert_eq!(r[0].header("content-length"), Some("0"));
    assert_eq!(r[0].header("connection"), Some("close"));
}

#[tokio::test]
async fn a_body_shorter_than_its_length_ends_the_connection() {
    let (addr, _seen, _stop, _server) = start().await;
    // Keep-alive asked for, and a request behind it: the cut response is the last.
    let wire = exchange(
        addr,
        b"GET /short HTTP/1.1\r\nHost: t\r\n\r\nGET /len HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-length: 10\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
}

#[tokio::test]
async fn a_smuggling_shape_after_answered_requests_is_refused() {
    let (addr, mut seen, _stop, _server) = start().await;
    let wire = exchange(
        addr,
        b"GET /len HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /len HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let r = responses(&wire, &[false, false]);
    assert_eq!(r[0].status, 200);
    assert_eq!(r[1].status, 400);
    assert_eq!(seen.try_recv().unwrap(), "GET /len");
    assert!(
        seen.try_recv().is_err(),
        "the refused request reached the service"
    );
}

#[tokio::test]
async fn requests_this_path_leaves_to_hyper_are_still_answered() {
    let (addr, mut seen, _stop, _server) = start().await;
    // HTTP/1.0, an absolute-form target, and `OPTIONS *`: each on a connection of its own.
    let wire = exchange(addr, b"GET /len HTTP/1.0\r\nHost: t\r\n\r\n").await;
    let r = responses(&wire, &[false]);
    assert_eq!(r[0].body, b"hello");
    assert!(String::from_utf8_lossy(&wire).starts_with("HTTP/1.0 200"));
    let wire = exchange(
        addr,
        b"GET http://t/len HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(responses(&wire, &[false])[0].body, b"hello");
    let wire = exchange(
        addr,
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(responses(&wire, &[false])[0].status, 404);
    let mut order = Vec::new();
    while let Ok(s) = seen.try_recv() {
        order.push(s);
    }
    assert_eq!(order, ["GET /len", "GET http://t/len", "OPTIONS *"]);
}

#[tokio::test]
async fn shutdown_closes_an_idle_kept_alive_connection() {
    let (addr, _seen, stop, server) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A blank line after the request, in the same write: it reaches the server with it.
    // Blank lines may come before a request line; no request is in progress.
    s.write_all(b"GET /len HTTP/1.1\r\nHost: t\r\n\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"hello") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    stop.send(()).unwrap();
    // Closed with nothing more sent, and the server done (it waits for its connections).
    assert!(read_to_close(&mut s).await.is_empty());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server did not end within 10 s")
        .unwrap();
}
