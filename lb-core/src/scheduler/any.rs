//! Any built-in scheduler, chosen by name at run time.
//!
//! The syntax is described in the [`scheduler`](crate::scheduler) module docs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::backend::Member;
use crate::context::PickContext;
use crate::error::Error;

/// The scheduler names [`AnyScheduler`] parses, comma separated.
pub const KNOWN: &str = "roundrobin, wrr, byrequests, bytraffic, leastconn, wlc, sed, nq, \
                         bybusyness, random, p2c, ewma, sh, source, ketama, maglev, prio, ovf, first";

/// The bounded-load factor `bounded` stands for (HAProxy's usual `hash-balance-factor 125`).
pub const DEFAULT_BOUND: f64 = 1.25;

macro_rules! any_scheduler {
    ($($variant:ident($ty:ty) = $name:literal),* $(,)?) => {
        /// One of the built-in schedulers, dispatched without boxing.
        ///
        /// Parsed from a name with parameters: see the [`scheduler`](crate::scheduler) module
        /// docs for the syntax and [`KNOWN`] for the names.
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum AnyScheduler {
            $(
                #[doc = concat!("[`", stringify!($ty), "`] (`", $name, "`).")]
                $variant($ty),
            )*
        }

        /// The precomputed state of an [`AnyScheduler`].
        #[derive(Debug)]
        #[non_exhaustive]
        pub enum AnyState {
            $(
                #[doc = concat!("State of [`", stringify!($ty), "`].")]
                $variant(<$ty as Scheduler>::State),
            )*
        }

        /// The canonical name of every variant, in declaration order.
        #[cfg(test)]
        const CANONICAL: &[&str] = &[$($name),*];

        impl AnyScheduler {
            /// The scheduler's canonical name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(AnyScheduler::$variant(_) => $name,)*
                }
            }
        }

        $(
            impl From<$ty> for AnyScheduler {
                fn from(s: $ty) -> Self {
                    AnyScheduler::$variant(s)
                }
            }
        )*

        impl Scheduler for AnyScheduler {
            type State = AnyState;

            fn prepare(&self, members: &[Arc<Member>]) -> AnyState {
                match self {
                    $(AnyScheduler::$variant(s) => AnyState::$variant(s.prepare(members)),)*
                }
            }

            #[inline]
            fn pick(&self, state: &AnyState, c: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
                match (self, state) {
                    $((AnyScheduler::$variant(s), AnyState::$variant(st)) => s.pick(st, c, ctx),)*
                    // A state from another scheduler cannot happen (the snapshot keeps both
                    // together); refuse rather than guess.
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            fn uses_latency(&self) -> bool {
                match self {
                    $(AnyScheduler::$variant(s) => s.uses_latency(),)*
                }
            }

            fn uses_key(&self) -> bool {
                match self {
                    $(AnyScheduler::$variant(s) => s.uses_key(),)*
                }
            }
        }
    };
}

any_scheduler! {
    RoundRobin(RoundRobin) = "roundrobin",
    WeightedRoundRobin(WeightedRoundRobin) = "wrr",
    ByTraffic(ByTraffic) = "bytraffic",
    LeastConn(LeastConn) = "leastconn",
    WeightedLeastConn(WeightedLeastConn) = "wlc",
    ShortestExpectedDelay(ShortestExpectedDelay) = "sed",
    NeverQueue(NeverQueue) = "nq",
    ByBusyness(ByBusyness) = "bybusyness",
    Random(Random) = "random",
    PowerOfTwo(PowerOfTwo) = "p2c",
    PeakEwma(PeakEwma) = "ewma",
    SourceHash(SourceHash) = "sh",
    Ketama(Ketama) = "ketama",
    Maglev(Maglev) = "maglev",
    Priority(Priority) = "prio",
    Overflow(Overflow) = "ovf",
    First(First) = "first",
}

impl Default for AnyScheduler {
    fn default() -> Self {
        AnyScheduler::RoundRobin(RoundRobin::new())
    }
}

impl fmt::Display for AnyScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let mut params: Vec<String> = Vec::new();
        match self {
            AnyScheduler::PeakEwma(s) if s.default_rtt() != DEFAULT_RTT => {
                params.push(format!("rtt={}us", s.default_rtt().as_micros()));
            }
            AnyScheduler::SourceHash(s) => {
                let (v4, v6) = s.netmask();
                if v4 != 32 {
                    params.push(format!("mask={v4}"));
                }
                if v6 != 128 {
                    params.push(format!("mask6={v6}"));
                }
                if s.hashes_port() {
                    params.push("port".into());
                }
            }
            AnyScheduler::Ketama(s) => {
                if let Some(b) = s.bounded_load() {
                    params.push(format!("bound={b}"));
                }
            }
            AnyScheduler::Maglev(s) => {
                if s.table_size() != DEFAULT_TABLE_SIZE || s.bounded_load().is_some() {
                    params.push(s.table_size().to_string());
                }
                if let Some(b) = s.bounded_load() {
                    params.push(format!("bound={b}"));
                }
            }
            _ => {}
        }
        if !params.is_empty() {
            write!(f, ":{}", params.join(","))?;
        }
        Ok(())
    }
}

