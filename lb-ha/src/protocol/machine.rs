//! The membership state machine, without sockets or clocks.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::beat::Beat;

/// The timing of the protocol, as in Heartbeat's `ha.cf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Interval between beats (`keepalive`, Heartbeat's default 2 s).
    pub keepalive: Duration,
    /// Silence after which a late beat is logged (`warntime`).
    pub warntime: Duration,
    /// Silence after which the peer is declared dead (`deadtime`).
    pub deadtime: Duration,
    /// At start-up, how long to wait for a first beat before taking over (`initdead`).
    pub initdead: Duration,
}

impl Default for Timing {
    /// Heartbeat's defaults: keepalive 2 s, warntime 10 s, deadtime 30 s, initdead 120 s.
    fn default() -> Self {
        Timing {
            keepalive: Duration::from_secs(2),
            warntime: Duration::from_secs(10),
            deadtime: Duration::from_secs(30),
            initdead: Duration::from_secs(120),
        }
    }
}

/// What a [`Machine`] needs to know about its pair.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// This node's name.
    pub name: String,
    /// The peer's name.
    pub peer: String,
    /// The node that owns the resources when both are up (the first field of a
    /// `haresources` line); `None` for a symmetric pair.
    pub preferred: Option<String>,
    /// Give the resources back to the preferred node when it returns (`auto_failback on`).
    pub auto_failback: bool,
    /// The protocol's timing.
    pub timing: Timing,
    /// How many ping nodes this node checks (0: ipfail off).
    pub ping_total: u16,
    /// This node's generation (see [`Beat::epoch`]).
    pub epoch: u64,
}

/// A node's state, as carried in its beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// Started, waiting for the peer's first beat or `initdead`.
    Init,
    /// Up, not holding the resources.
    Standby,
    /// Taking the resources over.
    Promoting,
    /// Holding the resources.
    Active,
    /// Giving the resources up.
    Demoting,
    /// A promote failed; the resources were given up. Cleared by
    /// [`Machine::clear_fault`].
    Fault,
    /// Shutting down, resources given up: the peer may take over at once.
    Stopped,
}

impl NodeState {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            NodeState::Init => 0,
            NodeState::Standby => 1,
            NodeState::Promoting => 2,
            NodeState::Active => 3,
            NodeState::Demoting => 4,
            NodeState::Fault => 5,
            NodeState::Stopped => 6,
        }
    }

    pub(crate) fn from_wire(b: u8) -> Option<Self> {
        Some(match b {
            0 => NodeState::Init,
            1 => NodeState::Standby,
            2 => NodeState::Promoting,
            3 => NodeState::Active,
            4 => NodeState::Demoting,
            5 => NodeState::Fault,
            6 => NodeState::Stopped,
            _ => return None,
        })
    }

    /// True when a node in this state holds (or is taking) the resources.
    pub fn holds(self) -> bool {
        matches!(
            self,
            NodeState::Promoting | NodeState::Active | NodeState::Demoting
        )
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Init => "init",
            NodeState::Standby => "standby",
            NodeState::Promoting => "promoting",
            NodeState::Active => "active",
            NodeState::Demoting => "demoting",
            NodeState::Fault => "fault",
            NodeState::Stopped => "stopped",
        })
    }
}

/// Why a node changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The peer's first beat arrived.
    PeerHeard,
    /// No beat from the peer within `initdead` of start-up.
    InitDead,
    /// The peer was silent for `deadtime`.
    PeerDead,
    /// The peer reported a fault.
    PeerFault,
    /// The peer shut down cleanly.
    PeerStopped,
    /// Neither node held the resources and this one wins the election (ping nodes,
    /// preferred node, epoch, name).
    Elected,
    /// The preferred node is back and `auto_failback` is on.
    Failback,
    /// Both nodes held the resources; this one loses by the split-brain rule.
    SplitBrain,
    /// The peer reaches more ping nodes than this node (ipfail).
    PingLost,
    /// The resources' promote completed.
    Promoted,
    /// A promote failed, with the error.
    PromoteFailed(String),
    /// The resources' demote completed.
    Demoted,
    /// The fault was cleared by the operator.
    FaultCleared,
    /// The node is shutting down.
    Shutdown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::PeerHeard => f.write_str("peer heard"),
            Reason::InitDead => f.write_str("no beat from the peer within initdead"),
            Reason::PeerDead => f.write_str("peer silent for deadtime"),
            Reason::PeerFault => f.write_str("peer reported a fault"),
            Reason::PeerStopped => f.write_str("peer shut down"),
            Reason::Elected => f.write_str("elected: neither node held the resources"),
            Reason::Failback => f.write_str("auto_failback to the preferred node"),
            Reason::SplitBrain => f.write_str("split brain: the peer keeps the resources"),
            Reason::PingLost => f.write_str("peer reaches more ping nodes (ipfail)"),
            Reason::Promoted => f.write_str("resources promoted"),
            Reason::PromoteFailed(e) => write!(f, "promote failed: {e}"),
            Reason::Demoted => f.write_str("resources demoted"),
            Reason::FaultCleared => f.write_str("fault cleared"),
            Reason::Shutdown => f.write_str("shutting down"),
        }
    }
}

