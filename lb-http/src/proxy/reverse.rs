//! ProxyPassReverse against every member of the request's balancer; the [module
//! docs](super#proxypassreverse) say how, and why.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use http::header::{self, HeaderValue};
use lb_core::{Balancer, Member};

use super::Target;

/// The response fields ProxyPassReverse rewrites.
const REWRITTEN: [header::HeaderName; 3] = [
    header::LOCATION,
    header::CONTENT_LOCATION,
    header::HeaderName::from_static("uri"),
];

/// The base URLs of every member of a balancer, for ProxyPassReverse (see
/// [`Target::with_member_urls`]). They follow the balancer's membership: a member added or
/// removed at run time (the balancer manager, a configuration reload) counts from the next
/// response on. Nothing is done per request: the list is looked at only for a response that
/// carries a field to rewrite, which costs a copy of the balancer's member list (one
/// allocation, a reference count per member) to compare with the one the URLs were made
/// from; they are made again only when the members changed.
pub struct MemberUrls {
    balancer: Balancer,
    /// The list last made, and the members it was made from.
    made: ArcSwapOption<Made>,
}

/// A list of base URLs and the members it was made from. Holding the members keeps their
/// addresses from being reused, so comparing pointers tells whether they changed.
struct Made {
    members: Vec<Arc<Member>>,
    urls: Vec<String>,
}

impl MemberUrls {
    /// The base URLs of `balancer`'s members: each member's `url` label (see
    /// [`MemberSpec`](crate::member::MemberSpec)), or else its address.
    pub fn new(balancer: Balancer) -> MemberUrls {
        MemberUrls {
            balancer,
            made: ArcSwapOption::empty(),
        }
    }

    /// The members' base URLs now, in the balancer's order, as
    /// [`Target::base_url`] writes them. Members whose URL cannot be used for HTTP (a Unix
    /// socket) are left out.
    pub fn urls(&self) -> Vec<String> {
        self.current().urls.clone()
    }

    /// The list for the balancer's members now: the one last made while they are the same.
    fn current(&self) -> Arc<Made> {
        let members = self.balancer.members();
        if let Some(made) = self.made.load_full()
            && made.members.len() == members.len()
            && made
                .members
                .iter()
                .zip(&members)
                .all(|(a, b)| Arc::ptr_eq(a, b))
        {
            return made;
        }
        let urls = members
            .iter()
            .filter_map(|m| crate::member::target_of(m.backend()).ok())
            .map(|t| t.base_url())
            .collect();
        let made = Arc::new(Made { members, urls });
        self.made.store(Some(made.clone()));
        made
    }
}

impl std::fmt::Debug for MemberUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let made = self.made.load();
        f.debug_struct("MemberUrls")
            .field("urls", &made.as_ref().map(|m| &m.urls))
            .finish_non_exhaustive()
    }
}

/// What ProxyPassReverse needs; the URLs are only written out when a response carries one
/// of the fields it rewrites.
#[derive(Debug)]
pub(crate) struct Reverse {
    /// The answering backend, and through it the other members of its balancer.
    target: Target,
    /// The host the client asked for; `None` for an HTTP/1.0 request without `Host`.
    front_host: Option<HeaderValue>,
    tls: bool,
}

impl Reverse {
    /// For a request sent to `target`, that asked for `front_host` (over TLS when `tls`).
    pub(crate) fn new(target: Target, front_host: Option<HeaderValue>, tls: bool) -> Reverse {
        Reverse {
            target,
            front_host,
            tls,
        }
    }

    /// Rewrites the fields of `headers` that start with the base URL of the answering
    /// member, or of another member of its balancer, to start with the front end's, for a
    /// proxy mounted on `mount`. Without any of those fields (most responses), nothing is
    /// made or looked up.
    pub(crate) fn rewrite(&self, headers: &mut HeaderMap, mount: &str) {
        if !REWRITTEN.iter().any(|n| headers.contains_key(n)) {
            return;
        }
        let Some(front) = self.front_url(mount) else {
            return;
        };
        let own = self.target.base_url();
        let others = self.target.member_urls.as_ref().map(|m| m.current());
        let others = others.as_ref().map_or(&[][..], |m| &m.urls[..]);
        for name in REWRITTEN {
            let Some(value) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Some(rest) = longest_match(value, &own, others) else {
                continue;
            };
            let mut new = format!("{front}{rest}");
            if new.is_empty() || new.starts_with('?') {
                // Relative to a root mount: from the root.
                new.insert(0, '/');
            }
            if let Ok(v) = HeaderValue::from_str(&new) {
                headers.insert(name, v);
            }
        }
    }

    /// The front base URL. Without a host to name, the mount path alone: a relative
    /// `Location` (RFC 9110 section 10.2.2 allows it), rather than the backend's address.
    fn front_url(&self, mount: &str) -> Option<String> {
        Some(match &self.front_host {
            Some(host) => {
                let scheme = if self.tls { "https" } else { "http" };
                format!("{scheme}://{}{mount}", host.to_str().ok()?)
            }
            None => mount.to_string(),
        })
    }
}

/// What follows the longest of `own` and `others` (base URLs) that `value` starts with;
/// tried in that order.
fn longest_match<'v>(value: &'v str, own: &str, others: &[String]) -> Option<&'v str> {
    let mut best = after_base(value, own);
    for base in others {
        if let Some(rest) = after_base(value, base)
            && best.is_none_or(|b| rest.len() < b.len())
        {
            best = Some(rest);
        }
    }
    best
}

