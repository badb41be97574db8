//! Apache's sticky route convention: `session.route`, in a cookie or a URL parameter.

use crate::error::{Error, Result};

/// Reads and writes routes in session values, Apache `mod_proxy_balancer` style.
///
/// A session value carries the route of the member that made it after the first
/// separator: in `abc123.node1` the route is `node1` (Tomcat's `jvmRoute`). The separator is
/// `.` by default and configurable as Apache's `stickysessionsep`.
///
/// ```
/// use lb_core::persistence::RouteCodec;
///
/// let codec = RouteCodec::default();
/// assert_eq!(codec.route_of("abc.node1"), Some("node1"));
/// assert_eq!(codec.route_of("abc.node1.eu"), Some("node1.eu")); // after the *first* dot
/// assert_eq!(codec.route_of("abc"), None);
/// assert_eq!(codec.format("abc", "node1").unwrap(), "abc.node1");
///
/// // The URL-parameter form: `?jsessionid=...` or Tomcat's `;jsessionid=...`.
/// let url = "/shop;jsessionid=F00D.node2?item=7";
/// assert_eq!(codec.route_from_url(url, "jsessionid", false), Some("node2"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCodec {
    separator: char,
}

impl Default for RouteCodec {
    fn default() -> Self {
        RouteCodec { separator: '.' }
    }
}

/// Characters that end or split a value in a URL query or path parameter or a cookie.
fn is_reserved(c: char) -> bool {
    matches!(c, ';' | '?' | '&' | '=' | '#' | ',' | '"' | '\\' | '/')
        || c.is_whitespace()
        || c.is_control()
}

impl RouteCodec {
    /// A codec with this separator (Apache `stickysessionsep`). Characters that delimit
    /// URL parameters or cookies (`; ? & = # , " \ /`), white space and control characters
    /// are refused.
    pub fn new(separator: char) -> Result<Self> {
        if is_reserved(separator) {
            return Err(Error::InvalidRoute {
                value: separator.to_string(),
                reason: "the separator cannot be a URL or cookie delimiter, space or control character",
            });
        }
        Ok(RouteCodec { separator })
    }

    /// The separator.
    pub fn separator(&self) -> char {
        self.separator
    }

    /// The route in a session value: what follows the first separator, if not empty.
    pub fn route_of<'a>(&self, value: &'a str) -> Option<&'a str> {
        value
            .split_once(self.separator)
            .map(|(_, route)| route)
            .filter(|r| !r.is_empty())
    }

    /// The session part of a value: what precedes the first separator (all of it when
    /// there is none).
    pub fn session_of<'a>(&self, value: &'a str) -> &'a str {
        value
            .split_once(self.separator)
            .map_or(value, |(session, _)| session)
    }

    /// `session`, the separator, `route`. The session may not contain the separator (the
    /// route would be read from the wrong place), the route may not be empty, and neither
    /// may contain URL or cookie delimiters.
    pub fn format(&self, session: &str, route: &str) -> Result<String> {
        if session.contains(self.separator) {
            return Err(Error::InvalidRoute {
                value: session.to_owned(),
                reason: "the session part contains the route separator",
            });
        }
        if route.is_empty() {
            return Err(Error::InvalidRoute {
                value: String::new(),
                reason: "a route cannot be empty",
            });
        }
        for v in [session, route] {
            if v.chars().any(is_reserved) {
                return Err(Error::InvalidRoute {
                    value: v.to_owned(),
                    reason: "contains a URL or cookie delimiter, space or control character",
                });
            }
        }
        let mut s = String::with_capacity(session.len() + route.len() + 4);
        s.push_str(session);
        s.push(self.separator);
        s.push_str(route);
        Ok(s)
    }

    /// The route in the session parameter `name` of a URL (see [`url_param`]).
    pub fn route_from_url<'a>(
        &self,
        url: &'a str,
        name: &str,
        scolon_path_delim: bool,
    ) -> Option<&'a str> {
        url_param(url, name, scolon_path_delim).and_then(|v| self.route_of(v))
    }
}

