//! [`Node`]: the membership protocol on UDP, driving a resource group.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::failover::Failover;
use crate::protocol::{
    Action, Beat, Event, EventKind, Key, Machine, MachineConfig, NodeState, Status,
};
use crate::{Error, Result};

/// Heartbeat's UDP port.
pub const DEFAULT_PORT: u16 = 694;

/// A node's role, as published on [`Node::role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Not holding the resources (starting, standby, taking over, giving up, stopped).
    Standby,
    /// Holding the resources: promote completed.
    Active,
    /// A promote failed; the resources were given up.
    Fault,
}

impl From<NodeState> for Role {
    fn from(s: NodeState) -> Self {
        match s {
            NodeState::Active => Role::Active,
            NodeState::Fault => Role::Fault,
            _ => Role::Standby,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Standby => "standby",
            Role::Active => "active",
            Role::Fault => "fault",
        })
    }
}

/// A multicast group for beats (`mcast IFACE GROUP PORT TTL LOOP` in `ha.cf`). Beats go
/// to the group on the port of [`NodeConfig::bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multicast {
    /// The interface to send and join on.
    pub interface: String,
    /// The group.
    pub group: Ipv4Addr,
    /// The TTL of sent beats.
    pub ttl: u32,
}

/// Everything a [`Node`] needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The protocol's configuration (names, preferred node, timing, auto_failback).
    pub machine: MachineConfig,
    /// The pair's shared key.
    pub key: Key,
    /// Where to receive beats (`0.0.0.0:694` by default).
    pub bind: SocketAddr,
    /// Bind the socket to this interface (`SO_BINDTODEVICE`), as Heartbeat does for `ucast`.
    /// Multicast beats leave through this interface; without it they need a route to
    /// the group.
    pub bind_device: Option<String>,
    /// Unicast destinations of beats (`ucast` lines). Beats sent to this node's own
    /// address come back and are ignored, so both nodes may share one `ha.cf`.
    pub peers: Vec<SocketAddr>,
    /// A multicast group to send beats to and receive them from.
    pub multicast: Option<Multicast>,
    /// Ping nodes (ipfail): hosts whose reachability decides who holds the resources.
    pub ping: Vec<IpAddr>,
}

enum Command {
    Shutdown(oneshot::Sender<()>),
    ClearFault,
}

enum Done {
    Promote(Result<()>),
    Demote,
}

/// A running node of a pair: beats, decisions, and the resources it drives.
///
/// Dropping the handle does not stop the node; call [`shutdown`](Self::shutdown) to
/// demote the resources and tell the peer.
#[derive(Debug, Clone)]
pub struct Node {
    role: watch::Receiver<Role>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<Event>,
    /// Subscribed before the node's tasks started; handed to the first caller of
    /// [`Node::events_since_start`].
    first_events: Arc<Mutex<Option<broadcast::Receiver<Event>>>>,
    commands: mpsc::Sender<CommandBox>,
    local: SocketAddr,
}

// A wrapper so `Node` can derive Debug without exposing `Command`.
struct CommandBox(Command);

impl fmt::Debug for CommandBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Command")
    }
}

impl Node {
    /// Binds the socket and starts the node's tasks on the current tokio runtime.
    pub async fn spawn(config: NodeConfig, resources: impl Failover + 'static) -> Result<Node> {
        let socket = bind(&config)?;
        let local = socket
            .local_addr()
            .map_err(|e| Error::io("reading the beat socket's address", e))?;
        let now = Instant::now();
        let machine = Machine::new(config.machine.clone(), now);
        let (role_tx, role) = watch::channel(Role::Standby);
        let (status_tx, status) = watch::channel(machine.status());
        let (events, first_events) = broadcast::channel(256);
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (ping_tx, ping_rx) = watch::channel(config.ping.len() as u16);
        if !config.ping.is_empty() {
            crate::ping::spawn(config.ping.clone(), config.machine.timing, ping_tx);
        }
        let (do_tx, do_rx) = mpsc::channel(4);
        let (done_tx, done_rx) = mpsc::channel(4);
        tokio::spawn(drive(Arc::new(resources), do_rx, done_tx));
        let run = Runner {
            machine,
            socket,
            config,
            role_tx,
            status_tx,
            events: events.clone(),
            do_tx,
            auth_failed: HashSet::new(),
            last_beat: Vec::new(),
        };
        tokio::spawn(run.run(cmd_rx, done_rx, ping_rx));
        Ok(Node {
            role,
            status,
            events,
            first_events: Arc::new(Mutex::new(Some(first_events))),
            commands: cmd_tx,
            local,
        })
    }

