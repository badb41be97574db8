//! Helpers for the lb-pen tests: the binary as a child process (killed and reaped on
//! drop), loopback backends that record what they see, clients from chosen 127.0.0.x
//! source addresses, and a penctl client.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_tcp::proxy_protocol::{ProxyHeader, read_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

pub const LB_PEN: &str = env!("CARGO_BIN_EXE_lb-pen");

/// A port that is free now, taken below the kernel's ephemeral range (32768 and up by
/// default) so that outgoing connections of parallel tests cannot grab it before lb-pen
/// binds it; never the same twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + std::process::id() % 1000 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (20_000 + (n - 20_000) % 12_000) as u16;
        let v4 = StdListener::bind(("127.0.0.1", port)).is_ok();
        // Where IPv6 exists, the bare-port form binds [::] (dual stack) too.
        let v6 = match StdListener::bind(("::", port)) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        };
        if v4 && v6 {
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

/// A running lb-pen; killed and reaped on drop.
pub struct LbPen {
    pub child: Child,
    pub port: u16,
}

impl LbPen {
    /// Starts `lb-pen args...` and waits until `wait_for` accepts connections.
    pub async fn start(args: &[String], wait_for: SocketAddr) -> LbPen {
        let child = Command::new(LB_PEN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb-pen");
        let mut pen = LbPen {
            child,
            port: wait_for.port(),
        };
        for _ in 0..200 {
            if TcpStream::connect(wait_for).await.is_ok() {
                // Someone listens; make sure it is this lb-pen and not another process.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(Some(status)) = pen.child.try_wait() {
                    panic!(
                        "lb-pen exited early ({status}): {}",
                        stderr_of(&mut pen.child)
                    );
                }
                return pen;
            }
            if let Ok(Some(status)) = pen.child.try_wait() {
                let out = stderr_of(&mut pen.child);

                panic!("lb-pen exited early ({status}): {out}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("lb-pen did not listen on {wait_for} within 10 s");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its status code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// Whatever the child wrote to stderr (after it exited).
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

impl Drop for LbPen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs lb-pen expecting it to fail at start: returns (exit code, stderr).
pub async fn run_failing(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(LB_PEN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            return (status.code(), stderr_of(&mut child));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("lb-pen {args:?} did not exit within 10 s");
}

/// What a backend saw on one connection.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    /// The client address from a PROXY header, if one was expected.
    pub proxied: Option<ProxyHeader>,
    /// Each request head received.
    pub heads: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Reply `<name>\n` to every request head (ends with an empty line).
    Http,
    /// Read a PROXY header first, then as Http.
    Proxy,
    /// Echo everything until EOF.
    Echo,
    /// Read until EOF, then send `n` bytes of a pattern and close.
    AfterEof(usize),
}

/// A loopback backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

impl Backend {
    pub async fn start(name: &str, mode: Mode) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name, mode).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str, mode: Mode) -> Backend {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (n, s) = (name.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = l.accept().await else {
                    return;
                };
                let (n, s) = (n.clone(), s.clone());
                tokio::spawn(async move { serve(stream, peer, &n, mode, &s).await });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            seen,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn spec(&self) -> String {
        self.addr.to_string()
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    name: &str,
    mode: Mode,
    seen: &Mutex<Vec<Seen>>,
) {
    let index = {
        let mut v = seen.lock().unwrap();
        v.push(Seen {
            peer,
            proxied: None,
            heads: Vec::new(),
        });
        v.len() - 1
    };
    let mut buf = Vec::new();
    match mode {
        Mode::Echo => {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
            return;
        }
        Mode::AfterEof(n) => {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
            seen.lock().unwrap()[index]
                .heads
                .push(String::from_utf8_lossy(&sink).into_owned());
            let _ = stream.write_all(&pattern(n, 5)).await;
            let _ = stream.shutdown().await;
            return;
        }
        Mode::Proxy => match read_header(&stream, peer, Duration::from_secs(10)).await {
            Ok((h, rest)) => {
                seen.lock().unwrap()[index].proxied = Some(h);
                buf = rest;
            }
            Err(_) => return,
        },
        Mode::Http => {}
    }
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            seen.lock().unwrap()[index]
                .heads
                .push(String::from_utf8_lossy(&head).into_owned());
            if stream
                .write_all(format!("{name}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Connects from a chosen source address (any 127.0.0.x works on Linux loopback).
pub async fn connect_from(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(src, 0))?;
    socket.connect(to).await
}

pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

/// Sends one request and reads the backend's name line; `None` when the connection was
/// closed or reset without an answer.
pub async fn ask(stream: &mut TcpStream) -> Option<String> {
    stream.write_all(REQUEST).await.ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        loop {
            match stream.read(&mut byte).await {
                Ok(1) if byte[0] == b'\n' => {
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                Ok(1) => line.push(byte[0]),
                _ => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .ok()
        .flatten()
}

/// One connection, one request: which backend answered.
pub async fn ask_new(to: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(to).await.ok()?;
    ask(&mut s).await
}

pub async fn ask_from(src: &str, to: SocketAddr) -> Option<String> {
    let mut s = connect_from(src.parse().unwrap(), to).await.ok()?;
    ask(&mut s).await
}

/// A penctl command over the control port.
pub async fn penctl(control: SocketAddr, cmd: &str) -> String {
    let mut s = TcpStream::connect(control).await.expect("control port");
    s.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("control reply in time")
        .unwrap();
    out
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Counts answers per backend name.
pub fn tally(names: &[Option<String>]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for n in names {
        *m.entry(n.clone().unwrap_or_else(|| "<none>".into()))
            .or_insert(0) += 1;
    }
    m
}
