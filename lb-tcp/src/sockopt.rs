//! Socket options socket2 does not offer, as safe functions over borrowed descriptors.
//!
//! With `splice`, one of the two modules of lb-tcp with `unsafe` code: each libc call here
//! is given a descriptor the caller holds open and a value on the stack, sized by type.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Sets `TCP_DEFER_ACCEPT` on a listening socket (Linux): a connection is handed to
/// `accept` only once its first data has arrived, or after about `wait`, so a server whose
/// client speaks first (HTTP) finds a request to read on every accepted socket: no read
/// that finds nothing, no wake-up to read again. Apache sets it for HTTP by default; it is
/// HAProxy's `defer-accept` and nginx's `deferred`. The kernel counts `wait` in SYN-ACK
/// retransmissions, so it is rounded (and reads back larger). Elsewhere it is
/// `Unsupported`.
pub fn set_defer_accept(socket: &impl AsFd, wait: Duration) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let secs = libc::c_int::try_from(wait.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
        let fd = socket.as_fd().as_raw_fd();
        // SAFETY: `fd` is borrowed from an open descriptor for the whole call; the value is a
        // c_int on the stack and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&secs as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (socket, wait);
        Err(unsupported())
    }
}

/// The `TCP_DEFER_ACCEPT` of a listening socket, as the kernel reports it (zero: off).
pub fn defer_accept(socket: &impl AsFd) -> io::Result<Duration> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut secs: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let fd = socket.as_fd().as_raw_fd();
        // SAFETY: as above; the kernel writes at most `len` bytes into `secs` and updates
        // `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut secs as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        Err(unsupported())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "TCP_DEFER_ACCEPT is only supported on Linux",
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that connects and sends later is still accepted, with its data waiting; one
    /// that sends at once too.
    #[tokio::test]
    async fn a_deferred_listener_accepts_once_data_arrived() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(defer_accept(&l).unwrap(), Duration::ZERO);
        set_defer_accept(&l, Duration::from_secs(5)).unwrap();
        assert!(defer_accept(&l).unwrap() >= Duration::from_secs(5));
        let addr = l.local_addr().unwrap();
        let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut early = tokio::net::TcpStream::connect(addr).await.unwrap();
        early.write_all(b"first").await.unwrap();
        // Only the client that sent something is handed over.
        let (mut s, peer) = l.accept().await.unwrap();
        assert_eq!(peer, early.local_addr().unwrap());
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first");
        late.write_all(b"later").await.unwrap();
        let (mut s, peer) = l.accept().await.unwrap();
        assert_eq!(peer, late.local_addr().unwrap());
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"later");
    }
}