    /// The role, updated on every change.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The full status (state, reason, peer, last beat), updated on every change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Every event from now on: state changes with reasons, peer up / late / dead.
    ///
    /// The node runs from [`spawn`](Self::spawn) on, so a receiver taken afterwards can
    /// miss the first transitions (a peer's beat may already have moved the node to
    /// standby); [`events_since_start`](Self::events_since_start) has them all.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Every event since the node started (it was subscribed before the node's tasks
    /// ran), for the first caller of any clone of this handle; `None` afterwards. It
    /// holds the last 256 events until taken; a receiver that falls further behind gets
    /// `RecvError::Lagged`.
    pub fn events_since_start(&self) -> Option<broadcast::Receiver<Event>> {
        self.first_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The address beats are received on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Leaves the fault state after the operator fixed its cause.
    pub async fn clear_fault(&self) -> Result<()> {
        self.commands
            .send(CommandBox(Command::ClearFault))
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Demotes the resources if held, tells the peer (which takes over at once) and
    /// stops. Returns when the resources are down.
    pub async fn shutdown(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(CommandBox(Command::Shutdown(tx)))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)
    }
}

fn bind(config: &NodeConfig) -> Result<UdpSocket> {
    let ctx = |what: &str| format!("{what} for beats on {}", config.bind);
    let domain = Domain::for_address(config.bind);
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io(ctx("creating a socket"), e))?;
    s.set_reuse_address(true)
        .map_err(|e| Error::io(ctx("SO_REUSEADDR"), e))?;
    if let Some(dev) = &config.bind_device {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| Error::io(ctx(&format!("binding to device {dev}")), e))?;
    }
    s.bind(&config.bind.into())
        .map_err(|e| Error::io(ctx("binding"), e))?;
    if let Some(m) = &config.multicast {
        let index = crate::netlink::if_index(&m.interface)?;
        s.join_multicast_v4_n(&m.group, &socket2::InterfaceIndexOrAddress::Index(index))
            .map_err(|e| Error::io(format!("joining {} on {}", m.group, m.interface), e))?;
        s.set_multicast_ttl_v4(m.ttl)
            .map_err(|e| Error::io("setting the multicast ttl", e))?;
        s.set_multicast_loop_v4(false)
            .map_err(|e| Error::io("disabling multicast loop", e))?;
    }
    s.set_nonblocking(true)
        .map_err(|e| Error::io(ctx("non-blocking mode"), e))?;
    UdpSocket::from_std(s.into()).map_err(|e| Error::io(ctx("registering the socket"), e))
}

/// Runs promote/demote requests one at a time, so beats go on during slow scripts.
///
/// Before anything else the resources are demoted once: a previous run that was killed
/// may have left them behind (an address stays on its interface when the process dies),
/// and a node starts without them.
async fn drive(
    resources: Arc<dyn Failover>,
    mut rx: mpsc::Receiver<Action>,
    done: mpsc::Sender<Done>,
) {
    tracing::info!(
        resources = resources.name(),
        "start-up cleanup: demoting what a previous run may have left"
    );
    if let Err(e) = resources.demote().await {
        tracing::warn!(error = %e, "start-up cleanup");
    }
    while let Some(a) = rx.recv().await {
        let d = match a {
            Action::Promote => Done::Promote(resources.promote().await),
            Action::Refresh => {
                if let Err(e) = resources.promote().await {
                    tracing::error!(error = %e, "re-promoting after a split brain");
                }
                continue;
            }
            _ => {
                if let Err(e) = resources.demote().await {
                    tracing::error!(error = %e, "demote failed; the node gives the resources up anyway");
                }
                Done::Demote
            }
        };
        if done.send(d).await.is_err() {
            break;
        }
    }
}

struct Runner {
    machine: Machine,
    socket: UdpSocket,
    config: NodeConfig,
    role_tx: watch::Sender<Role>,
    status_tx: watch::Sender<Status>,
    events: broadcast::Sender<Event>,
    do_tx: mpsc::Sender<Action>,
    auth_failed: HashSet<IpAddr>,
    /// The last beat sent, encoded.
    last_beat: Vec<u8>,
}

