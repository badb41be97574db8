//! The one error type of lb-tcp.

use std::io;
use std::net::SocketAddr;

/// Everything that can go wrong in lb-tcp.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or configuring a listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A PROXY protocol header could not be parsed.
    #[error("bad proxy protocol header: {0}")]
    ProxyHeader(String),
    /// A PROXY protocol header arrived from a peer that is not trusted to send one.
    #[error("proxy protocol header from untrusted peer {0}")]
    UntrustedProxy(SocketAddr),
    /// The PROXY protocol header did not arrive in time.
    #[error("proxy protocol header from {0} did not arrive in time")]
    ProxyHeaderTimeout(SocketAddr),
    /// A network address (CIDR) could not be parsed.
    #[error("bad network {0:?}: expected address/prefix such as 10.0.0.0/8")]
    BadNetwork(String),
    /// No backend could take the connection.
    #[error("no backend for client {client}: {reason}")]
    NoBackend {
        /// The client.
        client: SocketAddr,
        /// Why, in a few words.
        reason: String,
    },
    /// The connection limit was reached and the connection was refused.
    #[error("connection limit {0} reached")]
    LimitReached(usize),
    /// An error from lb-core.
    #[error(transparent)]
    Core(#[from] lb_core::Error),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The result type of lb-tcp.
pub type Result<T, E = Error> = std::result::Result<T, E>;
