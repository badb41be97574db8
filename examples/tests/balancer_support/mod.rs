//! Helpers for the lb-balancer tests: real HTTP backends on loopback, the binary as a child
//! process (killed and reaped on drop), a keep-alive hyper client.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A test backend: answers its name, counts hits; see `handle` for the paths it serves.
#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    /// Status of `/health` (200 by default).
    pub health: Arc<AtomicU16>,
    /// When set, `/` answers 500.
    pub failing: Arc<AtomicBool>,
    task: Arc<tokio::task::JoinHandle<()>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let l = TcpListener::bind(addr).await.expect("bind backend");
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let failing = Arc::new(AtomicBool::new(false));
        let state = (
            name.to_string(),
            hits.clone(),
            health.clone(),
            failing.clone(),
            addr,
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let state = state.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.wait_for(|v| *v) => {}
                    }
                });
            }
        });
        Backend {
            name: name.into(),
            addr,
            hits,
            health,
            failing,
            task: Arc::new(task),
            stop: Arc::new(stop_tx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the connections already open.
    pub fn stop(&self) {
        self.task.abort();
        let _ = self.stop.send(true);
    }
}

type State = (
    String,
    Arc<AtomicU64>,
    Arc<AtomicU16>,
    Arc<AtomicBool>,
    SocketAddr,
);

fn param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}="))?.parse().ok())
}

async fn handle(state: State, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (name, hits, health, failing, addr) = state;
    let path = req.uri().path().to_string();
    if path == "/health" {
        let mut r = Response::new(full("ok"));
        *r.status_mut() = StatusCode::from_u16(health.load(Ordering::SeqCst)).unwrap();
        return Ok(r);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let reply = |s: String| Ok(Response::new(full(s)));
    match path.as_str() {
        "/headers" => {
            let mut out = format!("{name}\n");
            for (k, v) in req.headers() {
                out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            reply(out)
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(param(&req, "ms").unwrap_or(500))).await;
            reply(name)
        }
        "/stall" => {
            // Part of the body, a pause of `ms`, the rest; chunked, or with a
            // Content-Length when `cl=1`.
            let ms = param(&req, "ms").unwrap_or(3000);
            let (start, end) = (format!("{name}-start;"), format!("{name}-end"));
            let length = start.len() + end.len();
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let (start, end) = (start.clone(), end.clone());
                async move {
                    let data = match step {
                        0 => start,
                        1 => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            end
                        }
                        _ => return None,
                    };
                    Some((
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(
                            Bytes::from(data),
                        )),
                        step + 1,
                    ))
                }
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            if param(&req, "cl") == Some(1) {
                r.headers_mut()
                    .insert("content-length", length.to_string().parse().unwrap());
            }
            Ok(r)
        }
        "/drip" => {
            // `n` chunks of `name` with `ms` between them.
            let (ms, n) = (
                param(&req, "ms").unwrap_or(100),
                param(&req, "n").unwrap_or(5),
            );
            let stream = futures_util::stream::unfold(0u64, move |i| {
                let chunk = Bytes::from(format!("{name}{i};"));
                async move {
                    if i == n {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Some((
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk)),
                        i + 1,
                    ))
                }
            });
            Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
        }
        // Answers at once and echoes the request body as it arrives (a full-duplex
        // exchange, as a streaming upload endpoint or a bidirectional stream has).
        "/echostream" => Ok(Response::new(
            req.into_body()
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed(),
        )),
        "/upload" => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(_) => break,
                }
            }
            reply(format!("{name} {n}"))
        }
        "/download" => {
            let total = param(&req, "bytes").unwrap_or(1 << 20);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let n = total.div_ceil(chunk.len() as u64);
            let stream = futures_util::stream::iter((0..n).map(move |i| {
                let len = (total - i * chunk.len() as u64).min(chunk.len() as u64) as usize;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.slice(..len)))
            }));
            Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))))
        }
        "/nostore" => {
            let mut r = Response::new(full(name));
            r.headers_mut()
                .insert("cache-control", "no-store, max-age=0".parse().unwrap());
            Ok(r)
        }
        "/redirect" => {
            // To `/landing` here, or on another port of this host with `port=N` (an
            // application that knows the whole cluster).
            let to = match param(&req, "port") {
                Some(port) => format!("{}:{port}", addr.ip()),
                None => addr.to_string(),
            };
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut()
                .insert("location", format!("http://{to}/landing").parse().unwrap());
            Ok(r)
        }
        "/ws" => {
            // An upgrade that echoes raw bytes once switched.
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            r.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            Ok(r)
        }
        _ if path.starts_with("/status/") => {
            let code = path[8..].parse().unwrap_or(500);
            let mut r = Response::new(full(name));
            *r.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(r)
        }
        _ => {
            if failing.load(Ordering::SeqCst) {
                let mut r = Response::new(full(name));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(r);
            }
            reply(name)
        }
    }
}