/// The value of the parameter `name` in a URL, as Apache's `get_path_param` finds it:
/// `name=value` preceded by `?`, `&` or `;` (a query parameter or a Tomcat path parameter
/// such as `/app;jsessionid=abc.node1`). The value ends at `?`, `&`, `#`, and with
/// `scolon_path_delim` (Apache's `scolonpathdelim`) also at `;`. The first non-empty match
/// wins.
///
/// Unlike Apache, which matches `name` anywhere (so `xjsessionid=` also matched), the name
/// must start a parameter here.
///
/// ```
/// use lb_core::persistence::url_param;
///
/// assert_eq!(url_param("/a?x=1&jsessionid=s.r1&y=2", "jsessionid", false), Some("s.r1"));
/// assert_eq!(url_param("/a;jsessionid=s.r1;foo=aab", "jsessionid", false), Some("s.r1;foo=aab"));
/// assert_eq!(url_param("/a;jsessionid=s.r1;foo=aab", "jsessionid", true), Some("s.r1"));
/// assert_eq!(url_param("/a?xjsessionid=s.r1", "jsessionid", false), None);
/// ```
pub fn url_param<'a>(url: &'a str, name: &str, scolon_path_delim: bool) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let bytes = url.as_bytes();
    let mut from = 0;
    while let Some(off) = url.get(from..)?.find(name) {
        let at = from + off;
        let after = at + name.len();
        let starts_param = at > 0 && matches!(bytes[at - 1], b'?' | b'&' | b';');
        if starts_param && bytes.get(after) == Some(&b'=') {
            let rest = &url[after + 1..];
            let end = rest
                .find(|c| matches!(c, '?' | '&' | '#') || (scolon_path_delim && c == ';'))
                .unwrap_or(rest.len());
            if end > 0 {
                return Some(&rest[..end]);
            }
        }
        from = at + url[at..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn routes_follow_the_first_separator() {
        let c = RouteCodec::default();
        assert_eq!(c.route_of("abc.node1"), Some("node1"));
        assert_eq!(c.route_of("abc."), None, "empty route");
        assert_eq!(c.route_of(".r"), Some("r"));
        assert_eq!(c.session_of("abc.node1.x"), "abc");
        assert_eq!(c.session_of("abc"), "abc");
        let tilde = RouteCodec::new('~').unwrap();
        assert_eq!(tilde.route_of("a.b~node"), Some("node"));
        assert_eq!(tilde.format("a.b", "n").unwrap(), "a.b~n");
    }

    #[test]
    fn bad_values_are_refused_naming_them() {
        let c = RouteCodec::default();
        let e = c.format("a.b", "r").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid route value \"a.b\": the session part contains the route separator"
        );
        assert!(c.format("a", "").is_err());
        assert!(
            c.format("a", "r;x")
                .unwrap_err()
                .to_string()
                .contains("\"r;x\"")
        );
        assert!(c.format("a b", "r").is_err());
        for bad in [';', '=', '&', ' ', '\n'] {
            assert!(RouteCodec::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_forms() {
        let c = RouteCodec::default();
        let r = |u| c.route_from_url(u, "jsessionid", true);
        assert_eq!(r("/p?jsessionid=abc.n1"), Some("n1"));
        assert_eq!(r("/p;jsessionid=abc.n1?q=1"), Some("n1"));
        assert_eq!(r("/p?a=1&jsessionid=abc.n1&b=2"), Some("n1"));
        assert_eq!(
            r("/p?jsessionid=&jsessionid=abc.n2"),
            Some("n2"),
            "skips empty"
        );
        assert_eq!(r("/p?jsessionid=abc"), None, "no route");
        assert_eq!(r("/p?JSESSIONID=abc.n1"), None, "case sensitive, as Apache");
        assert_eq!(r("/p?jsessionid"), None);
        assert_eq!(r("jsessionid=abc.n1"), None, "not a parameter");
        assert_eq!(url_param("/p?x=1", "", false), None);
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,16}"
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            session in "[A-Za-z0-9_-]{0,16}",
            route in "[A-Za-z0-9_.~-]{1,16}",
            sep in prop::sample::select(vec!['.', '~', ':', '!', '*']),
        ) {
            let c = RouteCodec::new(sep).unwrap();
            let route: String = route.chars().filter(|&ch| ch != sep).collect();
            prop_assume!(!route.is_empty() && !session.contains(sep));
            let v = c.format(&session, &route).unwrap();
            prop_assert_eq!(c.route_of(&v), Some(route.as_str()));
            prop_assert_eq!(c.session_of(&v), session.as_str());
        }

        #[test]
        fn url_forms_round_trip(
            path in "(/[a-z0-9]{0,8}){1,3}",
            session in token(),
            route in token(),
            before in proptest::collection::vec((token(), token()), 0..3),
            after in proptest::collection::vec((token(), token()), 0..3),
            path_param in any::<bool>(),
        ) {
            let c = RouteCodec::default();
            let v = c.format(&session.replace('.', ""), &route).unwrap();
            let query = |ps: &[(String, String)]| {
                ps.iter().map(|(k, v)| format!("{k}x={v}")).collect::<Vec<_>>().join("&")
            };
            let url = if path_param {
                format!("{path};jsessionid={v}?{}", query(&after))
            } else {
                let b = query(&before);
                let sep = if b.is_empty() { "" } else { "&" };
                format!("{path}?{b}{sep}jsessionid={v}&{}", query(&after))
            };
            prop_assert_eq!(c.route_from_url(&url, "jsessionid", true), Some(route.as_str()));
            prop_assert_eq!(url_param(&url, "jsessionid", false), Some(v.as_str()));
        }

        #[test]
        fn parsing_never_panics(url in any::<String>(), name in any::<String>(), scolon in any::<bool>()) {
            let c = RouteCodec::default();
            if let Some(v) = url_param(&url, &name, scolon) {
                prop_assert!(!v.is_empty());
                prop_assert!(!v.contains(['?', '&', '#']));
                prop_assert!(url.contains(v));
            }
            let _ = c.route_from_url(&url, &name, scolon);
            let _ = c.route_of(&url);
            let _ = c.session_of(&url);
        }

        #[test]
        fn parsing_never_panics_on_url_like_input(url in "[a-z;?&=.#é/]{0,40}", scolon in any::<bool>()) {
            let v = url_param(&url, "id", scolon);
            if let Some(v) = v {
                prop_assert!(!v.contains(['?', '&', '#']));
                prop_assert!(!scolon || !v.contains(';'));
            }
        }
    }
}
