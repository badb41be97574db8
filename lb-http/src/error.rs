//! The errors of lb-http: one enum for configuration and serving, and the leaf errors
//! services return inside a [`BoxError`](crate::BoxError) so callers can downcast them.

use std::time::Duration;

/// What went wrong configuring or running the HTTP layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A member URL could not be used as a backend.
    #[error("invalid member url {url:?}: {reason}")]
    MemberUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A setting's name is not one lb knows.
    #[error("unknown setting {key:?} (known: {known})")]
    UnknownSetting {
        /// The name as given.
        key: String,
        /// The names that are known.
        known: &'static str,
    },
    /// A configuration value was refused.
    #[error("invalid value {value:?} for {key}: {reason}")]
    Value {
        /// The option name.
        key: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The result type of lb-http.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the proxy could not get a response from a backend. Returned by
/// [`Proxy`](crate::proxy::Proxy) inside a [`BoxError`](crate::BoxError); every variant maps
/// to one status code (see [`ProxyError::status`]). [`BodyTimeout`](Self::BodyTimeout)
/// comes from a response body instead, after the head was sent: its status is not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The TCP connection to the backend could not be opened.
    #[error("backend connect failed: {0}")]
    Connect(String),
    /// The TCP connection to the backend was not opened within the connect timeout.
    #[error("backend connect timeout after {0:?}")]
    ConnectTimeout(Duration),
    /// The backend did not send a response head within the response timeout (on the
    /// direct path, nothing moved for that long; see `ProxyConfig::response_timeout`).
    #[error("backend response timeout after {0:?}")]
    ResponseTimeout(Duration),
    /// The backend's response body stalled: no byte of it came within the response
    /// timeout. The head was sent already, so the client's connection is closed (its HTTP/2
    /// stream reset) and it sees the body end early.
    #[error("backend response body stalled for {0:?}")]
    BodyTimeout(Duration),
    /// The backend sent something that is not a valid HTTP response, or closed early.
    #[error("bad response from backend: {0}")]
    BadResponse(String),
    /// The request carried no [`Target`](crate::proxy::Target): no layer chose a backend.
    #[error("no backend chosen for the request")]
    NoTarget,
    /// The request could not be rewritten for the backend.
    #[error("cannot forward request: {0}")]
    Request(String),
    /// This proxy ran out of what it needs to open a connection (file descriptors, buffers,
    /// memory): its own shortage, not the backend's failure (HAProxy's "resource"
    /// termination). The connect was tried a second time after the process's idle
    /// backend connections were closed to free theirs; no other member is tried: it would
    /// meet the same shortage.
    #[error("out of local resources to connect to the backend: {0}")]
    LocalResources(String),
    /// The client sent no byte of its request body for this long while the proxy waited
    /// for one (nginx's `client_body_timeout`, Apache's `RequestReadTimeout body=`).
    #[error("client request body stalled for {0:?}")]
    ClientBodyTimeout(Duration),
    /// The client's request body failed while it was being sent on: the client went away or
    /// sent a malformed body.
    #[error("client request body failed: {0}")]
    ClientBody(String),
}