/// The lb-balancer binary, running; killed and reaped on drop.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub manager: Option<SocketAddr>,
    pub stdout: Arc<std::sync::Mutex<Vec<String>>>,
    pub stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts lb-balancer with `args` and waits (up to 20 s) until it serves.
    pub fn start(args: &[&str]) -> Proxy {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb-balancer"));
        command.args(args);
        Proxy::start_command(command, args)
    }

    /// As [`Proxy::start`], under the open-files limit `ulimit` sets with `nofile`: `-n 40`
    /// sets the soft and hard limits (lb-balancer cannot raise it), `-S -n 64` the soft one.
    pub fn start_with_nofile(nofile: &str, args: &[&str]) -> Proxy {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_lb-balancer"))
            .args(args);
        Proxy::start_command(command, args)
    }

    fn start_command(mut command: Command, args: &[&str]) -> Proxy {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb-balancer");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let errs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep_err = errs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[lb-balancer] {line}");
                keep_err.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut proxy = Proxy {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            manager: None,
            stdout: lines,
            stderr: errs,
        };
        let wants_manager = args.contains(&"--manager");
        let deadline = std::time::SystemTime::now() + Duration::from_secs(20);
        loop {
            let left = deadline
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("lb-balancer did not start with {args:?}"));
            if let Some(rest) = line.split(" on http://").nth(1) {
                let a: SocketAddr = rest.split('/').next().unwrap().parse().unwrap();
                if line.contains("manager on") {
                    proxy.manager = Some(a);
                } else {
                    proxy.addr = a;
                }
            }
            if proxy.addr.port() != 0 && (!wants_manager || proxy.manager.is_some()) {
                return proxy;
            }
        }
    }

    /// lb-balancer on a free port with `members` and the manager on another; also returns
    /// the manager's address.
    pub fn managed(members: &[String]) -> (Proxy, SocketAddr) {
        let mut args = vec!["--listen", "127.0.0.1:0", "--manager", "127.0.0.1:0"];
        for m in members {
            args.extend(["--member", m.as_str()]);
        }
        let p = Proxy::start(&args);
        let m = p.manager.unwrap();
        (p, m)
    }

    /// lb-balancer with the configuration file `path` and the manager on a free port; also
    /// returns the manager's address.
    pub fn from_file_managed(path: &std::path::Path) -> (Proxy, SocketAddr) {
        let p = Proxy::start(&[
            "--config",
            path.to_str().unwrap(),
            "--manager",
            "127.0.0.1:0",
        ]);
        let m = p.manager.unwrap();
        (p, m)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs lb-balancer expecting it to exit; returns (exit code, stderr). One still running
/// after 10 s is killed and reaped, and its exit code is `None`.
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-balancer"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lb-balancer");
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        let _ = tx.send(s);
    });
    // Its stderr closes when it exits.
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(err) => (child.wait().expect("wait for lb-balancer").code(), err),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            (None, rx.recv().unwrap_or_default())
        }
    }
}

/// A keep-alive client.
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET with optional cookie; returns (status, set-cookie, body).
pub async fn get(
    c: &Client<HttpConnector, Body>,
    url: &str,
    cookie: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut b = Request::get(url);
    if let Some(ck) = cookie {
        b = b.header("cookie", ck);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        c.request(b.body(full("")).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let status = resp.status().as_u16();
    let set = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, set, String::from_utf8_lossy(&body).into_owned())
}

/// Sends raw bytes on a fresh connection; returns everything read until close (or 10 s).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `f` every 50 ms for up to `secs` seconds until it returns true.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 20 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Proxy {
    /// True when the binary reported that its lbmethod fell back to another scheduler.
    pub fn scheduler_missing(&self) -> bool {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("has no such scheduler yet"))
    }
}

/// A scratch directory for one test's files, removed on drop.
pub struct Dir(pub std::path::PathBuf);

impl Dir {
    /// `lb-balancer-TEST-PID` in the system's temporary directory.
    pub fn new(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lb-balancer-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// The path of `name` in the directory.
    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.file(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The JSON view of the manager on `m` (`GET /api`), which must answer 200.
/// The member configured with `url` in the first balancer of a manager view
/// ([`manager_view`]).
pub fn member_view(v: &serde_json::Value, url: &str) -> Option<serde_json::Value> {
    v["balancers"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["url"] == url)
        .cloned()
}

/// The busy count of the first balancer's first member, as the manager's API shows it.
pub async fn first_member_busy(m: SocketAddr) -> u64 {
    manager_view(m).await["balancers"][0]["members"][0]["busy"]
        .as_u64()
        .unwrap()
}

pub async fn manager_view(m: SocketAddr) -> serde_json::Value {
    let (status, _, body) = get(&client(), &format!("http://{m}/api"), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}
