//! `splice(2)` through a pipe: the zero-copy half of the relay (Linux only).
//!
//! Data moves socket -> pipe -> socket inside the kernel; user space only sees byte
//! counts. Each direction of a relayed connection borrows one pipe from a small
//! process-wide pool and returns it (empty) when done, so a busy proxy does not pay two
//! `pipe2(2)` and `close(2)` calls per connection. The pipe capacity is set with
//! `fcntl(F_SETPIPE_SZ)`; the kernel rounds it up to a power of two pages and caps it at
//! `/proc/sys/fs/pipe-max-size` (we silently keep the default when the call is refused).
//!
//! With `sockopt`, one of the two modules of lb-tcp with `unsafe` code: three libc calls,
//! each wrapped in a safe function that takes borrowed file descriptors.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// How many idle pipes the pool keeps at most (each holds two descriptors).
const POOL_MAX: usize = 64;

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// A kernel pipe used as the splice buffer for one direction of a connection.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The capacity we asked for (the kernel may have rounded it).
    size: usize,
    /// Bytes currently in the pipe.
    pub(crate) len: usize,
}

impl Pipe {
    /// Takes a pipe of `size` bytes from the pool, or creates one.
    pub(crate) fn take(size: usize) -> io::Result<Pipe> {
        let pooled = POOL.lock().map(|mut pool| pool.pop()).unwrap_or(None);
        let mut pipe = match pooled {
            Some(pipe) => pipe,
            None => Pipe::create()?,
        };
        if pipe.size != size {
            pipe.set_size(size);
        }
        Ok(pipe)
    }

    /// Returns the pipe to the pool if it is empty; a pipe with data left in it is closed.
    pub(crate) fn give_back(self) {
        if self.len != 0 {
            return;
        }
        if let Ok(mut pool) = POOL.lock() {
            if pool.len() < POOL_MAX {
                pool.push(self);
            }
        }
    }

    fn create() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints as pipe2(2) requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe {
            read,
            write,
            size: 0,
            len: 0,
        })
    }

    fn set_size(&mut self, size: usize) {
        let Ok(arg) = libc::c_int::try_from(size) else {
            return;
        };
        // SAFETY: F_SETPIPE_SZ takes an int argument; the descriptor is open and ours.
        let rc = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, arg) };
        // Refused (EPERM above pipe-max-size, EBUSY below the current fill): keep the old
        // capacity, which still works, only with more system calls.
        if rc >= 0 {
            self.size = size;
        }
    }

    /// Moves up to `max` bytes from the socket into the pipe. `Ok(0)` means end of stream.
    pub(crate) fn fill_from(&mut self, socket: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = splice(socket, self.write.as_fd(), max)?;
        self.len += n;
        Ok(n)
    }

    /// Moves bytes from the pipe into the socket.
    pub(crate) fn drain_into(&mut self, socket: BorrowedFd<'_>) -> io::Result<usize> {
        let n = splice(self.read.as_fd(), socket, self.len)?;
        self.len -= n;
        Ok(n)
    }
}

/// One non-blocking `splice(2)` call between two borrowed descriptors.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, hence open for the duration of the call; null
    // offsets are required for pipes and sockets; no memory is passed to the kernel.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        // A non-negative ssize_t always fits in usize.
        Ok(n as usize)
    }
}
