//! `Sticky`: session routes as mod_proxy_balancer and HAProxy keep them.
//!
//! **Apache** (`stickysession=NAME` or `NAME|urlparam`): the route is read from the URL
//! parameter first (`?urlparam=anything.route`, and with `scolonpathdelim` also the path
//! parameter `;urlparam=anything.route`, as in `;jsessionid=`), then from the cookie `NAME`
//! (`NAME=anything.route`). The route is what follows the first `.` of the value. When the
//! member that served the request has a route and it differs from the request's (Apache's
//! `BALANCER_ROUTE_CHANGED`), the response sets `NAME=.route; Path=/` (the balancer's mount
//! rather than `/`: see below) -- the `ROUTEID` recipe
//! from Apache's documentation, with no extra configuration -- unless the cookie is the
//! application's: the response sets `NAME` itself, or the request's `NAME` (cookie or URL
//! parameter) holds more than a route (`abc.r4`, `abc`: an application's session, as
//! Tomcat's `JSESSIONID`). A session
//! that fails over keeps its cookie for the application to carry on (a cluster replicating
//! sessions knows `abc.r4` on every member); lb's `.route` would replace it and lose it.
//! (A first request without the cookie still gets `NAME=.route`: lb cannot tell then whose
//! the name is, and an application that makes a session sets its own.)
//!
//! **HAProxy** (`cookie NAME insert [indirect] [nocache] [httponly] [secure] [maxage N]`): the
//! cookie value is the route itself; it is inserted when the client's route differs from the
//! serving member's. `indirect` removes the cookie from the request sent to the member;
//! `nocache` adds `Cache-Control: private` to responses carrying the cookie, next to what
//! the member sent (`no-store` stays).
//!
//! With `nofailover` (configured on the lb-core balancer as `stubborn`), a request whose
//! routed member is unusable gets 503 instead of going elsewhere.
//!
//! **The cookie's `Path`.** A layer used alone sets `Path=/`. A balancer mounted on a prefix
//! by [`Site::new`](crate::router::Site::new) sets `Path=<mount>` (`/app` for a mount given
//! as `/app` or `/app/`): two balancers on `/app` and `/api` may then use the same cookie
//! name, since a client sends each cookie back only on the paths it matches (RFC 6265
//! section 5.1.4: `/app` matches `/app` and `/app/x`, not `/apple`, exactly the requests
//! the router gives that balancer). Where a client holds two cookies of the name (one
//! set for `/`, one for `/app`), the first in the `Cookie` field is read: clients put
//! longer paths first (RFC 6265 section 5.4; browsers, curl, Go's and Python's cookie jars
//! do), so the most specific cookie wins.
//!
//! **Names.** The cookie name must be an RFC 6265 / RFC 9110 token, and the URL parameter
//! name non-empty without `&`, `=`, `#`, `?`, `|`, `;`, spaces or controls: the
//! constructors refuse others with [`Error::Value`], since such a
//! cookie or parameter could never be read back and stickiness would fail silently.

mod future;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use tower::Layer;

pub use future::ResponseFuture;

use crate::balance::{cookie, query_param};
use crate::error::{Error, Result};
use crate::ext::{Route, Served};

/// HAProxy's inserted-cookie options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InsertCookie {
    /// `indirect`: remove the cookie from requests sent to members.
    pub indirect: bool,
    /// `nocache`: responses setting the cookie get `Cache-Control: private`.
    pub nocache: bool,
    /// `httponly`.
    pub httponly: bool,
    /// `secure`.
    pub secure: bool,
    /// `maxage` in seconds.
    pub max_age: Option<u64>,
}

/// Settings of a [`Sticky`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    /// The cookie name (`stickysession=NAME`).
    pub cookie: String,
    /// The URL parameter (`NAME|urlparam`); `None` means Apache's default, the cookie name.
    pub url_param: Option<String>,
    /// Also treat `;` as a URL parameter separator (Apache `scolonpathdelim`).
    pub scolonpathdelim: bool,
    /// HAProxy mode: the cookie holds the bare route and is inserted with these options.
    pub insert: Option<InsertCookie>,
    /// Set the cookie when the route changes (Apache mode; default true).
    pub set_cookie: bool,
    /// The `Path` attribute of the cookie set, when chosen ([`StickyConfig::with_cookie_path`]);
    /// `None`: `/`, or the mount under [`Site::new`](crate::router::Site::new).
    cookie_path: Option<String>,
}

