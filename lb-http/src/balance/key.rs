//! Where the hash key for hashing schedulers comes from (HAProxy's `balance hdr(name)`,
//! `balance uri`, `balance url_param name`, and a cookie).

use std::str::FromStr;

use http::Request;
use http::header::HeaderName;

use crate::error::Error;

/// The part of a request hashed by hashing schedulers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's value (`hdr:NAME`).
    Header(HeaderName),
    /// A cookie's value (`cookie:NAME`).
    Cookie(String),
    /// The path, without the query (`path`).
    Path,
    /// A query parameter's value (`param:NAME`, HAProxy `url_param`).
    Query(String),
}

impl FromStr for HashKey {
    type Err = Error;

    /// Parses `hdr:NAME`, `cookie:NAME`, `path` or `param:NAME`.
    fn from_str(s: &str) -> Result<HashKey, Error> {
        let bad = || Error::Value {
            key: "hashkey".into(),
            value: s.into(),
            reason: "expected hdr:NAME, cookie:NAME, path or param:NAME".into(),
        };
        match s.split_once(':') {
            None if s == "path" || s == "uri" => Ok(HashKey::Path),
            Some(("hdr" | "header", n)) => HeaderName::from_bytes(n.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| bad()),
            Some(("cookie", n)) if !n.is_empty() => Ok(HashKey::Cookie(n.into())),
            Some(("param" | "url_param", n)) if !n.is_empty() => Ok(HashKey::Query(n.into())),
            _ => Err(bad()),
        }
    }
}

impl HashKey {
    /// The key bytes of `req`, when it has them.
    pub fn extract<B>(&self, req: &Request<B>) -> Option<Vec<u8>> {
        match self {
            HashKey::Header(h) => req.headers().get(h).map(|v| v.as_bytes().to_vec()),
            HashKey::Cookie(name) => cookie(req.headers(), name).map(|v| v.as_bytes().to_vec()),
            HashKey::Path => Some(req.uri().path().as_bytes().to_vec()),
            HashKey::Query(name) => query_param(req.uri().query()?, name).map(String::into_bytes),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` fields (RFC 6265 section 5.4).
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The decoded value of query parameter `name`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_keys() {
        let req = Request::get("/a/b?user=alice&x=1")
            .header("x-user", "bob")
            .header("cookie", "a=1; SID=carol; b=2")
            .body(())
            .unwrap();
        let k = |s: &str| s.parse::<HashKey>().unwrap().extract(&req);
        assert_eq!(k("hdr:x-user").unwrap(), b"bob");
        assert_eq!(k("cookie:SID").unwrap(), b"carol");
        assert_eq!(k("path").unwrap(), b"/a/b");
        assert_eq!(k("param:user").unwrap(), b"alice");
        assert!(k("param:none").is_none());
        assert!("nonsense".parse::<HashKey>().is_err());
    }
}
