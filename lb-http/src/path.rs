//! Request paths made canonical before they are routed or mapped onto a member's prefix:
//! the dot segments `.` and `..` removed as RFC 3986 section 5.2.4 says, so that
//! `/admin/../x` is routed and forwarded as `/x`, and no path can climb out of the prefix a
//! member is mounted on.
//!
//! A segment is a dot segment also when its dots are percent-encoded (`%2e`, `%2E`): a
//! backend that decodes them before resolving the path would otherwise see `..` where the
//! proxy did not. A path that climbs above the root (`/..`, `/a/../..`) is refused, as
//! Apache refuses it with 400, rather than clamped to `/`. So is a dot segment that only a
//! backend would see: behind an encoded slash or a backslash (`/a/..%2fx`, `/a\..\x`: a
//! backend that decodes `%2f`, or takes `\` for a separator, climbs out) or before path
//! parameters (`/a/..;/x`, which Tomcat reads as `..`). Apache refuses every encoded slash
//! by default (`AllowEncodedSlashes Off`); refusing only these keeps paths such as
//! `/api/projects/group%2Fname` working. Other segments, the query and targets that are
//! not a path (`*`, an authority) are left as they are. So are forms only a backend that
//! decodes twice or reads bytes oddly would take for dots or separators (`%252e`, `%3b`,
//! `%00`, overlong UTF-8): as behind Apache, they are the backend's to refuse.

use std::borrow::Cow;

/// Why a request path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadPath {
    /// It climbs above the root (`/../x`).
    AboveRoot,
    /// A dot segment hides behind an encoded slash, a backslash or a `;` (`/a/..%2fx`).
    HiddenDotSegment,
}

impl BadPath {
    /// What the client is told, with a 400.
    pub(crate) fn message(self) -> &'static str {
        match self {
            BadPath::AboveRoot => "the path climbs above the root\n",
            BadPath::HiddenDotSegment => {
                "the path has a dot segment behind an encoded slash, a backslash or a ';'\n"
            }
        }
    }
}

/// `path` without its dot segments, borrowed when it has none; [`BadPath`] when a `..`
/// has no segment left to remove, or a dot segment hides in a segment.
pub(crate) fn remove_dot_segments(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    if !has_dot_segment(path) {
        // No segment starts with a dot, so none is one and none hides one before `;`:
        // only a separator a backend may see could hide one.
        if may_hide_dots(path) && path[1..].split('/').any(hides_dots) {
            return Err(BadPath::HiddenDotSegment);
        }
        return Ok(Cow::Borrowed(path));
    }
    let mut out: Vec<&str> = Vec::new();
    // A path ending in a dot segment names a directory: it keeps its final slash.
    let mut directory = false;
    let mut changed = false;
    for segment in path[1..].split('/') {
        directory = true;
        match dots(segment) {
            Some(1) => changed = true,
            Some(2) => {
                out.pop().ok_or(BadPath::AboveRoot)?;
                changed = true;
            }
            _ => {
                if hides_dots(segment) {
                    return Err(BadPath::HiddenDotSegment);
                }
                out.push(segment);
                directory = false;
            }
        }
    }
    if !changed {
        return Ok(Cow::Borrowed(path));
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

/// Whether `c` may stand as it is in a URL path: RFC 3986 `pchar` or `/` (a `%` must start
/// a percent-encoding, which callers check where it matters).
pub(crate) fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c)
}

/// Whether `mount` (a [`Site`](crate::router::Site)'s path prefix) can match a request: it
/// starts with `/`, holds only what a URL path may (no space, `?` or `#`; `%` only to
/// start an encoding), and no dot segment, since requests lose theirs before they are
/// matched. The error says what is wrong.
pub(crate) fn check_mount(mount: &str) -> Result<(), String> {
    if !mount.starts_with('/') {
        return Err(format!("a path must start with /, got {mount:?}"));
    }
    let b = mount.as_bytes();
    if let Some((_, c)) = mount.char_indices().find(|&(i, c)| {
        !is_path_char(c)
            || (c == '%'
                && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)))
    }) {
        return Err(format!(
            "{c:?} cannot be in a path (percent-encode it; a query cannot be mounted): {mount:?}"
        ));
    }
    if mount.split('/').any(|seg| dots(seg).is_some()) {
        return Err(format!(
            "a path cannot hold a dot segment (requests are matched without theirs): {mount:?}"
        ));
    }
    Ok(())
}

