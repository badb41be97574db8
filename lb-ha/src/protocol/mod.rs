//! The Heartbeat-style two-node membership protocol.
//!
//! Each node sends a *beat* to its peer every `keepalive` (UDP, port 694 by default, as
//! Heartbeat v1). A beat carries the sender's name, its *epoch* (a generation number
//! fixed when the node starts: milliseconds since the Unix epoch, so a restarted node has
//! a larger one), a sequence number that grows with every beat, the sender's state and
//! how many of its ping nodes it reaches. Beats are authenticated with HMAC-SHA256 over a
//! shared key (the key of Heartbeat's `authkeys`); a receiver accepts a beat only if its
//! `(epoch, sequence)` is larger than the last it accepted from that peer, so a replayed
//! or forged beat changes nothing.
//!
//! Timing, as in Heartbeat's `ha.cf`: a beat later than `warntime` is logged; a peer
//! silent for `deadtime` is declared dead and its resources are taken over; at start-up a
//! node waits `initdead` for a first beat before taking over on its own.
//!
//! Limits of the replay protection, as in Heartbeat: the first beat a node hears after
//! it starts is accepted whatever its epoch (a beat recorded earlier could be replayed at
//! that moment, and is superseded by the peer's next real beat); and a peer whose clock
//! stepped back across its restart has a smaller epoch and is not heard until this node
//! restarts too. Keep the clocks synchronised (NTP).
//!
//! The decisions live in [`Machine`], a pure state machine fed with beats, ping results
//! and the outcome of promote/demote, and asked for its next deadline; it never touches a
//! socket or a clock, so it is tested under paused time. See [`Machine`] for the rules
//! (who holds the resources, auto-failback, ipfail, split brain).

mod auth;
mod beat;
mod machine;

pub use auth::Key;
pub use beat::Beat;
pub use machine::{
    Action, Event, EventKind, Machine, MachineConfig, NodeState, PeerStatus, Reason, Reject,
    Status, Timing,
};
