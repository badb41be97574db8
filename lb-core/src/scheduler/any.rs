//! Any built-in scheduler, chosen by name at run time.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Candidates, RoundRobin, Scheduler};
use crate::backend::Member;
use crate::context::PickContext;
use crate::error::Error;

/// The scheduler names [`AnyScheduler`] parses, comma separated.
pub const KNOWN: &str = "roundrobin";

/// One of the built-in schedulers, dispatched without boxing.
///
/// Parsed from a name (`"roundrobin"`, ...); see [`KNOWN`] for the list.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyScheduler {
    /// [`RoundRobin`].
    RoundRobin(RoundRobin),
}

/// The precomputed state of an [`AnyScheduler`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyState {
    /// State of [`RoundRobin`].
    RoundRobin(<RoundRobin as Scheduler>::State),
}

impl AnyScheduler {
    /// The scheduler's name, as parsed.
    pub fn name(&self) -> &'static str {
        match self {
            AnyScheduler::RoundRobin(_) => "roundrobin",
        }
    }
}

impl Default for AnyScheduler {
    fn default() -> Self {
        AnyScheduler::RoundRobin(RoundRobin::new())
    }
}

impl fmt::Display for AnyScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnyScheduler {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "roundrobin" | "rr" | "round-robin" => Ok(AnyScheduler::RoundRobin(RoundRobin::new())),
            _ => Err(Error::UnknownScheduler {
                name: s.to_owned(),
                known: KNOWN,
            }),
        }
    }
}

impl Scheduler for AnyScheduler {
    type State = AnyState;

    fn prepare(&self, members: &[Arc<Member>]) -> AnyState {
        match self {
            AnyScheduler::RoundRobin(s) => AnyState::RoundRobin(s.prepare(members)),
        }
    }

    fn pick(&self, state: &AnyState, c: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
        match (self, state) {
            (AnyScheduler::RoundRobin(s), AnyState::RoundRobin(st)) => s.pick(st, c, ctx),
        }
    }
}
