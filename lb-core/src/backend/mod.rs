//! Backends: their addresses, configuration, live state, and members of a balancer.
//!
//! A [`Backend`] is configuration (address, weight, limits, priority, `lbset`, role, route,
//! labels). A balancer wraps it in a [`Member`] with a [`BackendState`]: atomics for
//! connections, bytes, failures, admin and health state, read without locks on every pick.

mod address;
#[allow(clippy::module_inception)]
mod backend;
mod member;
mod state;

pub use address::Address;
pub use backend::{Backend, BackendId, Role, Tier};
pub use member::Member;
pub(crate) use state::LazyNow;
pub use state::{AdminState, BackendState, Failure, Health};