fn bad(name: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidParameter {
        name,
        value: value.to_owned(),
        reason,
    }
}

fn parse_u64(name: &'static str, v: &str) -> Result<u64, Error> {
    v.trim()
        .parse()
        .map_err(|_| bad(name, v, "expected a whole number"))
}

fn parse_f64(name: &'static str, v: &str) -> Result<f64, Error> {
    v.trim()
        .parse()
        .map_err(|_| bad(name, v, "expected a number"))
}

fn parse_duration(name: &'static str, v: &str) -> Result<Duration, Error> {
    let v = v.trim();
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "ms"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| bad(name, v, "expected a duration such as 30ms, 500us or 1s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "us" => Ok(Duration::from_micros(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(bad(
            name,
            v,
            "expected a duration such as 30ms, 500us or 1s",
        )),
    }
}

fn parse_bits(name: &'static str, v: &str) -> Result<u8, Error> {
    v.trim().parse().map_err(|_| Error::InvalidNetmask {
        value: v.to_owned(),
        reason: if name == "mask" {
            "expected IPv4 netmask bits from 0 to 32"
        } else {
            "expected an IPv6 prefix length from 0 to 128"
        },
    })
}

impl FromStr for AnyScheduler {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let (name, params) = match s.split_once(':') {
            Some((n, p)) => (n.trim(), Some(p)),
            None => (s, None),
        };
        let params: Vec<(&str, Option<&str>)> = params
            .into_iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (p, None),
            })
            .collect();
        let unknown = |k: &str, v: Option<&str>| {
            let value = match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_owned(),
            };
            bad("parameter", &value, "not a parameter of this scheduler")
        };
        let seed = |params: &[(&str, Option<&str>)]| -> Result<Option<u64>, Error> {
            let mut seed = None;
            for &(k, v) in params {
                match (k, v) {
                    ("seed", Some(v)) => seed = Some(parse_u64("seed", v)?),
                    _ => return Err(unknown(k, v)),
                }
            }
            Ok(seed)
        };
        let plain = |sched: AnyScheduler| match params.first() {
            Some(&(k, v)) => Err(unknown(k, v)),
            None => Ok(sched),
        };
        match name.to_ascii_lowercase().as_str() {
            "roundrobin" | "rr" | "round-robin" => plain(RoundRobin::new().into()),
            "wrr" | "byrequests" | "swrr" => plain(WeightedRoundRobin::new().into()),
            "bytraffic" => plain(ByTraffic::new().into()),
            "leastconn" | "lc" | "least-conn" => plain(LeastConn::new().into()),
            "wlc" => plain(WeightedLeastConn::new().into()),
            "sed" => plain(ShortestExpectedDelay::new().into()),
            "nq" => plain(NeverQueue::new().into()),
            "bybusyness" => plain(ByBusyness::new().into()),
            "prio" | "priority" | "fo" => plain(Priority::new().into()),
            "ovf" | "overflow" => plain(Overflow::new().into()),
            "first" => plain(First::new().into()),
            "random" => Ok(match seed(&params)? {
                Some(s) => Random::seed_from_u64(s),
                None => Random::new(),
            }
            .into()),
            "p2c" | "two-choices" => Ok(match seed(&params)? {
                Some(s) => PowerOfTwo::seed_from_u64(s),
                None => PowerOfTwo::new(),
            }
            .into()),
            "ewma" | "peak-ewma" => {
                let mut e = PeakEwma::new();
                for &(k, v) in &params {
                    match (k, v) {
                        ("seed", Some(v)) => {
                            e = PeakEwma::seed_from_u64(parse_u64("seed", v)?)
                                .with_default_rtt(e.default_rtt());
                        }
                        ("rtt", Some(v)) => {
                            let rtt = parse_duration("rtt", v)?;
                            if rtt.is_zero() {
                                return Err(bad("rtt", v, "the default rtt must be above zero"));
                            }
                            e = e.with_default_rtt(rtt);
                        }
                        _ => return Err(unknown(k, v)),
                    }
                }
                Ok(e.into())
            }
            "sh" | "source" => {
                let (mut v4, mut v6, mut port) = (32u8, 128u8, false);
                for &(k, v) in &params {
                    match (k, v) {
                        ("mask", Some(v)) => v4 = parse_bits("mask", v)?,
                        ("mask6", Some(v)) => v6 = parse_bits("mask6", v)?,
                        ("port", None) => port = true,
                        _ => return Err(unknown(k, v)),
                    }
                }
                Ok(SourceHash::new()
                    .with_netmask(v4, v6)?
                    .with_port(port)
                    .into())
            }
            "ketama" | "consistent" => {
                let mut k = Ketama::new();
                for &(key, v) in &params {
                    match (key, v) {
                        ("bound", Some(v)) => k = k.with_bounded_load(parse_f64("bound", v)?)?,
                        ("bounded", None) => k = k.with_bounded_load(DEFAULT_BOUND)?,
                        _ => return Err(unknown(key, v)),
                    }
                }
                Ok(k.into())
            }
            "maglev" => {
                let mut m = Maglev::new();
                for &(key, v) in &params {
                    match (key, v) {
                        ("size", Some(v)) => {
                            m = m.with_table_size(parse_u64("table size", v)? as usize)?;
                        }
                        (n, None) if n.starts_with(|c: char| c.is_ascii_digit()) => {
                            m = m.with_table_size(parse_u64("table size", n)? as usize)?;
                        }
                        ("bound", Some(v)) => m = m.with_bounded_load(parse_f64("bound", v)?)?,
                        ("bounded", None) => m = m.with_bounded_load(DEFAULT_BOUND)?,
                        _ => return Err(unknown(key, v)),
                    }
                }
                Ok(m.into())
            }
            _ => Err(Error::UnknownScheduler {
                name: s.to_owned(),
                known: KNOWN,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_lists_every_variant() {
        let known: Vec<&str> = KNOWN.split(',').map(str::trim).collect();
        for name in CANONICAL {
            assert!(known.contains(name), "{name} missing from KNOWN");
            assert_eq!(name.parse::<AnyScheduler>().unwrap().name(), *name);
        }
    }

    #[test]
    fn every_known_name_parses_and_round_trips() {
        for name in KNOWN.split(',').map(str::trim) {
            let s: AnyScheduler = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            let again: AnyScheduler = s.to_string().parse().unwrap();
            assert_eq!(again.name(), s.name());
        }
        for s in [
            "maglev:251,bound=1.5",
            "ketama:bound=2",
            "sh:mask=24,mask6=64,port",
            "ewma:rtt=5000us",
        ] {
            let parsed: AnyScheduler = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
        }
        let m: AnyScheduler = "maglev:size=65537,bounded".parse().unwrap();
        assert_eq!(m.to_string(), "maglev:65537,bound=1.25");
        let e: AnyScheduler = "EWMA:seed=3,rtt=1s".parse().unwrap();
        assert!(
            matches!(e, AnyScheduler::PeakEwma(ref p) if p.default_rtt() == Duration::from_secs(1))
        );
    }

    #[test]
    fn bad_names_and_parameters_are_named() {
        let cases: &[(&str, &str)] = &[
            ("fastest", "\"fastest\""),
            ("", "\"\""),
            ("maglev:65536", "65536"),
            ("maglev:size=x", "\"x\""),
            ("maglev:1", "\"1\""),
            ("ketama:bound=0.5", "0.5"),
            ("ketama:bound=inf", "inf"),
            ("ketama:bound=abc", "abc"),
            ("random:seed=-1", "-1"),
            ("random:speed=1", "speed=1"),
            ("wrr:x", "\"x\""),
            ("sh:mask=33", "33"),
            ("sh:mask6=200", "200"),
            ("sh:mask=abc", "abc"),
            ("ewma:rtt=5h", "5h"),
            ("ewma:rtt=0ms", "0ms"),
        ];
        for &(input, named) in cases {
            let e = input.parse::<AnyScheduler>().unwrap_err();
            assert!(e.to_string().contains(named), "{input}: {e}");
        }
        assert!(matches!(
            "fastest".parse::<AnyScheduler>(),
            Err(Error::UnknownScheduler { .. })
        ));
        assert!(matches!(
            "maglev:65536".parse::<AnyScheduler>(),
            Err(Error::InvalidParameter { .. })
        ));
    }

    #[test]
    fn mismatched_state_picks_nothing() {
        let lb = crate::scheduler::testing::balancer(AnyScheduler::default(), &[1, 1]);
        let members = lb.members();
        let wrong = AnyScheduler::from(First::new()).prepare(&members);
        let c = Candidates::new(&members);
        assert_eq!(
            AnyScheduler::default().pick(&wrong, &c, &PickContext::new()),
            None
        );
    }
}
