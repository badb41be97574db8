//! Schedulers: how a balancer chooses among the eligible members of a tier.
//!
//! A [`Scheduler`] is synchronous and takes `&self`: picks run concurrently on every thread
//! without locks. Whatever it can precompute from the member set (a hash ring, a Maglev
//! table, a weighted sequence) it builds in [`Scheduler::prepare`], which the balancer calls
//! whenever members are added, removed or re-configured; the result lives in the balancer's
//! snapshot beside the members it was built from, so a pick never sees a table from another
//! generation.
//!
//! Selection is a pipeline and the scheduler is one stage of it: persistence and sticky
//! routes come first, then the usable filter (folded into [`Candidates::is_eligible`]), then
//! tiers (`lbset`, hot standby, backup), then the scheduler, then failover and the emergency
//! backend. See [`Balancer`](crate::Balancer).
//!
//! The built-in schedulers, one file per family:
//!
//! | family | schedulers | from |
//! |---|---|---|
//! | round robin | [`RoundRobin`], [`WeightedRoundRobin`] (smooth) | pen, IPVS `rr`; nginx, Apache `byrequests` |
//! | traffic | [`ByTraffic`] | Apache `bytraffic` |
//! | connection counts | [`LeastConn`], [`WeightedLeastConn`], [`ShortestExpectedDelay`], [`NeverQueue`], [`ByBusyness`] | IPVS `lc`/`wlc`/`sed`/`nq`, pen `-W`, Apache `bybusyness` |
//! | random | [`Random`], [`PowerOfTwo`] | HAProxy `random`, Mitzenmacher |
//! | latency | [`PeakEwma`] | Finagle, linkerd |
//! | hashing | [`SourceHash`], [`Ketama`], [`Maglev`] | IPVS `sh`, pen `-h`; libmemcached; the Maglev paper |
//! | failover | [`Priority`], [`Overflow`], [`First`] | pen `prio`, IPVS `fo`/`ovf`, HAProxy `first` |
//!
//! [`AnyScheduler`] holds any built-in scheduler, chosen by name at run time.
//!
//! Its syntax is `name` or `name:params`, params separated by commas, each `key=value` or a
//! bare flag:
//!
//! | name (aliases) | scheduler | params |
//! |---|---|---|
//! | `roundrobin` (`rr`) | [`RoundRobin`] | |
//! | `wrr` (`byrequests`, `swrr`) | [`WeightedRoundRobin`] | |
//! | `bytraffic` | [`ByTraffic`] | |
//! | `leastconn` (`lc`) | [`LeastConn`] | |
//! | `wlc` | [`WeightedLeastConn`] | |
//! | `sed` | [`ShortestExpectedDelay`] | |
//! | `nq` | [`NeverQueue`] | |
//! | `bybusyness` | [`ByBusyness`] | |
//! | `random` | [`Random`] | `seed=N` |
//! | `p2c` (`two-choices`) | [`PowerOfTwo`] | `seed=N` |
//! | `ewma` (`peak-ewma`) | [`PeakEwma`] | `seed=N`, `rtt=30ms` (`ms`, `us`, `s`) |
//! | `sh` (`source`) | [`SourceHash`] | `mask=24` (IPv4 bits), `mask6=64`, `port` |
//! | `ketama` (`consistent`) | [`Ketama`] | `bound=1.25` or `bounded` (1.25) |
//! | `maglev` | [`Maglev`] | a prime table size (`maglev:65537` or `size=N`), `bound=F`, `bounded` |
//! | `prio` (`priority`, `fo`) | [`Priority`] | |
//! | `ovf` (`overflow`) | [`Overflow`] | |
//! | `first` | [`First`] | |
//!
//! ```
//! use lb_core::scheduler::AnyScheduler;
//! let s: AnyScheduler = "maglev:65537,bound=1.5".parse().unwrap();
//! assert_eq!(s.name(), "maglev");
//! assert_eq!(s.to_string(), "maglev:65537,bound=1.5");
//! assert!("maglev:65536".parse::<AnyScheduler>().is_err()); // not prime
//! assert!("fastest".parse::<AnyScheduler>().is_err());
//! ```
//!
//! Hashing schedulers use fixed hash functions (never a random seed), so a key maps to the
//! same backend in every process: Ketama uses MD5 as libmemcached does, the others this
//! crate's own `hash64` (a word-at-a-time multiply-rotate hash with MurmurHash3's
//! finalizer), pinned by tests. Random schedulers take a seed (`seed_from_u64`,
//! `from_rng`) for reproducible runs.

mod any;
mod by_traffic;
mod candidates;
mod hash;
mod ketama;
mod least_conn;
mod maglev;
mod peak_ewma;
mod priority;
mod random;
mod rng;
mod round_robin;
mod source_hash;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod weighted_round_robin;

use std::fmt;
use std::sync::Arc;

pub use any::{AnyScheduler, AnyState, DEFAULT_BOUND, KNOWN};
pub use by_traffic::ByTraffic;
pub use candidates::Candidates;
pub use ketama::{Ketama, POINTS_PER_WEIGHT, Ring};
pub use least_conn::{
    BusyState, ByBusyness, ConnTable, LeastConn, NeverQueue, ShortestExpectedDelay,
    WeightedLeastConn,
};
pub use maglev::{DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, Maglev, Table};
pub use peak_ewma::{DEFAULT_RTT, PeakEwma};
pub use priority::{ByWeight, First, Overflow, Priority, PriorityGroups};
pub use random::{CumulativeWeights, PowerOfTwo, Random};
pub use round_robin::{RoundRobin, RoundRobinState};
pub use source_hash::{Buckets, SourceHash};
pub use weighted_round_robin::{MAX_PERIOD, MAX_WORK, WeightedRoundRobin, WrrState};

use crate::backend::Member;
use crate::context::PickContext;

/// Chooses one member among candidates.
pub trait Scheduler: Send + Sync + fmt::Debug + 'static {
    /// What the scheduler precomputes from a member set.
    type State: Send + Sync + fmt::Debug + 'static;

    /// Precomputes state for a member set (one tier of a balancer).
    fn prepare(&self, members: &[Arc<Member>]) -> Self::State;

    /// Picks an eligible candidate's index, or `None` when none is eligible.
    fn pick(
        &self,
        state: &Self::State,
        candidates: &Candidates<'_>,
        ctx: &PickContext<'_>,
    ) -> Option<usize>;

    /// Whether picks read the members' latency EWMA ([`PeakEwma`] does). When the
    /// scheduler does not, callers may skip timing requests for
    /// [`Lease::observe_latency`](crate::Lease::observe_latency): see
    /// [`Lease::wants_latency`](crate::Lease::wants_latency).
    fn uses_latency(&self) -> bool {
        false
    }

    /// Whether picks hash the context's [`key`](PickContext::key) when it has one (the
    /// consistent hashes do). A scheduler that does not ignores the key: a caller may tell
    /// its user that a configured key does nothing.
    fn uses_key(&self) -> bool {
        false
    }
}
