//! Heartbeat's duration forms.

use std::time::Duration;

use crate::{Error, Result};

/// Parses a duration as Heartbeat writes them: bare seconds (`2`, `1.5`) or with a unit
/// (`500ms`, `2s`, `1m`, `250us`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || Error::Duration(s.to_owned());
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" | "msec" => value / 1e3,
        "us" | "usec" => value / 1e6,
        "m" | "min" => value * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_forms() {
        assert_eq!(parse_duration("2").expect("2"), Duration::from_secs(2));
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("1.5").expect("1.5"),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2s").expect("2s"), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").expect("1m"), Duration::from_secs(60));
        for bad in ["", "ms", "2x", "-1", "1.2.3", "s2"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
