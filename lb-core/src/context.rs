//! What a pick knows about the request: the client, a hash key, a sticky route.

use std::net::SocketAddr;

/// The context of one pick.
///
/// ```
/// use lb_core::PickContext;
/// let client = "192.0.2.7:40000".parse().unwrap();
/// let ctx = PickContext::new().with_client(client).with_key(b"user-42");
/// assert_eq!(ctx.key(), Some(&b"user-42"[..]));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    client: Option<SocketAddr>,
    key: Option<&'a [u8]>,
    route: Option<&'a str>,
}

impl<'a> PickContext<'a> {
    /// An empty context.
    pub fn new() -> Self {
        PickContext::default()
    }

    /// Sets the client's address (source hashing, the client table).
    pub fn with_client(mut self, client: SocketAddr) -> Self {
        self.client = Some(client);
        self
    }

    /// Sets the hash key (a header, cookie, path or parameter value); it is also the
    /// persistence key when given.
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the sticky route (a member's route name from a cookie or URL).
    pub fn with_route(mut self, route: &'a str) -> Self {
        self.route = Some(route);
        self
    }

    /// The client's address.
    pub fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    /// The hash key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The sticky route.
    pub fn route(&self) -> Option<&'a str> {
        self.route
    }
}