impl StickyConfig {
    /// Apache's `stickysession=NAME` (or `NAME|param`). Refuses a `NAME` that is not a
    /// cookie token and a `param` that could not be found in a URL (see the module docs).
    pub fn apache(spec: &str) -> Result<StickyConfig> {
        let (cookie, param) = match spec.split_once('|') {
            Some((c, p)) => (c, Some(p)),
            None => (spec, None),
        };
        check_cookie_name(cookie)?;
        if let Some(p) = param {
            check_url_param(p)?;
        }
        Ok(StickyConfig {
            cookie: cookie.to_string(),
            url_param: param.map(str::to_string),
            scolonpathdelim: false,
            insert: None,
            set_cookie: true,
            cookie_path: None,
        })
    }

    /// HAProxy's `cookie NAME insert ...`. Refuses a `NAME` that is not a cookie token.
    pub fn insert(name: &str, options: InsertCookie) -> Result<StickyConfig> {
        check_cookie_name(name)?;
        Ok(StickyConfig {
            cookie: name.to_string(),
            url_param: None,
            scolonpathdelim: false,
            insert: Some(options),
            set_cookie: true,
            cookie_path: None,
        })
    }

    /// The same settings with the cookie scoped to `path` (`Path=<path>`), so that it is
    /// sent back only on requests under it; [`Site::new`](crate::router::Site::new) keeps
    /// a path chosen here instead of its mount. `path` must start with `/` and hold no `;`,
    /// space or control character (it is written into `Set-Cookie` as it is).
    pub fn with_cookie_path(mut self, path: &str) -> Result<StickyConfig> {
        if !path.starts_with('/') {
            return Err(Error::Value {
                key: "cookie path".into(),
                value: path.into(),
                reason: "it must start with /".into(),
            });
        }
        check_name("cookie path", path, "", |c| {
            c == ';' || !c.is_ascii_graphic()
        })?;
        self.cookie_path = Some(path.into());
        Ok(self)
    }

    /// The `Path` attribute of the cookie this config sets.
    pub fn cookie_path(&self) -> &str {
        self.cookie_path.as_deref().unwrap_or("/")
    }

    /// The config for a balancer mounted on `mount` (as [`Site::new`] keeps it: no
    /// trailing `/`, empty for the root): `Path=<mount>`, `/` for the root, unless a path
    /// was chosen with [`StickyConfig::with_cookie_path`]. A mount that
    /// cannot be written as a cookie path (a `;` in it: lb's own check allows path
    /// parameters) is cut to its segments before the `;`, a prefix that still matches
    /// every request of the mount.
    ///
    /// [`Site::new`]: crate::router::Site::new
    pub(crate) fn scoped_to(mut self, mount: &str) -> StickyConfig {
        if self.cookie_path.is_some() {
            return self;
        }
        let cut = match mount.find(';') {
            Some(i) => &mount[..mount[..i].rfind('/').unwrap_or(0)],
            None => mount,
        };
        self.cookie_path = Some(if cut.is_empty() { "/" } else { cut }.into());
        self
    }

    /// The route of `req`, URL parameter first, then the cookie.
    pub fn route_of<B>(&self, req: &Request<B>) -> Option<String> {
        self.lookup(req).0
    }

    /// The route of `req`, and whether the request carries the application's own session
    /// value (Apache mode: a URL parameter or cookie holding more than `.route`, such as
    /// Tomcat's `abc.r4`). The cookie is read once.
    fn lookup<B>(&self, req: &Request<B>) -> (Option<String>, bool) {
        let app = |v: &str| self.insert.is_none() && !v.is_empty() && !v.starts_with('.');
        let param = self.url_param.as_deref().unwrap_or(&self.cookie);
        let from_url = req
            .uri()
            .query()
            .and_then(|q| query_param(q, param))
            .or_else(|| {
                if !self.scolonpathdelim {
                    return None;
                }
                path_param(req.uri().path(), param)
            });
        let in_cookie = cookie(req.headers(), &self.cookie);
        let app_value = from_url.as_deref().is_some_and(app) || in_cookie.is_some_and(app);
        let route = from_url
            .and_then(|v| self.route_in(&v))
            .or_else(|| in_cookie.and_then(|v| self.route_in(v)));
        (route, app_value)
    }

    fn route_in(&self, value: &str) -> Option<String> {
        let r = match (&self.insert, value.split_once('.')) {
            (_, Some((_, r))) => r,
            (Some(_), None) => value,
            (None, None) => return None,
        };
        (!r.is_empty()).then(|| r.to_string())
    }