/// Whether `path` has a separator only a backend may see (`%2f`, `%5c`, `\`): the quick
/// test before [`hides_dots`].
fn may_hide_dots(path: &str) -> bool {
    let b = path.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'\\'
            || (c == b'%'
                && matches!(
                    (b.get(i + 1), b.get(i + 2).map(|c| c | 0x20)),
                    (Some(b'2'), Some(b'f')) | (Some(b'5'), Some(b'c'))
                ))
    })
}

/// Whether a segment that is not itself a dot segment holds one that a backend could see:
/// a piece between encoded slashes or backslashes, or the segment before its `;`
/// parameters, that is `.` or `..`.
fn hides_dots(segment: &str) -> bool {
    let bare = |piece: &str| piece.split(';').next().is_some_and(|p| dots(p).is_some());
    if segment.contains(';') && bare(segment) {
        return true;
    }
    let b = segment.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let sep = match b[i] {
            b'\\' => 1,
            b'%' if b.len() - i >= 3
                && matches!((b[i + 1], b[i + 2] | 0x20), (b'2', b'f') | (b'5', b'c')) =>
            {
                3
            }
            _ => 0,
        };
        if sep > 0 {
            if bare(&segment[start..i]) {
                return true;
            }
            start = i + sep;
            i += sep;
        } else {
            i += 1;
        }
    }
    start > 0 && bare(&segment[start..])
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

    fn norm(p: &str) -> Result<String, BadPath> {
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
            "/api/projects/group%2Fname",
            "/a/b%2f...",
            "/a/x..%2fy",
            "/a\\b/c",
            "/a/page;jsessionid=1.r1",
            "/a/%2f",
            "/a/%25",
            "/a/%",
        ] {
            assert_eq!(norm(p).unwrap(), p);
        }
        assert_eq!(norm("/.well-known/./x").unwrap(), "/.well-known/x");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for p in ["/..", "/../secret", "/a/../..", "/a/../../etc", "/%2e%2e/x"] {
            assert_eq!(norm(p), Err(BadPath::AboveRoot), "{p}");
        }
    }

    #[test]
    fn mounts_that_no_request_can_match_are_refused() {
        for ok in ["/", "/app", "/app/", "/a%20b", "/v1.0/x", "/.well-known"] {
            assert_eq!(check_mount(ok), Ok(()), "{ok}");
        }
        for bad in [
            "app",
            "/app/../x",
            "/app/%2E%2e",
            "/app?x=1",
            "/my app",
            "/a#b",
            "/a%zz",
            "/caf\u{e9}",
        ] {
            assert!(check_mount(bad).is_err(), "{bad}");
        }
        assert!(
            check_mount("/caf\u{e9}")
                .unwrap_err()
                .starts_with("'\u{e9}' cannot")
        );
    }

    #[test]
    fn dot_segments_only_a_backend_would_see_are_refused() {
        for p in [
            "/app/..%2fsecret",
            "/app/%2e%2e%2fsecret",
            "/app/%2E%2E%2Fsecret",
            "/app/x%2f..",
            "/app/x%2F.%2Fy",
            "/app/..%5csecret",
            "/app/y\\..\\..\\x",
            "/app/..\\x",
            "/app/..;/x",
            "/app/.;x=1/y",
            "/app/%2e%2e;/x",
            "/a/./..%2fx",
        ] {
            assert_eq!(norm(p), Err(BadPath::HiddenDotSegment), "{p}");
        }
    }
}
