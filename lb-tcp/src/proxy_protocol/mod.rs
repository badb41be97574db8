//! The PROXY protocol (HAProxy's, versions 1 and 2), both ways.
//!
//! Towards backends a [`ProxyHeader`] written first on the backend connection tells the
//! backend who the client is (as half-NAT would), see [`ProxyHeader::encode`]. On
//! listeners a header is read only from [`TrustedSources`]: any other peer could claim to
//! be anyone, so a connection from outside the trusted networks is refused when the
//! listener expects headers ([`read_header`]).
//!
//! The format follows <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>:
//! version 1 is one text line of at most 107 bytes
//! (`PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n`), version 2 a binary header with a
//! 12-byte signature, command, family, length, the addresses and optional TLVs (which we
//! skip when parsing and never send).

mod header;
mod trusted;

pub use header::{ProxyHeader, ProxyVersion, read_header};
pub use trusted::{IpNet, TrustedSources};