    fn set_cookie_value(&self, route: &str) -> Option<HeaderValue> {
        let mut v = match &self.insert {
            Some(_) => format!("{}={}; Path={}", self.cookie, route, self.cookie_path()),
            None => format!("{}=.{}; Path={}", self.cookie, route, self.cookie_path()),
        };
        if let Some(o) = &self.insert {
            if let Some(age) = o.max_age {
                v.push_str(&format!("; Max-Age={age}"));
            }
            if o.httponly {
                v.push_str("; HttpOnly");
            }
            if o.secure {
                v.push_str("; Secure");
            }
        }
        HeaderValue::from_str(&v).ok()
    }
}

/// A cookie name: an RFC 9110 token (RFC 6265 section 4.1.1's `cookie-name`).
fn check_cookie_name(name: &str) -> Result<()> {
    check_name(
        "cookie name",
        name,
        " (it must be an RFC 6265 token)",
        |c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)),
    )
}

/// A URL parameter name lb can find in a query or a path parameter.
fn check_url_param(name: &str) -> Result<()> {
    check_name("URL parameter name", name, "", |c| {
        "&=#?|;".contains(c) || c.is_whitespace() || c.is_control()
    })
}

/// Refuses an empty `name`, or one with a character `bad` finds, as a `what`.
fn check_name(what: &str, name: &str, hint: &str, bad: impl Fn(char) -> bool) -> Result<()> {
    let reason = if name.is_empty() {
        format!("a {what} cannot be empty")
    } else if let Some(c) = name.chars().find(|&c| bad(c)) {
        format!("{c:?} cannot be in a {what}{hint}")
    } else {
        return Ok(());
    };
    Err(Error::Value {
        key: what.into(),
        value: name.into(),
        reason,
    })
}

/// `;name=value` in the path (the last path parameter of that name).
fn path_param(path: &str, name: &str) -> Option<String> {
    path.split(';')
        .skip(1)
        .filter_map(|p| p.split('/').next()?.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .last()
}

/// Adds [`Sticky`] to a service.
#[derive(Debug, Clone)]
pub struct StickyLayer {
    config: Arc<StickyConfig>,
    cookies: Arc<CookieCache>,
}

impl StickyLayer {
    /// A layer with `config`.
    pub fn new(config: StickyConfig) -> Self {
        StickyLayer {
            config: Arc::new(config),
            cookies: Arc::default(),
        }
    }
}

/// `Set-Cookie` values by route, made once per route rather than per response. Routes are
/// the members' (a handful, so a list searched in order); past [`CookieCache::MAX`] entries
/// values are made each time.
#[derive(Debug, Default)]
pub(crate) struct CookieCache(std::sync::Mutex<Vec<(Box<str>, HeaderValue)>>);

impl CookieCache {
    const MAX: usize = 64;

    fn get(&self, config: &StickyConfig, route: &str) -> Option<HeaderValue> {
        let mut list = self.0.lock().ok()?;
        if let Some((_, v)) = list.iter().find(|(r, _)| &**r == route) {
            return Some(v.clone());
        }
        let v = config.set_cookie_value(route)?;
        if list.len() < Self::MAX {
            list.push((route.into(), v.clone()));
        }
        Some(v)
    }
}

impl<S> Layer<S> for StickyLayer {
    type Service = Sticky<S>;

    fn layer(&self, inner: S) -> Sticky<S> {
        Sticky {
            inner,
            config: self.config.clone(),
            cookies: self.cookies.clone(),
        }
    }
}

/// Reads the route of each request and sets the route cookie when it changes.
#[derive(Debug, Clone)]
pub struct Sticky<S> {
    inner: S,
    config: Arc<StickyConfig>,
    cookies: Arc<CookieCache>,
}

impl<S, B, RB> tower::Service<Request<B>> for Sticky<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let (route, app_cookie) = self.config.lookup(&req);
        if let Some(r) = &route {
            req.extensions_mut().insert(Route(r.clone()));
        }
        if self.config.insert.as_ref().is_some_and(|i| i.indirect) {
            remove_cookie(req.headers_mut(), &self.config.cookie);
        }
        ResponseFuture::new(
            self.inner.call(req),
            route,
            app_cookie,
            self.config.clone(),
            self.cookies.clone(),
        )
    }
}