/// What follows `backend` (a base URL) in `value`, when `value` starts with it.
fn after_base<'v>(value: &'v str, backend: &str) -> Option<&'v str> {
    // Where the backend URL's path starts: after `scheme://authority`.
    let origin = backend.find("://").map(|i| i + 3).map_or(0, |a| {
        backend[a..].find('/').map_or(backend.len(), |p| a + p)
    });
    let (head, rest) = (value.get(..origin)?, value.get(origin..)?);
    if !head.eq_ignore_ascii_case(&backend[..origin]) {
        return None;
    }
    let rest = rest.strip_prefix(&backend[origin..])?;
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return None;
    }
    Some(rest)
}

/// ProxyPassReverse: when `value` starts with the backend's base URL, put the front one.
/// The scheme and host compare without regard to case (RFC 3986 section 6.2.2.1; Apache
/// compares them so too), the path exactly.
pub fn reverse_url(value: &str, backend: &str, front: &str) -> Option<String> {
    after_base(value, backend).map(|rest| format!("{front}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_rewrites_only_the_backend_prefix() {
        let b = "http://10.0.0.1:9001";
        let f = "http://front.test/app";
        assert_eq!(
            reverse_url("http://10.0.0.1:9001/x?y", b, f).unwrap(),
            "http://front.test/app/x?y"
        );
        assert_eq!(
            reverse_url("http://10.0.0.1:9001", b, f).unwrap(),
            "http://front.test/app"
        );
        assert!(reverse_url("http://10.0.0.1:90011/x", b, f).is_none());
        assert!(reverse_url("http://elsewhere/x", b, f).is_none());
        // The scheme and host in any case; the path as it is.
        let b = "http://Backend.test:9001/base";
        assert_eq!(
            reverse_url("HTTP://backend.TEST:9001/base/x", b, f).unwrap(),
            "http://front.test/app/x"
        );
        assert!(reverse_url("http://backend.test:9001/BASE/x", b, f).is_none());
        assert!(reverse_url("http://backend.test:9001/basement", b, f).is_none());
        assert!(reverse_url("http://b", b, f).is_none());
    }

    #[test]
    fn the_longest_matching_member_base_wins() {
        let own = "http://10.0.0.1:9001";
        let others = [
            "http://10.0.0.1:9001".to_string(),
            "http://10.0.0.2:9002/app".to_string(),
            "http://10.0.0.2:9002/app/x".to_string(),
            "http://10.0.0.2:9002".to_string(),
        ];
        let m = |v| longest_match(v, own, &others);
        assert_eq!(m("http://10.0.0.1:9001/a"), Some("/a"));
        // Another member's address, with the longest of its bases taken off.
        assert_eq!(m("http://10.0.0.2:9002/app/x/y?z"), Some("/y?z"));
        assert_eq!(m("HTTP://10.0.0.2:9002/app/xy"), Some("/xy"));
        assert_eq!(m("http://10.0.0.2:9002/APP/x"), Some("/APP/x"));
        assert_eq!(m("http://10.0.0.2:9002"), Some(""));
        assert_eq!(m("http://10.0.0.3:9002/app"), None);
        assert_eq!(m("http://10.0.0.2:90021/app"), None);
        // Without the other members, the answering one's alone (a Proxy used alone).
        assert_eq!(longest_match("http://10.0.0.2:9002/a", own, &[]), None);
        assert_eq!(longest_match("/relative", own, &others), None);
    }

    /// Through a balancer's member cache, as `Balance` hands targets to the proxy: a member
    /// redirecting to another's address is rewritten, and the members counted are those of
    /// the moment, after one is added or removed.
    #[test]
    fn every_member_of_the_balancer_now_is_rewritten() {
        use crate::member::{MemberSpec, Members};
        let backend = |url: &str| url.parse::<MemberSpec>().unwrap().to_backend().unwrap();
        let lb = Balancer::builder()
            .backend(backend("http://127.0.0.1:9001"))
            .backend(backend("http://127.0.0.1:9002/base"))
            .build()
            .unwrap();
        let members = Members::shared(&lb);
        let a = lb.members()[0].clone();
        let target = members.get_member(&a).unwrap().target.clone();
        let front = HeaderValue::from_static("front.test");
        let rewritten = |target: &Target, location: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
            h.insert("uri", HeaderValue::from_str(location).unwrap());
            Reverse::new(target.clone(), Some(front.clone()), false).rewrite(&mut h, "/app");
            assert_eq!(h[header::LOCATION], h["uri"]);
            h[header::LOCATION].to_str().unwrap().to_string()
        };
        let r = |location: &str| rewritten(&target, location);
        assert_eq!(r("http://127.0.0.1:9001/x"), "http://front.test/app/x");
        assert_eq!(r("http://127.0.0.1:9002/base/x"), "http://front.test/app/x");
        assert_eq!(r("http://127.0.0.1:9002/x"), "http://127.0.0.1:9002/x");
        assert_eq!(r("http://127.0.0.1:9003/x"), "http://127.0.0.1:9003/x");
        // A member added at run time counts from the next response on; one removed, no
        // longer.
        lb.add(backend("http://127.0.0.1:9003")).unwrap();
        assert_eq!(r("http://127.0.0.1:9003/x"), "http://front.test/app/x");
        lb.remove(lb.members()[1].id()).unwrap();
        assert_eq!(
            r("http://127.0.0.1:9002/base/x"),
            "http://127.0.0.1:9002/base/x"
        );
        let urls = target.member_urls.as_ref().unwrap().urls();
        assert_eq!(urls, ["http://127.0.0.1:9001", "http://127.0.0.1:9003"]);
        // A target of a proxy used alone: its own address only.
        let alone = Target::from_url("http://127.0.0.1:9001").unwrap();
        assert_eq!(
            rewritten(&alone, "http://127.0.0.1:9001/x"),
            "http://front.test/app/x"
        );
        assert_eq!(
            rewritten(&alone, "http://127.0.0.1:9003/x"),
            "http://127.0.0.1:9003/x"
        );
    }
}
