//! Moving bytes between the client and the backend.
//!
//! [`Relay::run`] copies both directions of a proxied connection at once, in one task:
//!
//! * On Linux it uses `splice(2)` through a kernel pipe per direction (zero copy: the data
//!   never enters user space) once a direction carries bulk data; small request/response
//!   exchanges go through a small buffer first, which measured faster for them (see
//!   [`RelayMode::Auto`]). Readiness comes from tokio (`readable()` / `writable()` and
//!   `try_io`), so a relay costs no thread and no busy loop.
//! * Elsewhere, or when asked ([`RelayMode::Copy`]), or when a direction must be rewritten
//!   (pen's `-H`, see [`crate::xff`]), it copies through a user-space buffer
//!   (64 KiB by default).
//!
//! Half-close is honoured: when one side sends EOF, the relay shuts down the write half
//! of the other side and keeps relaying the opposite direction until it ends too. An
//! error on either side (a reset) ends the whole relay. An optional idle timeout ends it
//! when no byte moved in either direction for that long.
//!
//! The choice of an own implementation over `tokio-splice2` or `realm_io` is recorded in
//! the commit that introduced this module: both crates relay one direction per future
//! and need the streams split; ours shares borrowed `&TcpStream`s between the two
//! directions of one future, keeps a pipe pool, counts bytes live for the lease and
//! supports the idle timeout and the `-H` rewrite on the same path.

#[cfg(target_os = "linux")]
mod splice;

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::xff::XffInserter;

/// How the relay moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RelayMode {
    /// On Linux: buffered copies through a 16 KiB buffer until one read fills it, then
    /// `splice(2)` for the rest of that direction (bulk data moves zero-copy, small
    /// exchanges avoid the pipe's extra cost). Elsewhere: buffered copies.
    #[default]
    Auto,
    /// Always copy through a user-space buffer.
    Copy,
}

/// Settings of a [`Relay`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Splice or copy.
    pub mode: RelayMode,
    /// Size of each direction's buffer in copy mode (default 64 KiB).
    pub buffer_size: usize,
    /// Requested capacity of each splice pipe (default 256 KiB; the kernel may cap it).
    pub pipe_size: usize,
    /// End the relay when nothing moved for this long (default: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            mode: RelayMode::Auto,
            buffer_size: 64 * 1024,
            pipe_size: 256 * 1024,
            idle_timeout: None,
        }
    }
}

impl RelayConfig {
    /// Sets the relay mode.
    pub fn with_mode(mut self, mode: RelayMode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the copy buffer size (at least 1 byte).
    pub fn with_buffer_size(mut self, size: usize) -> Self {
        self.buffer_size = size.max(1);
        self
    }
    /// Sets the splice pipe size (at least one page).
    pub fn with_pipe_size(mut self, size: usize) -> Self {
        self.pipe_size = size.max(4096);
        self
    }
    /// Sets the idle timeout (`None`: never).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// Why a relay ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayEnd {
    /// Both sides closed their write halves (the normal end).
    Closed,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// A side failed (usually a reset); the relay stopped both directions.
    Error(io::Error),
}

/// What a finished relay moved, and how it ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct RelayStats {
    /// Bytes written to the backend.
    pub client_to_backend: u64,
    /// Bytes written to the client.
    pub backend_to_client: u64,
    /// Why it ended.
    pub end: RelayEnd,
}

/// Live byte counters of a running relay, readable from other tasks.
#[derive(Debug, Default)]
pub struct RelayCounters {
    client_to_backend: AtomicU64,
    backend_to_client: AtomicU64,
}

impl RelayCounters {
    /// Bytes written to the backend so far.
    pub fn client_to_backend(&self) -> u64 {
        self.client_to_backend.load(Ordering::Relaxed)
    }
    /// Bytes written to the client so far.
    pub fn backend_to_client(&self) -> u64 {
        self.backend_to_client.load(Ordering::Relaxed)
    }
}

/// Relays bytes between two connected TCP streams; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Relay {
    config: RelayConfig,
}