/// Something observable that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When.
    pub at: Instant,
    /// What.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// This node changed state.
    State {
        /// The previous state.
        from: NodeState,
        /// The new state.
        to: NodeState,
        /// Why.
        reason: Reason,
    },
    /// The peer's beats arrive (first beat, or again after it was dead).
    PeerUp,
    /// A beat is later than `warntime`.
    PeerLate {
        /// Time since the last beat.
        silence: Duration,
    },
    /// The peer was silent for `deadtime`.
    PeerDead,
}

/// What the owner of a [`Machine`] must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send this beat to the peer.
    Send(Beat),
    /// Promote the resources, then call [`Machine::promote_done`].
    Promote,
    /// Demote the resources, then call [`Machine::demote_done`].
    Demote,
    /// Publish this event.
    Event(Event),
    /// Promote the held resources again (idempotent) so that they re-announce
    /// themselves: a split brain was resolved in this node's favour and the neighbours may
    /// have learnt the loser's address. No completion is reported.
    Refresh,
}

/// Why a beat was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// The beat carries this node's own name (a multicast echo).
    Own,
    /// The beat's sender is not the configured peer.
    UnknownNode,
    /// The beat's `(epoch, seq)` is not newer than the last accepted: a replay.
    Replay,
}

/// What a node knows about its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's name.
    pub name: String,
    /// The peer's last reported state, `None` before its first beat.
    pub state: Option<NodeState>,
    /// True while beats arrive within `deadtime`.
    pub alive: bool,
    /// When the last beat was accepted.
    pub last_beat: Option<Instant>,
    /// The peer's epoch.
    pub epoch: Option<u64>,
    /// Ping nodes the peer reaches.
    pub ping_ok: u16,
}

/// A snapshot of a node's view, for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's name.
    pub name: String,
    /// This node's state.
    pub state: NodeState,
    /// Why it is in that state.
    pub reason: Option<Reason>,
    /// This node's epoch.
    pub epoch: u64,
    /// Ping nodes this node reaches, of `ping_total`.
    pub ping_ok: u16,
    /// Ping nodes configured.
    pub ping_total: u16,
    /// The peer.
    pub peer: PeerStatus,
}

impl Status {
    /// A plain report for status pages and JSON (`serde::Serialize`), with the time since
    /// the last beat measured at `now`.
    pub fn report(&self, now: Instant) -> StatusReport {
        StatusReport {
            name: self.name.clone(),
            state: self.state.to_string(),
            reason: self.reason.as_ref().map(ToString::to_string),
            epoch: self.epoch,
            ping_ok: self.ping_ok,
            ping_total: self.ping_total,
            peer_name: self.peer.name.clone(),
            peer_state: self.peer.state.map(|s| s.to_string()),
            peer_alive: self.peer.alive,
            peer_last_beat_ms: self.peer.last_beat.map(|t| {
                u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
            }),
            peer_ping_ok: self.peer.ping_ok,
        }
    }
}

/// A node's status as plain data: see [`Status::report`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusReport {
    /// This node's name.
    pub name: String,
    /// This node's state (`standby`, `active`, ...).
    pub state: String,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// This node's epoch.
    pub epoch: u64,
    /// Ping nodes reached.
    pub ping_ok: u16,
    /// Ping nodes configured.
    pub ping_total: u16,
    /// The peer's name.
    pub peer_name: String,
    /// The peer's last reported state.
    pub peer_state: Option<String>,
    /// True while the peer's beats arrive within deadtime.
    pub peer_alive: bool,
    /// Milliseconds since the peer's last beat.
    pub peer_last_beat_ms: Option<u64>,
    /// Ping nodes the peer reaches.
    pub peer_ping_ok: u16,
}

