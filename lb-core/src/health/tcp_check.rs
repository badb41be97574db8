//! A TCP (or Unix socket) connect check.

use tokio::net::{TcpStream, UnixStream, lookup_host};

use super::{CheckError, HealthCheck};
use crate::backend::{Address, Backend};

/// Up when a connection to the backend can be opened (HAProxy's default `check`, Apache
/// `hcmethod=TCP`, keepalived `TCP_CHECK`). The connection is closed at once.
///
/// Socket addresses are connected directly; host names are resolved at each check and
/// their addresses tried in turn; Unix socket paths are connected as such.
///
/// ```
/// use lb_core::Backend;
/// use lb_core::health::{HealthCheck, TcpCheck};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let backend = Backend::new(listener.local_addr().unwrap());
/// assert!(TcpCheck::new().check(&backend).await.is_ok());
/// drop(listener);
/// assert!(TcpCheck::new().check(&backend).await.is_err());
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpCheck {
    port: Option<u16>,
}

impl TcpCheck {
    /// A check connecting to the backend's own address.
    pub fn new() -> Self {
        TcpCheck::default()
    }

    /// Connects to another port of the backend's host (HAProxy `port`, Apache `hcport`).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The port override, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl HealthCheck for TcpCheck {
    async fn check(&self, target: &Backend) -> Result<(), CheckError> {
        let address = match self.port {
            Some(p) => target.address().with_port(p),
            None => target.address().clone(),
        };
        match &address {
            Address::Socket(a) => {
                TcpStream::connect(a)
                    .await
                    .map_err(|e| CheckError::connect(&address, &e))?;
            }
            Address::Host { host, port } => {
                let addrs = lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| CheckError::Connect(format!("resolving {host}: {e}")))?;
                let mut last = None;
                let mut connected = false;
                for a in addrs {
                    match TcpStream::connect(a).await {
                        Ok(_) => {
                            connected = true;
                            break;
                        }
                        Err(e) => last = Some(CheckError::connect(&a, &e)),
                    }
                }
                if !connected {
                    return Err(last.unwrap_or_else(|| {
                        CheckError::Connect(format!("{host} resolved to no address"))
                    }));
                }
            }
            Address::Unix(path) => {
                UnixStream::connect(path)
                    .await
                    .map_err(|e| CheckError::connect(&address, &e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::net::{TcpListener, UnixListener};

    use super::*;

    #[tokio::test]
    async fn connects_over_ipv4_ipv6_host_names_and_unix_sockets() {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a4 = v4.local_addr().unwrap();
        let check = TcpCheck::new();
        assert_eq!(check.check(&Backend::new(a4)).await, Ok(()));
        // The port override: the backend says port 1, the check uses the listener's.
        let elsewhere = Backend::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(
            TcpCheck::new().with_port(a4.port()).check(&elsewhere).await,
            Ok(())
        );
        let host: Address = format!("localhost:{}", a4.port()).parse().unwrap();
        match TcpListener::bind("[::1]:0").await {
            Ok(v6) => {
                let a6 = v6.local_addr().unwrap();
                assert_eq!(check.check(&Backend::new(a6)).await, Ok(()));
            }
            Err(e) => println!("skipping IPv6: cannot bind [::1]: {e}"),
        }
        // localhost may resolve to ::1 first; the check tries every address.
        assert_eq!(check.check(&Backend::new(host)).await, Ok(()));

        let dir = std::env::temp_dir().join(format!("lb-core-tcpcheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = UnixListener::bind(&path).unwrap();
        let b = Backend::new(Address::Unix(path.clone()));
        assert_eq!(check.check(&b).await, Ok(()));
        drop(unix);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(check.check(&b).await, Err(CheckError::Connect(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn refused_and_unresolvable_fail_naming_the_target() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        let e = TcpCheck::new().check(&Backend::new(a)).await.unwrap_err();
        assert!(
            matches!(&e, CheckError::Connect(m) if m.contains(&a.to_string())),
            "{e}"
        );
        let bad: Address = "no-such-host.invalid:80".parse().unwrap();
        let b = Backend::new(bad);
        // Resolution goes through the system resolver; bound it in case DNS hangs.
        match tokio::time::timeout(Duration::from_secs(30), TcpCheck::new().check(&b)).await {
            Ok(r) => {
                let e = r.unwrap_err();
                assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
            }
            Err(_) => println!("skipping the unresolvable-name case: the resolver hung"),
        }
    }
}
