//! A proxy's backend connect that fails for want of file descriptors. In a test binary of
//! its own: it lowers the whole process's open-files limit.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::BodyExt;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A keep-alive HTTP/1 backend in this process answering `ok`.
async fn backend() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(lb_http::body::full("ok")))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    addr
}

/// `GET /` to `addr` through `proxy`: the status and body, or the proxy's error.
async fn get(proxy: &lb_http::proxy::Proxy, addr: std::net::SocketAddr) -> Result<String, String> {
    let mut req = http::Request::get("/")
        .header("host", "t")
        .body(lb_http::body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(lb_http::proxy::Target::from_url(&format!("http://{addr}")).unwrap());
    let resp = tokio::time::timeout(Duration::from_secs(10), proxy.clone().oneshot(req))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{status} {}",
        String::from_utf8_lossy(&body.to_bytes())
    ))
}

/// The descriptors this process has open.
fn open_descriptors() -> Vec<usize> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// With every descriptor taken, a request to a member the proxy holds no connection to
/// closes the proxy's idle connections (to another member here) and connects once more,
/// and is answered. Before, it failed with "out of local resources" while the idle
/// connections kept their descriptors.
#[tokio::test]
async fn a_connect_out_of_descriptors_closes_idle_connections_and_is_tried_again() {
    let (a, b) = (backend().await, backend().await);
    let proxy = lb_http::proxy::Proxy::new(lb_http::proxy::ProxyConfig::default());
    // Four idle connections to `a`: four requests at once.
    let answers = futures_util::future::join_all((0..4).map(|_| get(&proxy, a))).await;
    assert!(
        answers.iter().all(|r| r.as_deref() == Ok("200 ok")),
        "{answers:?}"
    );
    // No descriptor left: the limit just above the highest one open, every one below it
    // taken (by /dev/null where there were gaps).
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let highest = open_descriptors().into_iter().max().unwrap() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, highest + 1, hard).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..1024 {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(nix::libc::EMFILE), "{e}");
                break;
            }
        }
    }
    let answer = get(&proxy, b).await;
    drop(fillers);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert_eq!(answer.as_deref(), Ok("200 ok"));
    // The idle connections to `a` were closed: a request to it opens a new one, and works.
    assert_eq!(get(&proxy, a).await.as_deref(), Ok("200 ok"));
}