impl Runner {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<CommandBox>,
        mut done: mpsc::Receiver<Done>,
        mut ping: watch::Receiver<u16>,
    ) {
        let mut buf = vec![0u8; 2048];
        let mut shutdown_reply: Option<oneshot::Sender<()>> = None;
        let mut ping_open = true;
        loop {
            let deadline = self.machine.next_deadline();
            let actions = tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(CommandBox(Command::Shutdown(reply))) => {
                        shutdown_reply = Some(reply);
                        self.machine.shutdown(Instant::now())
                    }
                    Some(CommandBox(Command::ClearFault)) => self.machine.clear_fault(Instant::now()),
                    // Every handle dropped: keep running; only shutdown stops the node.
                    None => {
                        std::future::pending::<()>().await;
                        Vec::new()
                    }
                },
                d = done.recv() => match d {
                    Some(Done::Promote(r)) => self.machine.promote_done(Instant::now(), r.map_err(|e| e.to_string())),
                    Some(Done::Demote) => self.machine.demote_done(Instant::now()),
                    None => break,
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from),
                    Err(e) => {
                        tracing::warn!(error = %e, "receiving beats");
                        // Do not spin on a persistent error.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        Vec::new()
                    }
                },
                c = ping.changed(), if ping_open => match c {
                    Ok(()) => {
                        let ok = *ping.borrow_and_update();
                        self.machine.set_ping(Instant::now(), ok)
                    }
                    Err(_) => {
                        ping_open = false;
                        Vec::new()
                    }
                },
                () = sleep_until(deadline) => self.machine.poll(Instant::now()),
            };
            self.execute(actions).await;
            if self.machine.state() == NodeState::Stopped {
                // The `stopped` beat lets the peer take over at once; send it twice more in
                // case one is lost (the peer ignores the copies: same sequence number).
                for _ in 0..2 {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    self.resend_last().await;
                }
                if let Some(reply) = shutdown_reply.take() {
                    let _ = reply.send(());
                }
                break;
            }
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) -> Vec<Action> {
        match Beat::decode(data, &self.config.key, &from.to_string()) {
            Ok(beat) => match self.machine.on_beat(Instant::now(), &beat) {
                Ok(actions) => {
                    if self.auth_failed.remove(&from.ip()) {
                        tracing::info!(%from, "beats from this peer authenticate again");
                    }
                    actions
                }
                Err(reject) => {
                    tracing::debug!(%from, node = %beat.node, ?reject, "beat ignored");
                    Vec::new()
                }
            },
            Err(Error::Auth(_)) => {
                if self.auth_failed.insert(from.ip()) {
                    tracing::warn!(%from, "beat failed authentication: key mismatch or forgery (logged once per peer)");
                }
                Vec::new()
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "not a beat");
                Vec::new()
            }
        }
    }

    /// Sends the last encoded beat to every destination.
    async fn resend_last(&self) {
        let bytes = &self.last_beat;
        for peer in &self.config.peers {
            if let Err(e) = self.socket.send_to(bytes, peer).await {
                tracing::debug!(%peer, error = %e, "sending a beat");
            }
        }
        if let Some(m) = &self.config.multicast {
            let to = SocketAddr::new(m.group.into(), self.config.bind.port());
            if let Err(e) = self.socket.send_to(bytes, to).await {
                tracing::debug!(%to, error = %e, "sending a beat");
            }
        }
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        let mut changed = false;
        for a in actions {
            match a {
                Action::Send(beat) => {
                    self.last_beat = beat.encode(&self.config.key);
                    self.resend_last().await;
                }
                a @ (Action::Promote | Action::Demote | Action::Refresh) => {
                    if self.do_tx.send(a).await.is_err() {
                        tracing::error!("the resource driver stopped");
                    }
                }
                Action::Event(ev) => {
                    changed = true;
                    if let EventKind::State { .. } = ev.kind {
                        let role = Role::from(self.machine.state());
                        self.role_tx.send_if_modified(|r| {
                            let m = *r != role;
                            *r = role;
                            m
                        });
                    }
                    let _ = self.events.send(ev);
                }
            }
        }
        if changed || self.status_tx.borrow().peer.last_beat != self.machine.status().peer.last_beat
        {
            self.status_tx.send_replace(self.machine.status());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::Timing;
    use crate::resource::{FnResource, ResourceGroup};

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    fn config(name: &str, peer: &str, me: u16, other: u16, key: &str) -> NodeConfig {
        NodeConfig {
            machine: MachineConfig {
                name: name.into(),
                peer: peer.into(),
                preferred: Some("lb0".into()),
                auto_failback: true,
                timing: Timing {
                    keepalive: Duration::from_millis(50),
                    warntime: Duration::from_millis(150),
                    deadtime: Duration::from_millis(300),
                    initdead: Duration::from_millis(600),
                },
                ping_total: 0,
                epoch: 1,
            },
            key: Key::new(key),
            bind: SocketAddr::from(([127, 0, 0, 1], me)),
            bind_device: None,
            peers: vec![SocketAddr::from(([127, 0, 0, 1], other))],
            multicast: None,
            ping: vec![],
        }
    }

    fn group() -> ResourceGroup {
        ResourceGroup::new().with(FnResource::new(
            "r",
            || async { Ok(()) },
            || async { Ok(()) },
        ))
    }

    async fn wait_role(node: &Node, want: Role) {
        let mut r = node.role();
        tokio::time::timeout(Duration::from_secs(10), r.wait_for(|r| *r == want))
            .await
            .expect("role reached in time")
            .expect("node running");
    }

    /// lb0 (preferred) and lb1 on loopback with the same key.
    async fn pair() -> (Node, Node) {
        let (p0, p1) = (free_port(), free_port());
        let n0 = Node::spawn(config("lb0", "lb1", p0, p1, "k"), group())
            .await
            .expect("lb0");
        let n1 = Node::spawn(config("lb1", "lb0", p1, p0, "k"), group())
            .await
            .expect("lb1");
        (n0, n1)
    }

    #[tokio::test]
    async fn pair_on_loopback_elects_preferred_and_hands_over_on_shutdown() {
        let (n0, n1) = pair().await;
        wait_role(&n0, Role::Active).await;
        assert_eq!(*n1.role().borrow(), Role::Standby);
        let mut events = n1.events();
        n0.shutdown().await.expect("shutdown");
        wait_role(&n1, Role::Active).await;
        let mut reasons = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let EventKind::State { reason, .. } = e.kind {
                reasons.push(reason);
            }
        }
        assert!(
            reasons.contains(&crate::protocol::Reason::PeerStopped),
            "{reasons:?}"
        );
        n1.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn events_since_start_include_transitions_before_the_first_call() {
        let (n0, n1) = pair().await;
        wait_role(&n0, Role::Active).await;
        let mut status = n1.status();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.state == NodeState::Standby),
        )
        .await
        .expect("lb1 stands by in time")
        .expect("lb1 running");
        // lb1 went to standby before anyone asked for its events: a receiver taken now
        // misses that transition, the one from the start has it.
        let is_standby = |e: &Event| {
            matches!(
                e.kind,
                EventKind::State {
                    to: NodeState::Standby,
                    ..
                }
            )
        };
        let mut late = n1.events();
        let mut first = n1.events_since_start().expect("first call");
        assert!(n1.clone().events_since_start().is_none(), "handed out once");
        let mut seen = Vec::new();
        while let Ok(e) = first.try_recv() {
            seen.push(e);
        }
        assert!(seen.iter().any(is_standby), "{seen:?}");
        assert!(!std::iter::from_fn(|| late.try_recv().ok()).any(|e| is_standby(&e)));
        n0.shutdown().await.expect("shutdown");
        n1.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn wrong_key_beats_are_ignored() {
        let (p0, p1) = (free_port(), free_port());
        // lb1 has the wrong key: both take over (each thinks the other is dead), and
        // neither is affected by the other's beats.
        let n0 = Node::spawn(config("lb0", "lb1", p0, p1, "k"), group())
            .await
            .expect("lb0");
        let n1 = Node::spawn(config("lb1", "lb0", p1, p0, "other"), group())
            .await
            .expect("lb1");
        wait_role(&n0, Role::Active).await;
        wait_role(&n1, Role::Active).await;
        assert!(n0.status().borrow().peer.last_beat.is_none());
        n0.shutdown().await.expect("shutdown");
        n1.shutdown().await.expect("shutdown");
    }
}