/// The last time anything moved, as milliseconds since `start` (shared by both directions).
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    async fn idle(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Relay {
    /// A relay with these settings.
    pub fn new(config: RelayConfig) -> Self {
        Relay { config }
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Relays until both directions are closed, an error occurs or the idle timeout fires.
    pub async fn run(&self, client: &TcpStream, backend: &TcpStream) -> RelayStats {
        self.run_with(client, backend, None, &RelayCounters::default())
            .await
    }

    /// Like [`run`](Self::run), with an optional `X-Forwarded-For` inserter on the
    /// client-to-backend direction (that direction is then copied, not spliced) and
    /// counters the caller can read while the relay runs.
    pub async fn run_with(
        &self,
        client: &TcpStream,
        backend: &TcpStream,
        xff: Option<XffInserter>,
        counters: &RelayCounters,
    ) -> RelayStats {
        let activity = Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        let up = self.direction(client, backend, xff, &counters.client_to_backend, &activity);
        let down = self.direction(
            backend,
            client,
            None,
            &counters.backend_to_client,
            &activity,
        );
        let both = async { tokio::try_join!(up, down) };
        let end = match self.config.idle_timeout {
            Some(timeout) => tokio::select! {
                r = both => r.map_or_else(RelayEnd::Error, |_| RelayEnd::Closed),
                () = activity.idle(timeout) => RelayEnd::IdleTimeout,
            },
            None => both
                .await
                .map_or_else(RelayEnd::Error, |_| RelayEnd::Closed),
        };
        RelayStats {
            client_to_backend: counters.client_to_backend(),
            backend_to_client: counters.backend_to_client(),
            end,
        }
    }

    /// One direction: `src` to `dst` until EOF, then shut down `dst`'s write half.
    ///
    /// In [`RelayMode::Auto`] on Linux a direction starts with small buffered copies
    /// (cheapest for request/response traffic, and little memory per idle connection) and
    /// switches to `splice(2)` as soon as one read fills the buffer, i.e. when bulk data
    /// flows (the idea of HAProxy's `splice-auto`).
    async fn direction(
        &self,
        src: &TcpStream,
        dst: &TcpStream,
        xff: Option<XffInserter>,
        count: &AtomicU64,
        activity: &Activity,
    ) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if xff.is_none() && self.config.mode == RelayMode::Auto {
            let probe = self.config.buffer_size.min(AUTO_PROBE_BUFFER);
            if copy_direction(src, dst, probe, None, true, count, activity).await? == CopyEnd::Eof {
                return Ok(());
            }
            if let Ok(pipe) = splice::Pipe::take(self.config.pipe_size) {
                return splice_direction(src, dst, pipe, self.config.pipe_size, count, activity)
                    .await;
            }
        }
        let size = self.config.buffer_size;
        copy_direction(src, dst, size, xff, false, count, activity).await?;
        Ok(())
    }
}

/// The buffer of the copy phase of [`RelayMode::Auto`]: a read that fills it means bulk.
#[cfg(target_os = "linux")]
const AUTO_PROBE_BUFFER: usize = 16 * 1024;

/// How a buffered direction ended.
#[derive(Debug, PartialEq, Eq)]
enum CopyEnd {
    /// The source sent EOF; the destination's write half is shut down.
    Eof,
    /// A read filled the buffer and the caller asked to switch to splice.
    Bulk,
}

/// Shuts down the write half, ignoring "not connected" (the peer may be gone already).
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(stream).shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

/// Writes all of `buf` to `dst` using readiness and `try_write`.
async fn write_all(dst: &TcpStream, mut buf: &[u8], count: &AtomicU64) -> io::Result<()> {
    while !buf.is_empty() {
        dst.writable().await?;
        match dst.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what `src` has into `buf`'s spare capacity. A read that leaves capacity unused
/// emptied the socket's receive queue, so the socket's readiness is cleared at once: the
/// next `readable()` waits for new data instead of returning at once for a read that would
/// fail with EAGAIN (one wasted `recvfrom` per message, a third of the system calls of
/// request/response traffic). Tokio clears readiness only if no new readiness event
/// arrived since the read began, so data arriving meanwhile still wakes the reader.
fn read_draining(src: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut got = 0;
    let spare = buf.capacity() - buf.len();
    let r = src.try_io(Interest::READABLE, || {
        got = src.try_read_buf(buf)?;
        if got > 0 && got < spare {
            // Drained: report "would block" so that the readiness is cleared.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

async fn copy_direction(
    src: &TcpStream,
    dst: &TcpStream,
    buffer_size: usize,
    mut xff: Option<XffInserter>,
    stop_on_full: bool,
    count: &AtomicU64,
    activity: &Activity,
) -> io::Result<CopyEnd> {
    // The buffer is only held while data flows: an idle connection (waiting in
    // `readable()`) owns no buffer, which keeps thousands of idle connections cheap.
    let mut buf: Vec<u8> = Vec::new();
    let mut rewritten = Vec::new();
    loop {
        src.readable().await?;
        if buf.capacity() == 0 {
            // Not zeroed: `try_read_buf` reads into the spare capacity, so only the pages
            // that data lands in are ever touched.
            buf = Vec::with_capacity(buffer_size);
        }
        buf.clear();
        let n = match read_draining(src, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if let Some(inserter) = xff.as_mut() {
                rewritten.clear();
                inserter.finish(&mut rewritten);
                write_all(dst, &rewritten, count).await?;
            }
            shutdown_write(dst)?;
            return Ok(CopyEnd::Eof);
        }
        activity.touch();
        match xff.as_mut() {
            Some(inserter) => {
                rewritten.clear();
                inserter.feed(&buf[..n], &mut rewritten);
                write_all(dst, &rewritten, count).await?;
            }
            None => write_all(dst, &buf[..n], count).await?,
        }
        activity.touch();
        if stop_on_full && n == buffer_size {
            return Ok(CopyEnd::Bulk);
        }
        if n < buffer_size / 4 {
            // A small message: likely request/response traffic that now goes idle.
            buf = Vec::new();
            rewritten = Vec::new();
        }
    }
}

#[cfg(target_os = "linux")]
async fn splice_direction(
    src: &TcpStream,
    dst: &TcpStream,
    mut pipe: splice::Pipe,
    pipe_size: usize,
    count: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let result = async {
        loop {
            // Fill: only when the pipe is empty, so EAGAIN always means "socket not readable".
            src.readable().await?;
            let n = match src.try_io(Interest::READABLE, || {
                pipe.fill_from(src.as_fd(), pipe_size)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return shutdown_write(dst);
            }
            activity.touch();
            // Drain: the pipe holds data, so EAGAIN always means "socket not writable".
            while pipe.len > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || pipe.drain_into(dst.as_fd())) {
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        activity.touch();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    .await;
    pipe.give_back();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair (a, b) on loopback.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// client <-> (proxy_c | relay | proxy_b) <-> backend
    async fn relayed(
        config: RelayConfig,
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<RelayStats>) {
        let (client, proxy_c) = pair().await;
        let (proxy_b, backend) = pair().await;
        let relay = Relay::new(config);
        let task = tokio::spawn(async move { relay.run(&proxy_c, &proxy_b).await });
        (client, backend, task)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    async fn large_both_ways(config: RelayConfig) {
        let (client, backend, task) = relayed(config).await;
        let up = pattern(8 << 20, 1);
        let down = pattern(5 << 20, 7);
        let (mut cr, mut cw) = client.into_split();
        let (mut br, mut bw) = backend.into_split();
        let (up2, down2) = (up.clone(), down.clone());
        let w1 = tokio::spawn(async move {
            cw.write_all(&up2).await.unwrap();
            cw.shutdown().await.unwrap();
        });
        let w2 = tokio::spawn(async move {
            bw.write_all(&down2).await.unwrap();
            bw.shutdown().await.unwrap();
        });
        let r1 = tokio::spawn(async move {
            let mut v = Vec::new();
            br.read_to_end(&mut v).await.unwrap();
            v
        });
        let r2 = tokio::spawn(async move {
            let mut v = Vec::new();
            cr.read_to_end(&mut v).await.unwrap();
            v
        });
        assert!(r1.await.unwrap() == up, "client to backend bytes differ");
        assert!(r2.await.unwrap() == down, "backend to client bytes differ");
        w1.await.unwrap();
        w2.await.unwrap();
        let stats = task.await.unwrap();
        assert_eq!(stats.client_to_backend, up.len() as u64);
        assert_eq!(stats.backend_to_client, down.len() as u64);
        assert!(matches!(stats.end, RelayEnd::Closed), "{:?}", stats.end);
    }

    #[tokio::test]
    async fn large_transfers_are_byte_exact_with_splice() {
        large_both_ways(RelayConfig::default().with_pipe_size(64 * 1024)).await;
    }

    #[tokio::test]
    async fn large_transfers_are_byte_exact_with_copy() {
        large_both_ways(
            RelayConfig::default()
                .with_mode(RelayMode::Copy)
                .with_buffer_size(1000),
        )
        .await;
    }

    async fn half_close(config: RelayConfig) {
        let (mut client, mut backend, task) = relayed(config).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The backend answers after seeing EOF; the client still receives it all.
        let reply = pattern(300_000, 3);
        backend.write_all(&reply).await.unwrap();
        backend.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert!(back == reply);
        assert!(matches!(task.await.unwrap().end, RelayEnd::Closed));
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_splice() {
        half_close(RelayConfig::default()).await;
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_copy() {
        half_close(RelayConfig::default().with_mode(RelayMode::Copy)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_a_silent_relay() {
        let (mut client, mut backend, task) =
            relayed(RelayConfig::default().with_idle_timeout(Some(Duration::from_secs(30)))).await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        backend.read_exact(&mut one).await.unwrap();
        let stats = task.await.unwrap();
        assert!(
            matches!(stats.end, RelayEnd::IdleTimeout),
            "{:?}",
            stats.end
        );
        assert_eq!(stats.client_to_backend, 1);
        // The proxy's sockets were dropped with the relay: the backend sees EOF.
        let mut rest = Vec::new();
        assert_eq!(backend.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn xff_rewrites_the_client_direction_only() {
        let (client, proxy_c) = pair().await;
        let (proxy_b, mut backend) = pair().await;
        let relay = Relay::default();
        let task = tokio::spawn(async move {
            let xff = XffInserter::new(
                "192.0.2.9".parse().unwrap(),
                crate::xff::XffScope::EveryRequest,
            );
            relay
                .run_with(&proxy_c, &proxy_b, Some(xff), &RelayCounters::default())
                .await
        });
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.9\r\nHost: a\r\n\r\n"
        );
        backend.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        drop(backend);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"HTTP/1.1 200 OK\r\n\r\n");
        task.await.unwrap();
    }
}
