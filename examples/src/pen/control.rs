//! The control port (`-C`), speaking penctl's protocol: one command line per connection,
//! the reply, then the connection is closed.
//!
//! `-C port` binds loopback only; `-C addr:port` binds that address, and a non-loopback
//! address needs `--control-any-address` (the protocol has no authentication). `-C /path`
//! is a Unix socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

use super::spec;
use super::state::Pen;

/// Where the control port listens.
#[derive(Debug, Clone)]
pub(crate) enum ControlAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Tcp(a) => write!(f, "{a}"),
            ControlAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Parses `-C`'s argument.
pub(crate) fn parse(s: &str, any_address: bool) -> Result<ControlAddr, String> {
    if s.contains('/') {
        return Ok(ControlAddr::Unix(PathBuf::from(s)));
    }
    let addr = if s.bytes().all(|b| b.is_ascii_digit()) {
        SocketAddr::from(([127, 0, 0, 1], spec::parse_port(s, "control port")?))
    } else {
        spec::parse_host_port(s, "control port")?
    };
    if !addr.ip().is_loopback() && !any_address {
        return Err(format!(
            "control port address {addr} is not loopback; the control protocol has no authentication, \
             add --control-any-address to allow it"
        ));
    }
    Ok(ControlAddr::Tcp(addr))
}

/// A bound control listener.
#[derive(Debug)]
pub(crate) enum Control {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Control {
    pub(crate) async fn bind(addr: &ControlAddr) -> Result<(Control, String), String> {
        match addr {
            ControlAddr::Tcp(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("cannot listen on control port {a}: {e}"))?;
                let shown = l
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| a.to_string());
                Ok((Control::Tcp(l), shown))
            }
            ControlAddr::Unix(p) => {
                let l = UnixListener::bind(p)
                    .map_err(|e| format!("cannot listen on control socket {}: {e}", p.display()))?;
                Ok((Control::Unix(l, p.clone()), p.display().to_string()))
            }
        }
    }

    /// Serves commands forever.
    pub(crate) async fn serve(self, pen: Arc<Pen>) {
        loop {
            let pen = pen.clone();
            match &self {
                Control::Tcp(l) => match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(async move { session(s, &pen).await });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Control::Unix(l, _) => match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(async move { session(s, &pen).await });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Control::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One control connection: read a line (at most 4 KiB, within 10 s), answer, close.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, pen: &Pen) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut limited = (&mut reader).take(4096);
        limited.read_line(&mut line).await
    })
    .await;
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    let reply = match pen.command(line.trim()) {
        Ok(reply) => reply,
        Err(e) => format!("{e}\n"),
    };
    let mut stream = reader.into_inner();
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}
