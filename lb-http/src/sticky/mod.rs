//! `Sticky`: session routes as mod_proxy_balancer and HAProxy keep them.
//!
//! **Apache** (`stickysession=NAME` or `NAME|urlparam`): the route is read from the URL
//! parameter first (`?urlparam=anything.route`, and with `scolonpathdelim` also the path
//! parameter `;urlparam=anything.route`, as in `;jsessionid=`), then from the cookie `NAME`
//! (`NAME=anything.route`). The route is what follows the first `.` of the value. When the
//! member that served the request has a route and it differs from the request's (Apache's
//! `BALANCER_ROUTE_CHANGED`), the response sets `NAME=.route; Path=/` -- the `ROUTEID` recipe
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

mod future;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use tower::Layer;

pub use future::ResponseFuture;

use crate::balance::{cookie, query_param};
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
}

impl StickyConfig {
    /// Apache's `stickysession=NAME` (or `NAME|param`).
    pub fn apache(spec: &str) -> StickyConfig {
        let (cookie, param) = match spec.split_once('|') {
            Some((c, p)) => (c.to_string(), Some(p.to_string())),
            None => (spec.to_string(), None),
        };
        StickyConfig {
            cookie,
            url_param: param,
            scolonpathdelim: false,
            insert: None,
            set_cookie: true,
        }
    }

    /// HAProxy's `cookie NAME insert ...`.
    pub fn insert(name: &str, options: InsertCookie) -> StickyConfig {
        StickyConfig {
            cookie: name.to_string(),
            url_param: None,
            scolonpathdelim: false,
            insert: Some(options),
            set_cookie: true,
        }
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
            Some(_) => format!("{}={}; Path=/", self.cookie, route),
            None => format!("{}=.{}; Path=/", self.cookie, route),
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
        let c = StickyConfig::apache("JSESSIONID|jsessionid");
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
        let r = StickyConfig::apache("ROUTEID");
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
        );
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
        let c = StickyConfig::apache("ROUTEID");
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
}