#[derive(Debug, Clone)]
struct Peer {
    state: NodeState,
    epoch: u64,
    seq: u64,
    last_seen: Instant,
    ping_ok: u16,
    alive: bool,
    warned: bool,
}

/// The membership protocol's decisions for one node of a pair.
///
/// Feed it with [`on_beat`](Self::on_beat) (authenticated beats), [`set_ping`](Self::set_ping),
/// [`promote_done`](Self::promote_done) / [`demote_done`](Self::demote_done), and call
/// [`poll`](Self::poll) at [`next_deadline`](Self::next_deadline); carry out the returned
/// [`Action`]s.
///
/// # Rules
///
/// - **Start-up**: a node starts in `init`; it becomes `standby` at the peer's first
///   beat, or takes the resources over if no beat came within `initdead`.
/// - **Peer dead**: a node that hears nothing for `deadtime` takes the resources over
///   (exactly at `last beat + deadtime`).
/// - **Neither holds** (both standby, or the peer is in `fault` or `stopped`): the winner
///   of the *election* promotes, and with a faulty or stopped peer this node promotes.
/// - **Election and split brain**: when both nodes hold the resources (a healed
///   partition), the loser demotes. The winner is, in order: the node reaching more ping
///   nodes; the preferred node; the node with the *lower* epoch (the one running
///   longer); the node with the lower name. Both nodes evaluate the same rule on the same
///   data, so exactly one keeps the resources. The winner then promotes its resources
///   again ([`Action::Refresh`]) so a virtual IP re-announces itself.
/// - **auto_failback on**: an active node that is not preferred demotes when the
///   preferred node is up in standby and reaches at least as many ping nodes; the
///   preferred node then wins the election. With `off`, the resources stay where they are.
/// - **ipfail**: an active node reaching fewer ping nodes than its live standby peer
///   demotes; the peer then wins the election.
/// - **Fault**: a failed promote puts the node in `fault` (its resources were rolled
///   back); its beats say so and the peer takes over.
/// - **Shutdown**: an active node demotes, then beats `stopped` so its peer takes over
///   without waiting for `deadtime`.
///
/// The machine never promotes while the peer is alive and holding: resources move only
/// after the holder reports `standby`, `fault` or `stopped`, or goes silent.
#[derive(Debug, Clone)]
pub struct Machine {
    cfg: MachineConfig,
    started: Instant,
    state: NodeState,
    reason: Option<Reason>,
    seq: u64,
    last_sent: Option<Instant>,
    ping_ok: u16,
    peer: Option<Peer>,
    stopping: bool,
    /// Both nodes were seen holding the resources (split brain) since this node promoted.
    contested: bool,
}

impl Machine {
    /// A machine starting at `now` in state `init`. Ping nodes count as reachable until
    /// [`set_ping`](Self::set_ping) says otherwise.
    pub fn new(cfg: MachineConfig, now: Instant) -> Self {
        Machine {
            ping_ok: cfg.ping_total,
            cfg,
            started: now,
            state: NodeState::Init,
            reason: None,
            seq: 0,
            last_sent: None,
            peer: None,
            stopping: false,
            contested: false,
        }
    }