/// Applies the response side: the cookie when the serving member's route differs, unless
/// the request carries the application's session value (`app_cookie`: in the cookie or the
/// URL parameter).
fn on_response<B>(
    resp: &mut Response<B>,
    requested: Option<&str>,
    app_cookie: bool,
    config: &StickyConfig,
    cookies: &CookieCache,
) {
    if !config.set_cookie || app_cookie {
        return;
    }
    let Some(served) = resp.extensions().get::<Served>() else {
        return;
    };
    let Some(route) = served.route.as_deref() else {
        return;
    };
    if requested == Some(route) {
        return;
    }
    // Apache mode: the cookie is the application's session cookie. When the application
    // sets it, its value is the session (and carries the route already); lb's `.route`
    // would replace it in the client and lose the session.
    if config.insert.is_none() && sets_cookie(resp.headers(), &config.cookie) {
        return;
    }
    if let Some(v) = cookies.get(config, route) {
        resp.headers_mut().append(header::SET_COOKIE, v);
        // Added, as HAProxy adds it: a member's `no-store` or `max-age=0` stays.
        if config.insert.as_ref().is_some_and(|i| i.nocache) {
            resp.headers_mut()
                .append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
    }
}

/// Whether a `Set-Cookie` field of `headers` sets the cookie `name`.
fn sets_cookie(headers: &http::HeaderMap, name: &str) -> bool {
    headers.get_all(header::SET_COOKIE).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b'=')
            .next()
            .is_some_and(|n| n.trim_ascii() == name.as_bytes())
    })
}

