//! The balancing model of lb: backends and their live state, schedulers, persistence,
//! health, events and stats. No sockets on the hot path, no HTTP.
//!
//! ```
//! use std::net::SocketAddr;
//! use lb_core::{Backend, Balancer, Failure, PickContext};
//!
//! let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
//! let lb = Balancer::builder()
//!     .scheduler("roundrobin".parse::<lb_core::scheduler::AnyScheduler>().unwrap())
//!     .backend(Backend::new(addr("127.0.0.1:8001")).with_weight(2))
//!     .backend(Backend::new(addr("127.0.0.1:8002")))
//!     .build()
//!     .unwrap();
//!
//! // One connection: try backends until one answers.
//! let mut attempts = lb.attempts(PickContext::new().with_client(addr("192.0.2.1:5000")));
//! let lease = attempts.next().unwrap();
//! println!("connect to {}", lease.backend().address());
//! lease.success();
//! lease.add_bytes_out(1500);
//! assert_eq!(lb.stats().active, 1);
//! drop(lease); // the connection closed
//! assert_eq!(lb.stats().active, 0);
//! ```
//!
//! The crate's parts:
//! - [`backend`]: [`Backend`] configuration, [`BackendState`](backend::BackendState) live state;
//! - [`Balancer`]: the member set and the selection pipeline, runtime changes;
//! - [`scheduler`]: every scheduling algorithm;
//! - [`persistence`]: the client table and HTTP routes;
//! - [`health`]: active checks, their monitor, passive ejection;
//! - [`event`] and [`stats`]: watching it all.
#![forbid(unsafe_code)]

pub mod backend;
mod balancer;
pub mod clock;
mod context;
mod error;
pub mod event;
pub mod health;
mod lease;
pub mod persistence;
pub mod scheduler;
pub mod stats;

pub use backend::{Address, AdminState, Backend, BackendId, Failure, Health, Member, Role, Tier};
pub use balancer::{Attempts, Balancer, BalancerBuilder, Edit, PipelineConfig};
pub use context::PickContext;
pub use error::{Error, Result};
pub use event::{Event, EventKind, Subscription};
pub use lease::Lease;
pub use stats::{BackendStats, Stats};