    /// This node's state.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &MachineConfig {
        &self.cfg
    }

    /// A snapshot for status pages.
    pub fn status(&self) -> Status {
        Status {
            name: self.cfg.name.clone(),
            state: self.state,
            reason: self.reason.clone(),
            epoch: self.cfg.epoch,
            ping_ok: self.ping_ok,
            ping_total: self.cfg.ping_total,
            peer: PeerStatus {
                name: self.cfg.peer.clone(),
                state: self.peer.as_ref().map(|p| p.state),
                alive: self.peer.as_ref().is_some_and(|p| p.alive),
                last_beat: self.peer.as_ref().map(|p| p.last_seen),
                epoch: self.peer.as_ref().map(|p| p.epoch),
                ping_ok: self.peer.as_ref().map_or(0, |p| p.ping_ok),
            },
        }
    }

    /// When [`poll`](Self::poll) must next be called.
    pub fn next_deadline(&self) -> Instant {
        let t = &self.cfg.timing;
        let mut next = self.last_sent.map_or(self.started, |s| s + t.keepalive);
        match &self.peer {
            Some(p) if p.alive => {
                if !p.warned {
                    next = next.min(p.last_seen + t.warntime);
                }
                next = next.min(p.last_seen + t.deadtime);
            }
            Some(_) => {}
            None => {
                if self.state == NodeState::Init {
                    next = next.min(self.started + t.initdead);
                }
            }
        }
        next
    }

    /// Advances timers: sends a beat when due, notices a late or dead peer, and decides.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let t = self.cfg.timing;
        if let Some(p) = &mut self.peer {
            let silence = now.saturating_duration_since(p.last_seen);
            if p.alive && silence >= t.deadtime {
                p.alive = false;
                tracing::warn!(peer = %self.cfg.peer, ?silence, "peer is dead");
                out.push(event(now, EventKind::PeerDead));
            } else if p.alive && !p.warned && silence >= t.warntime {
                p.warned = true;
                tracing::warn!(peer = %self.cfg.peer, ?silence, "late heartbeat");
                out.push(event(now, EventKind::PeerLate { silence }));
            }
        }
        self.decide(now, &mut out);
        if self.last_sent.is_none_or(|s| now >= s + t.keepalive) {
            out.push(self.beat(now));
        }
        out
    }

    /// Takes an authenticated beat into account.
    pub fn on_beat(&mut self, now: Instant, beat: &Beat) -> Result<Vec<Action>, Reject> {
        if beat.node == self.cfg.name {
            return Err(Reject::Own);
        }
        if beat.node != self.cfg.peer {
            return Err(Reject::UnknownNode);
        }
        let mut out = Vec::new();
        match &mut self.peer {
            Some(p) => {
                if (beat.epoch, beat.seq) <= (p.epoch, p.seq) {
                    return Err(Reject::Replay);
                }
                let was_alive = p.alive;
                p.epoch = beat.epoch;
                p.seq = beat.seq;
                p.state = beat.state;
                p.ping_ok = beat.ping_ok;
                p.last_seen = now;
                p.alive = true;
                p.warned = false;
                if !was_alive {
                    tracing::info!(peer = %self.cfg.peer, "peer is back");
                    out.push(event(now, EventKind::PeerUp));
                }
            }
            None => {
                self.peer = Some(Peer {
                    state: beat.state,
                    epoch: beat.epoch,
                    seq: beat.seq,
                    last_seen: now,
                    ping_ok: beat.ping_ok,
                    alive: true,
                    warned: false,
                });
                tracing::info!(peer = %self.cfg.peer, state = %beat.state, "peer heard");
                out.push(event(now, EventKind::PeerUp));
            }
        }
        let before = self.state;
        self.decide(now, &mut out);
        if self.state != before {
            out.push(self.beat(now));
        }
        Ok(out)
    }

    /// Records how many ping nodes answer.
    pub fn set_ping(&mut self, now: Instant, ok: u16) -> Vec<Action> {
        self.ping_ok = ok.min(self.cfg.ping_total);
        let mut out = Vec::new();
        self.decide(now, &mut out);
        out
    }

    /// Reports the outcome of an [`Action::Promote`].
    pub fn promote_done(&mut self, now: Instant, result: Result<(), String>) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != NodeState::Promoting {
            return out;
        }
        match result {
            Ok(()) => self.go(now, NodeState::Active, Reason::Promoted, &mut out),
            Err(e) => self.go(now, NodeState::Fault, Reason::PromoteFailed(e), &mut out),
        }
        self.decide(now, &mut out);
        out.push(self.beat(now));
        out
    }

    /// Reports that an [`Action::Demote`] finished (successfully or not: the node no
    /// longer claims the resources either way).
    pub fn demote_done(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != NodeState::Demoting {
            return out;
        }
        if self.stopping {
            self.go(now, NodeState::Stopped, Reason::Shutdown, &mut out);
        } else {
            self.go(now, NodeState::Standby, Reason::Demoted, &mut out);
            self.decide(now, &mut out);
        }
        out.push(self.beat(now));
        out
    }

    /// Leaves the fault state (the operator fixed the cause).
    pub fn clear_fault(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == NodeState::Fault {
            self.go(now, NodeState::Standby, Reason::FaultCleared, &mut out);
            self.decide(now, &mut out);
            out.push(self.beat(now));
        }
        out
    }

    /// Starts a clean shutdown: demote if holding, then report `stopped`.
    ///
    /// When the returned actions contain no [`Action::Demote`], the node is already
    /// `stopped`; otherwise it is once [`demote_done`](Self::demote_done) is called.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.stopping = true;
        match self.state {
            NodeState::Promoting | NodeState::Active => {
                self.go(now, NodeState::Demoting, Reason::Shutdown, &mut out);
                out.push(Action::Demote);
            }
            NodeState::Demoting | NodeState::Stopped => {}
            _ => self.go(now, NodeState::Stopped, Reason::Shutdown, &mut out),
        }
        out.push(self.beat(now));
        out
    }

    fn beat(&mut self, now: Instant) -> Action {
        self.seq += 1;
        self.last_sent = Some(now);
        Action::Send(Beat {
            node: self.cfg.name.clone(),
            epoch: self.cfg.epoch,
            seq: self.seq,
            state: self.state,
            ping_ok: self.ping_ok,
            ping_total: self.cfg.ping_total,
        })
    }

    fn go(&mut self, now: Instant, to: NodeState, reason: Reason, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        tracing::info!(node = %self.cfg.name, %from, %to, %reason, "state change");
        self.state = to;
        self.reason = Some(reason.clone());
        out.push(event(now, EventKind::State { from, to, reason }));
    }

    fn promote(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        self.contested = false;
        self.go(now, NodeState::Promoting, reason, out);
        out.push(Action::Promote);
    }

    fn demote(&mut self, now: Instant, reason: Reason, out: &mut Vec<Action>) {
        self.go(now, NodeState::Demoting, reason, out);
        out.push(Action::Demote);
    }

    /// Does this node win the election against its peer? See the type's docs.
    fn wins(&self, peer: &Peer) -> bool {
        if self.cfg.ping_total > 0 {
            match self.ping_ok.cmp(&peer.ping_ok) {
                Ordering::Greater => return true,
                Ordering::Less => return false,
                Ordering::Equal => {}
            }
        }
        match self.cfg.preferred.as_deref() {
            Some(p) if p == self.cfg.name => return true,
            Some(p) if p == self.cfg.peer => return false,
            _ => {}
        }
        match self.cfg.epoch.cmp(&peer.epoch) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.cfg.name < self.cfg.peer,
        }
    }

    fn decide(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stopping {
            return;
        }
        let t = self.cfg.timing;
        let peer = self.peer.clone();
        match self.state {
            NodeState::Init => match &peer {
                Some(p) if p.alive => {
                    self.go(now, NodeState::Standby, Reason::PeerHeard, out);
                    self.decide(now, out);
                }
                _ if now >= self.started + t.initdead => {
                    self.promote(now, Reason::InitDead, out);
                }
                _ => {}
            },
            NodeState::Standby => match &peer {
                None => {
                    if now >= self.started + t.initdead {
                        self.promote(now, Reason::InitDead, out);
                    }
                }
                Some(p) if !p.alive => self.promote(now, Reason::PeerDead, out),
                Some(p) => match p.state {
                    NodeState::Fault => self.promote(now, Reason::PeerFault, out),
                    NodeState::Stopped => self.promote(now, Reason::PeerStopped, out),
                    NodeState::Init | NodeState::Standby if self.wins(p) => {
                        self.promote(now, Reason::Elected, out);
                    }
                    _ => {}
                },
            },
            NodeState::Active => {
                let Some(p) = peer.filter(|p| p.alive) else {
                    return;
                };
                if p.state.holds() {
                    self.contested = true;
                } else if self.contested {
                    // The split brain is over and this node kept the resources.
                    self.contested = false;
                    out.push(Action::Refresh);
                }
                match p.state {
                    NodeState::Promoting | NodeState::Active if !self.wins(&p) => {
                        self.contested = false;
                        self.demote(now, Reason::SplitBrain, out);
                    }
                    NodeState::Init | NodeState::Standby => {
                        if self.cfg.ping_total > 0 && self.ping_ok < p.ping_ok {
                            self.demote(now, Reason::PingLost, out);
                        } else if self.cfg.auto_failback
                            && self.cfg.preferred.as_deref() == Some(self.cfg.peer.as_str())
                            && (self.cfg.ping_total == 0 || p.ping_ok >= self.ping_ok)
                        {
                            self.demote(now, Reason::Failback, out);
                        }
                    }
                    _ => {}
                }
            }
            NodeState::Promoting | NodeState::Demoting | NodeState::Fault | NodeState::Stopped => {}
        }
    }
}