/// Removes cookie `name` from the `Cookie` fields.
fn remove_cookie(headers: &mut http::HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split_once('=').map(|(k, _)| k) != Some(name))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, cookie: Option<&str>) -> Request<()> {
        let mut b = Request::get(uri);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn apache_routes() {
        let c = StickyConfig::apache("JSESSIONID|jsessionid").unwrap();
        assert_eq!(
            c.route_of(&req("/", Some("JSESSIONID=abc.node1")))
                .as_deref(),
            Some("node1")
        );
        assert_eq!(
            c.route_of(&req("/?jsessionid=x.node2", Some("JSESSIONID=abc.node1")))
                .as_deref(),
            Some("node2")
        );
        assert_eq!(c.route_of(&req("/;jsessionid=x.node3", None)), None);
        let mut c2 = c.clone();
        c2.scolonpathdelim = true;
        assert_eq!(
            c2.route_of(&req("/app;jsessionid=x.node3?a=b", None))
                .as_deref(),
            Some("node3")
        );
        assert_eq!(c.route_of(&req("/", Some("JSESSIONID=noroute"))), None);
        let r = StickyConfig::apache("ROUTEID").unwrap();
        assert_eq!(
            r.route_of(&req("/", Some("ROUTEID=.mysite1"))).as_deref(),
            Some("mysite1")
        );
        assert_eq!(
            r.set_cookie_value("mysite2").unwrap(),
            "ROUTEID=.mysite2; Path=/"
        );
    }

    #[test]
    fn haproxy_insert() {
        let c = StickyConfig::insert(
            "SRV",
            InsertCookie {
                indirect: true,
                nocache: true,
                httponly: true,
                secure: false,
                max_age: Some(60),
            },
        )
        .unwrap();
        assert_eq!(
            c.route_of(&req("/", Some("a=1; SRV=s2"))).as_deref(),
            Some("s2")
        );
        assert_eq!(
            c.set_cookie_value("s1").unwrap(),
            "SRV=s1; Path=/; Max-Age=60; HttpOnly"
        );
        let mut h = http::HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=1; SRV=s2; b=2"));
        remove_cookie(&mut h, "SRV");
        assert_eq!(h["cookie"], "a=1; b=2");
    }

    #[test]
    fn cookie_set_only_when_route_changes() {
        let c = StickyConfig::apache("ROUTEID").unwrap();
        let served = |route: &str| {
            let mut r = Response::new(());
            r.extensions_mut().insert(Served {
                id: lb_core::BackendId(0),
                route: Some(route.into()),
                sticky: false,
            });
            r
        };
        let cache = CookieCache::default();
        let mut same = served("a");
        on_response(&mut same, Some("a"), false, &c, &cache);
        assert!(same.headers().get("set-cookie").is_none());
        let mut changed = served("b");
        on_response(&mut changed, Some("a"), false, &c, &cache);
        assert_eq!(changed.headers()["set-cookie"], "ROUTEID=.b; Path=/");
        let mut fresh = served("a");
        on_response(&mut fresh, None, false, &c, &cache);
        assert_eq!(fresh.headers()["set-cookie"], "ROUTEID=.a; Path=/");
        // From the cache the second time, the same value.
        let mut again = served("b");
        on_response(&mut again, None, false, &c, &cache);
        assert_eq!(again.headers()["set-cookie"], "ROUTEID=.b; Path=/");
    }

    #[test]
    fn names_that_could_never_be_read_back_are_refused() {
        let reason = |spec: &str| match StickyConfig::apache(spec) {
            Err(Error::Value { key, reason, .. }) => format!("{key}: {reason}"),
            other => panic!("{spec:?} accepted: {other:?}"),
        };
        assert_eq!(reason(""), "cookie name: a cookie name cannot be empty");
        assert!(reason("bad name;x").starts_with("cookie name: ' ' cannot be"));
        assert!(reason("a;b").starts_with("cookie name: ';' cannot be"));
        assert!(reason("=x").starts_with("cookie name: '=' cannot be"));
        assert!(reason("|p").starts_with("cookie name: a cookie name cannot be empty"));
        assert!(reason("X|").starts_with("URL parameter name: a URL parameter name cannot"));
        // The parameter part of `A|b|c` would be `b|c`: never found in a URL.
        assert!(reason("A|b|c").starts_with("URL parameter name: '|' cannot be"));
        assert!(reason("A|b c").starts_with("URL parameter name: ' ' cannot be"));
        assert!(reason("A|b=c").starts_with("URL parameter name: '=' cannot be"));
        assert!(reason("A|b&c").starts_with("URL parameter name: '&' cannot be"));
        assert!(reason("caf\u{e9}").starts_with("cookie name: '\u{e9}' cannot be"));
        let e = StickyConfig::apache("a;b").unwrap_err().to_string();
        assert!(e.contains("invalid value \"a;b\" for cookie name"), "{e}");
        for bad in ["", "a;b", "=x", "a b", "a,b", "a\"b", "a\tb"] {
            assert!(
                StickyConfig::insert(bad, InsertCookie::default()).is_err(),
                "{bad:?}"
            );
        }
        // Tokens, including the RFC 9110 punctuation, are fine.
        for good in [
            "ROUTEID",
            "JSESSIONID|jsessionid",
            "__Host-x",
            "a!#$%&'*+-.^_`~",
        ] {
            StickyConfig::apache(good).unwrap();
        }
        StickyConfig::insert("S|RV", InsertCookie::default()).unwrap();
    }

    #[test]
    fn the_cookie_is_scoped_to_the_mount() {
        let c = StickyConfig::apache("ROUTEID").unwrap();
        assert_eq!(c.cookie_path(), "/");
        let app = c.clone().scoped_to("/app");
        assert_eq!(app.set_cookie_value("a").unwrap(), "ROUTEID=.a; Path=/app");
        assert_eq!(c.clone().scoped_to("").cookie_path(), "/");
        // A path parameter cannot be written in `Path=`: the segments before it are.
        assert_eq!(c.clone().scoped_to("/a;v=1/x").cookie_path(), "/");
        assert_eq!(c.clone().scoped_to("/x/a;v=1").cookie_path(), "/x");
        // A path chosen by the caller is kept.
        let chosen = c.clone().with_cookie_path("/").unwrap().scoped_to("/app");
        assert_eq!(chosen.cookie_path(), "/");
        assert!(c.clone().with_cookie_path("app").is_err());
        assert!(c.clone().with_cookie_path("/a;b").is_err());
        assert!(c.with_cookie_path("/a b").is_err());
        let srv = StickyConfig::insert(
            "SRV",
            InsertCookie {
                secure: true,
                ..Default::default()
            },
        )
        .unwrap()
        .scoped_to("/api");
        assert_eq!(
            srv.set_cookie_value("s1").unwrap(),
            "SRV=s1; Path=/api; Secure"
        );
    }

    #[test]
    fn of_two_cookies_of_the_name_the_first_and_most_specific_wins() {
        // A client holding `ROUTEID` for `/app` and for `/` sends both on `/app/x`, the
        // longer path first (RFC 6265 section 5.4).
        let c = StickyConfig::apache("ROUTEID").unwrap().scoped_to("/app");
        let r = req("/app/x", Some("ROUTEID=.app1; other=1; ROUTEID=.root1"));
        assert_eq!(c.route_of(&r).as_deref(), Some("app1"));
        let r = req("/app/x", Some("ROUTEID=.app1"));
        assert_eq!(c.route_of(&r).as_deref(), Some("app1"));
    }
}