impl ProxyError {
    /// The status code the client gets for this error.
    pub fn status(&self) -> http::StatusCode {
        match self {
            ProxyError::ResponseTimeout(_) | ProxyError::BodyTimeout(_) => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::NoTarget | ProxyError::LocalResources(_) => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Request(_) | ProxyError::ClientBody(_) => http::StatusCode::BAD_REQUEST,
            ProxyError::ClientBodyTimeout(_) => http::StatusCode::REQUEST_TIMEOUT,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// What the client is told: the kind of failure, without the backend's address or
    /// the system's error text, which go to the log (as Apache and nginx keep them in
    /// their error logs).
    pub fn client_text(&self) -> String {
        match self {
            ProxyError::Connect(_) => "backend connect failed".into(),
            ProxyError::BadResponse(_) => "bad response from backend".into(),
            ProxyError::LocalResources(_) => "proxy out of resources, try again".into(),
            ProxyError::ClientBody(_) => "request body failed".into(),
            other => other.to_string(),
        }
    }

    /// True when no byte of the request reached the backend, so another backend may be tried
    /// even for a non-idempotent request.
    pub fn is_connect(&self) -> bool {
        matches!(self, ProxyError::Connect(_) | ProxyError::ConnectTimeout(_))
    }

    /// True when the backend is not to blame: the client's fault or this proxy's own
    /// shortage. Passive health does not count it against the member.
    pub fn is_not_the_backends(&self) -> bool {
        matches!(
            self,
            ProxyError::NoTarget
                | ProxyError::Request(_)
                | ProxyError::LocalResources(_)
                | ProxyError::ClientBodyTimeout(_)
                | ProxyError::ClientBody(_)
        )
    }
}

/// A request the proxy did not send: no connection to its backend could be opened (a
/// [`ProxyError::Connect`] or [`ProxyError::ConnectTimeout`]). The request comes back as it
/// was given, without its [`Target`](crate::proxy::Target), so a layer before the proxy (as
/// [`Balance`](crate::balance::Balance) does) can send it to another backend without having
/// kept a copy.
///
/// [`Proxy`](crate::proxy::Proxy) returns it inside a [`BoxError`](crate::BoxError);
/// [`proxy_error`] finds the [`ProxyError`] in either form.
#[derive(Debug)]
pub struct NotSent {
    error: ProxyError,
    /// In a mutex only to make the error `Sync`, as `BoxError` needs.
    request: std::sync::Mutex<Option<http::Request<crate::body::ProxyBody>>>,
}

impl NotSent {
    pub(crate) fn new(error: ProxyError, request: http::Request<crate::body::ProxyBody>) -> Self {
        NotSent {
            error,
            request: std::sync::Mutex::new(Some(request)),
        }
    }

    /// Why the request was not sent.
    pub fn error(&self) -> &ProxyError {
        &self.error
    }

    /// The error and the request.
    pub fn into_parts(self) -> (ProxyError, Option<http::Request<crate::body::ProxyBody>>) {
        let request = self.request.into_inner().unwrap_or_else(|p| p.into_inner());
        (self.error, request)
    }
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for NotSent {}

/// The [`ProxyError`] in `err`, given as it is or in a [`NotSent`].
pub fn proxy_error(err: &crate::BoxError) -> Option<&ProxyError> {
    err.downcast_ref::<ProxyError>()
        .or_else(|| err.downcast_ref::<NotSent>().map(NotSent::error))
}

/// No member could take the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BalanceError {
    /// Every member is down, disabled, in error or already tried.
    #[error("no usable member in balancer {0:?}")]
    NoMember(String),
    /// The sticky route names a member that cannot take it and `nofailover` is set.
    #[error("route {0:?} is unavailable and nofailover is set")]
    RouteUnavailable(String),
    /// The member (or each of the members) stayed at its `max` concurrency for longer than
    /// its wait for a slot.
    #[error("{member} busy: {}", no_slot(*waited))]
    QueueTimeout {
        /// Which: `member ADDRESS`, or `members ADDRESS, ADDRESS...` when the request waited
        /// for any of several.
        member: String,
        /// How long the request waited (the longest wait).
        waited: Duration,
    },
}

impl BalanceError {
    /// The status code the client gets for this error.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }

    /// What the client is told: as the error says, without a member's address.
    pub fn client_text(&self) -> String {
        match self {
            BalanceError::QueueTimeout { waited, .. } => {
                format!("member busy: {}", no_slot(*waited))
            }
            other => other.to_string(),
        }
    }
}

/// How a request found no slot: after its wait, or at once (`acquire=0`).
fn no_slot(waited: Duration) -> String {
    if waited.is_zero() {
        "no slot free".into()
    } else {
        format!("no slot within {waited:?}")
    }
}

/// Why a balancer-manager action was refused (see [`Manager`](crate::admin::Manager)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The nonce was missing or wrong.
    #[error("bad or missing nonce")]
    Nonce,
    /// No balancer by that name.
    #[error("no balancer named {0:?}")]
    NoBalancer(String),
    /// No member by that id or URL.
    #[error("no member {0:?} in this balancer")]
    NoMember(String),
    /// A value was refused.
    #[error(transparent)]
    Value(#[from] crate::Error),
    /// lb-core refused the change.
    #[error("{0}")]
    Core(#[from] lb_core::Error),
    /// A section's key is taken (`nonce`, `balancers`, or an earlier section's).
    #[error("manager section key {0:?} is taken")]
    Section(String),
    /// Another member of the balancer has the route.
    #[error(
        "duplicate route {route:?} (also member {other}): sticky sessions would all go to one of them"
    )]
    DuplicateRoute {
        /// The route.
        route: String,
        /// The URL of the member that has it.
        other: String,
    },
    /// A name for [`ManagerConfig::hosts`](crate::admin::ManagerConfig::hosts) that is not
    /// a DNS name.
    #[error(
        "manager host name {0:?} is not a DNS name (letters, digits, hyphens and dots; no scheme, port or path)"
    )]
    HostName(String),
    /// A form field or JSON key the manager does not know (a misspelt one would change
    /// nothing).
    #[error("{0}")]
    Unknown(String),
}