fn event(at: Instant, kind: EventKind) -> Action {
    Action::Event(Event { at, kind })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Timing {
        Timing {
            keepalive: Duration::from_millis(200),
            warntime: Duration::from_millis(500),
            deadtime: Duration::from_secs(1),
            initdead: Duration::from_secs(3),
        }
    }

    fn cfg(
        name: &str,
        peer: &str,
        preferred: Option<&str>,
        auto_failback: bool,
        epoch: u64,
    ) -> MachineConfig {
        MachineConfig {
            name: name.into(),
            peer: peer.into(),
            preferred: preferred.map(Into::into),
            auto_failback,
            timing: timing(),
            ping_total: 0,
            epoch,
        }
    }

    /// Two machines and a link between them; promote/demote complete at once.
    struct Pair {
        m: [Machine; 2],
        up: [bool; 2],
        link: bool,
        /// Beats seen on the wire, for replay tests.
        wire: Vec<(usize, Beat)>,
        fail_promote: [bool; 2],
        refreshed: [u32; 2],
        now: Instant,
    }

    impl Pair {
        fn new(a: MachineConfig, b: MachineConfig, now: Instant) -> Self {
            Pair {
                m: [Machine::new(a, now), Machine::new(b, now)],
                up: [true, true],
                link: true,
                wire: Vec::new(),
                fail_promote: [false, false],
                refreshed: [0, 0],
                now,
            }
        }

        fn run(&mut self, i: usize, actions: Vec<Action>) {
            let mut queue: VecDeque<(usize, Action)> =
                actions.into_iter().map(|a| (i, a)).collect();
            let mut budget = 1000;
            while let Some((i, a)) = queue.pop_front() {
                budget -= 1;
                assert!(budget > 0, "action loop does not settle");
                let now = self.now;
                match a {
                    Action::Send(b) => {
                        self.wire.push((i, b.clone()));
                        let j = 1 - i;
                        if self.link && self.up[j] {
                            if let Ok(more) = self.m[j].on_beat(now, &b) {
                                queue.extend(more.into_iter().map(|a| (j, a)));
                            }
                        }
                    }
                    Action::Promote => {
                        let r = if self.fail_promote[i] {
                            Err("broken".to_owned())
                        } else {
                            Ok(())
                        };
                        let more = self.m[i].promote_done(now, r);
                        queue.extend(more.into_iter().map(|a| (i, a)));
                    }
                    Action::Demote => {
                        let more = self.m[i].demote_done(now);
                        queue.extend(more.into_iter().map(|a| (i, a)));
                    }
                    Action::Event(_) => {}
                    Action::Refresh => self.refreshed[i] += 1,
                }
            }
        }

        /// Advances time to `until` in 1 ms steps, polling each machine at its deadline.
        fn advance_to(&mut self, until: Instant) {
            while self.now < until {
                self.now += MS;
                for i in 0..2 {
                    if self.up[i] && self.m[i].next_deadline() <= self.now {
                        let a = self.m[i].poll(self.now);
                        self.run(i, a);
                    }
                }
                let holders = self.holders();
                assert!(
                    holders.len() <= 1 || !self.link,
                    "both hold with the link up: {holders:?}"
                );
            }
        }

        fn advance(&mut self, d: Duration) {
            let until = self.now + d;
            self.advance_to(until);
        }

        fn state(&self, i: usize) -> NodeState {
            self.m[i].state()
        }

        fn holders(&self) -> Vec<usize> {
            (0..2)
                .filter(|&i| self.up[i] && self.m[i].state() == NodeState::Active)
                .collect()
        }
    }

    fn pair(preferred: Option<&str>, auto_failback: bool) -> Pair {
        Pair::new(
            cfg("lb0", "lb1", preferred, auto_failback, 100),
            cfg("lb1", "lb0", preferred, auto_failback, 200),
            Instant::now(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn preferred_node_takes_over_at_start() {
        let mut p = pair(Some("lb1"), true);
        p.advance(Duration::from_millis(50));
        assert_eq!(p.state(1), NodeState::Active);
        assert_eq!(p.state(0), NodeState::Standby);
    }

    #[tokio::test(start_paused = true)]
    async fn takeover_exactly_after_deadtime() {
        let mut p = pair(Some("lb0"), true);
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders(), [0]);
        // lb0 dies right after a beat: find the time of its last beat.
        p.up[0] = false;
        let last = p.m[1].status().peer.last_beat.expect("heard lb0");
        p.advance_to(last + timing().deadtime - MS);
        assert_eq!(p.state(1), NodeState::Standby, "not before deadtime");
        p.advance(MS);
        assert_eq!(p.state(1), NodeState::Active, "exactly at deadtime");
        assert_eq!(p.m[1].status().reason, Some(Reason::Promoted));
        assert!(!p.m[1].status().peer.alive);
        let r = p.m[1].status().report(p.now);
        assert_eq!((r.state.as_str(), r.peer_alive), ("active", false));
        assert_eq!(r.peer_last_beat_ms, Some(1000));
        assert_eq!(r.reason.as_deref(), Some("resources promoted"));
    }

    #[tokio::test(start_paused = true)]
    async fn late_beat_warns_before_death() {
        let t0 = Instant::now();
        let mut m = Machine::new(cfg("lb0", "lb1", Some("lb1"), true, 1), t0);
        let beat = |seq| Beat {
            node: "lb1".into(),
            epoch: 2,
            seq,
            state: NodeState::Active,
            ping_ok: 0,
            ping_total: 0,
        };
        m.on_beat(t0, &beat(1)).expect("beat");
        // Hearing the peer moved us to standby and sent our beat: the next is a keepalive away.
        assert_eq!(m.state(), NodeState::Standby);
        assert_eq!(m.next_deadline(), t0 + timing().keepalive);
        let events = m.poll(t0 + Duration::from_millis(500));
        assert!(events.iter().any(|a| matches!(
            a,
            Action::Event(Event {
                kind: EventKind::PeerLate { .. },
                ..
            })
        )));
        let events = m.poll(t0 + Duration::from_secs(1));
        assert!(events.iter().any(|a| matches!(
            a,
            Action::Event(Event {
                kind: EventKind::PeerDead,
                ..
            })
        )));
        assert!(events.contains(&Action::Promote));
    }

    #[tokio::test(start_paused = true)]
    async fn lone_node_waits_initdead() {
        let t0 = Instant::now();
        let mut p = pair(Some("lb1"), true);
        p.up[1] = false;
        p.advance_to(t0 + timing().initdead - MS);
        assert_eq!(p.state(0), NodeState::Init);
        p.advance(MS);
        assert_eq!(p.state(0), NodeState::Active);
    }

    #[tokio::test(start_paused = true)]
    async fn auto_failback_on_returns_resources_to_preferred() {
        let mut p = pair(Some("lb0"), true);
        p.up[0] = false;
        p.advance(Duration::from_secs(4));
        assert_eq!(p.holders(), [1]);
        // lb0 restarts: a new epoch.
        p.m[0] = Machine::new(cfg("lb0", "lb1", Some("lb0"), true, 300), p.now);
        p.up[0] = true;
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders(), [0]);
        assert_eq!(p.state(1), NodeState::Standby);
    }

    #[tokio::test(start_paused = true)]
    async fn auto_failback_off_keeps_resources_where_they_are() {
        let mut p = pair(Some("lb0"), false);
        p.up[0] = false;
        p.advance(Duration::from_secs(4));
        assert_eq!(p.holders(), [1]);
        p.m[0] = Machine::new(cfg("lb0", "lb1", Some("lb0"), false, 300), p.now);
        p.up[0] = true;
        p.advance(Duration::from_secs(5));
        assert_eq!(p.holders(), [1]);
        assert_eq!(p.state(0), NodeState::Standby);
    }

    fn split_brain(preferred: Option<&str>, epochs: (u64, u64)) -> Vec<usize> {
        let mut p = Pair::new(
            cfg("lb0", "lb1", preferred, false, epochs.0),
            cfg("lb1", "lb0", preferred, false, epochs.1),
            Instant::now(),
        );
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders().len(), 1);
        p.link = false;
        p.advance(Duration::from_secs(2));
        assert_eq!(p.holders(), [0, 1], "both hold during the partition");
        p.link = true;
        // A few beats after healing: exactly one holder.
        p.advance(Duration::from_millis(600));
        let h = p.holders();
        if let [w] = h.as_slice() {
            assert_eq!(p.refreshed[*w], 1, "the winner re-announces once");
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn split_brain_rule_preferred_then_epoch_then_name() {
        assert_eq!(split_brain(Some("lb1"), (100, 200)), [1]);
        assert_eq!(split_brain(Some("lb0"), (300, 200)), [0]);
        assert_eq!(split_brain(None, (300, 200)), [1], "lower epoch keeps");
        assert_eq!(split_brain(None, (100, 200)), [0], "lower epoch keeps");
        assert_eq!(split_brain(None, (100, 100)), [0], "then the lower name");
    }

    #[tokio::test(start_paused = true)]
    async fn replayed_and_foreign_beats_change_nothing() {
        let mut p = pair(Some("lb0"), true);
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders(), [0]);
        let old_standby = p
            .wire
            .iter()
            .find(|(i, b)| *i == 1 && b.state == NodeState::Standby)
            .cloned();
        let (_, old) = old_standby.expect("lb1 beat standby");
        // lb0 dies; lb1 takes over.
        p.up[0] = false;
        p.advance(Duration::from_secs(2));
        assert_eq!(p.holders(), [1]);
        // An attacker replays lb0's old "active" beats at lb1: rejected, nothing changes.
        let replays: Vec<Beat> = p
            .wire
            .iter()
            .filter(|(i, _)| *i == 0)
            .map(|(_, b)| b.clone())
            .collect();
        for b in &replays {
            assert_eq!(p.m[1].on_beat(p.now, b), Err(Reject::Replay));
        }
        assert!(!p.m[1].status().peer.alive);
        // A beat naming ourselves or a stranger is ignored too.
        assert_eq!(p.m[1].on_beat(p.now, &old), Err(Reject::Own));
        let mut stranger = old.clone();
        stranger.node = "mallory".into();
        stranger.seq = u64::MAX;
        assert_eq!(p.m[1].on_beat(p.now, &stranger), Err(Reject::UnknownNode));
        p.advance(Duration::from_secs(2));
        assert_eq!(p.holders(), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_promote_faults_and_peer_takes_over() {
        let mut p = pair(Some("lb0"), true);
        p.fail_promote[0] = true;
        p.advance(Duration::from_secs(1));
        assert_eq!(p.state(0), NodeState::Fault);
        assert!(matches!(
            p.m[0].status().reason,
            Some(Reason::PromoteFailed(_))
        ));
        assert_eq!(p.holders(), [1]);
        // The operator fixes it: with auto_failback on, the preferred node gets them back.
        p.fail_promote[0] = false;
        let a = p.m[0].clear_fault(p.now);
        p.run(0, a);
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders(), [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_hands_over_without_waiting_deadtime() {
        let mut p = pair(Some("lb0"), true);
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders(), [0]);
        let a = p.m[0].shutdown(p.now);
        p.run(0, a);
        assert_eq!(p.state(0), NodeState::Stopped);
        assert_eq!(p.state(1), NodeState::Active);
    }

    #[tokio::test(start_paused = true)]
    async fn ipfail_moves_resources_to_the_better_connected_node() {
        let mut a = cfg("lb0", "lb1", Some("lb0"), true, 100);
        let mut b = cfg("lb1", "lb0", Some("lb0"), true, 200);
        a.ping_total = 1;
        b.ping_total = 1;
        let mut p = Pair::new(a, b, Instant::now());
        p.advance(Duration::from_secs(1));
        assert_eq!(p.holders(), [0]);
        let now = p.now;
        let acts = p.m[0].set_ping(now, 0);
        p.run(0, acts);
        p.advance(Duration::from_millis(500));
        assert_eq!(
            p.holders(),
            [1],
            "lb0 lost its ping node, lb1 still reaches it"
        );
        let acts = p.m[0].set_ping(p.now, 1);
        p.run(0, acts);
        p.advance(Duration::from_millis(500));
        assert_eq!(
            p.holders(),
            [0],
            "back to the preferred node (auto_failback)"
        );
    }
}
