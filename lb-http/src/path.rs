//! Request paths made canonical before they are routed or mapped onto a member's prefix:
//! the dot segments `.` and `..` removed as RFC 3986 section 5.2.4 says, so that
//! `/admin/../x` is routed and forwarded as `/x`, and no path can climb out of the prefix a
//! member is mounted on.
//!
//! A segment is a dot segment also when its dots are percent-encoded (`%2e`, `%2E`): a
//! backend that decodes them before resolving the path would otherwise see `..` where the
//! proxy did not. A path that climbs above the root (`/..`, `/a/../..`) is refused, as
//! Apache refuses it with 400, rather than clamped to `/`. Other segments, the query and
//! targets that are not a path (`*`, an authority) are left as they are.

use std::borrow::Cow;

/// The request path climbs above the root (`/../x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AboveRoot;

/// `path` without its dot segments, borrowed when it has none; [`AboveRoot`] when a `..`
/// has no segment left to remove.
pub(crate) fn remove_dot_segments(path: &str) -> Result<Cow<'_, str>, AboveRoot> {
    if !path.starts_with('/') || !has_dot_segment(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    // A path ending in a dot segment names a directory: it keeps its final slash.
    let mut directory = false;
    for segment in path[1..].split('/') {
        directory = true;
        match dots(segment) {
            Some(1) => {}
            Some(2) => {
                out.pop().ok_or(AboveRoot)?;
            }
            _ => {
                out.push(segment);
                directory = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for segment in &out {
        s.push('/');
        s.push_str(segment);
    }
    if directory || s.is_empty() {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

/// Whether some segment of `path` (which starts with `/`) starts with a dot, plain or
/// percent-encoded: the quick test that lets most paths through untouched.
fn has_dot_segment(path: &str) -> bool {
    let b = path.as_bytes();
    b.windows(2).any(|w| w == b"/.")
        || b.windows(4)
            .any(|w| w[0] == b'/' && w[1] == b'%' && w[2] == b'2' && (w[3] | 0x20) == b'e')
}

/// The number of dots when `segment` is `.` or `..` (each dot possibly `%2e`).
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut n = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', r @ ..] => r,
            [b'%', b'2', e, r @ ..] if (e | 0x20) == b'e' => r,
            _ => return None,
        };
        n += 1;
    }
    (1..=2).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, AboveRoot> {
        remove_dot_segments(p).map(|c| c.into_owned())
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(norm("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(norm("/x/../admin/y").unwrap(), "/admin/y");
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/.").unwrap(), "/");
        assert_eq!(norm("/a//b/../c").unwrap(), "/a//c");
        assert_eq!(norm("/a/%2e%2E/b").unwrap(), "/b");
        assert_eq!(norm("/a/.%2e/b").unwrap(), "/b");
        assert_eq!(norm("/a/%2E/b").unwrap(), "/a/b");
    }

    #[test]
    fn other_paths_are_left_alone() {
        for p in ["/", "/a/b", "/a.b/c.", "*", ""] {
            assert!(
                matches!(remove_dot_segments(p), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
        for p in [
            "/.well-known/x",
            "/a/...",
            "/a/..b",
            "/a/%2e%2ex",
            "/a/%2f..",
        ] {
            assert_eq!(norm(p).unwrap(), p);
        }
        assert_eq!(norm("/.well-known/./x").unwrap(), "/.well-known/x");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for p in ["/..", "/../secret", "/a/../..", "/a/../../etc", "/%2e%2e/x"] {
            assert_eq!(norm(p), Err(AboveRoot), "{p}");
        }
    }
}
