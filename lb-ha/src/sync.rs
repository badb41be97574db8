//! State sync: the active node streams a table's changes to the passive one.
//!
//! lb-ha knows nothing of what is synced: a [`SyncTable`] exports its entries as opaque
//! key/value bytes, applies entries received, and announces its changes. The binaries
//! adapt pen's client table to it, so sticky clients keep their backend after a failover.
//!
//! # Protocol
//!
//! Every node listens on TCP. While a node is [`Role::Active`] it connects to its peer
//! (retrying every second), sends a full export, then every change. The receiver opens
//! each connection with a random 16-byte challenge; each frame is
//! `len:u32 seq:u64 key_len:u32 key value tag[32]` where `tag` is HMAC-SHA256, under the
//! pair's key, of `challenge seq key_len key value` and `seq` counts from 1 without gaps.
//! A frame from another connection (replayed), out of order or with a bad tag closes the
//! connection and changes nothing. A node applies entries only while it is not active:
//! the active node's table is the truth.

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::node::Role;
use crate::protocol::Key;
use crate::{Error, Result};

/// Largest frame accepted (key + value + header), to bound memory on bad input.
const MAX_FRAME: usize = 64 * 1024;
const CHALLENGE: usize = 16;
const TAG: usize = 32;

/// One entry of a synced table, opaque to lb-ha.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncEntry {
    /// The key (for pen's client table: the client's address bytes).
    pub key: Vec<u8>,
    /// The value (for pen's client table: the backend).
    pub value: Vec<u8>,
}

/// A table that can be streamed from the active node to the passive one.
pub trait SyncTable: Send + Sync + 'static {
    /// Every entry, for a full transfer when a connection opens.
    fn export(&self) -> Vec<SyncEntry>;
    /// Stores an entry received from the active node.
    fn apply(&self, entry: SyncEntry);
    /// Changes from now on.
    fn subscribe(&self) -> broadcast::Receiver<SyncEntry>;
}

/// The running sync tasks; dropping the handle stops them.
#[derive(Debug)]
pub struct StateSync {
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for StateSync {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl StateSync {
    /// Listens on `listen` and, while `role` is active, streams `table` to `peer`.
    pub async fn spawn(
        table: Arc<dyn SyncTable>,
        role: watch::Receiver<Role>,
        listen: SocketAddr,
        peer: SocketAddr,
        key: Key,
    ) -> Result<StateSync> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding the sync listener on {listen}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("reading the sync listener's address", e))?;
        let receiver = tokio::spawn(accept_loop(
            listener,
            table.clone(),
            role.clone(),
            key.clone(),
        ));
        let sender = tokio::spawn(send_loop(table, role, peer, key));
        Ok(StateSync {
            local,
            tasks: vec![receiver, sender],
        })
    }

    /// The address the sync listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl fmt::Debug for dyn SyncTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncTable")
    }
}

fn challenge() -> [u8; CHALLENGE] {
    let mut c = [0u8; CHALLENGE];
    // The kernel's CSPRNG; on failure fall back to the clock and pid, still unique per
    // connection (the challenge only has to never repeat, it need not be secret).
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut c))
        .is_err()
    {
        let t = crate::config::epoch_now().to_be_bytes();
        c[..8].copy_from_slice(&t);
        c[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    c
}

fn frame(key: &Key, challenge: &[u8], seq: u64, e: &SyncEntry) -> Vec<u8> {
    let key_len = (e.key.len() as u32).to_be_bytes();
    let seq_b = seq.to_be_bytes();
    let tag = key.sign(&[challenge, &seq_b, &key_len, &e.key, &e.value]);
    let len = 8 + 4 + e.key.len() + e.value.len() + TAG;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&seq_b);
    out.extend_from_slice(&key_len);
    out.extend_from_slice(&e.key);
    out.extend_from_slice(&e.value);
    out.extend_from_slice(&tag);
    out
}

/// Checks one frame body (without its length prefix).
fn unframe(
    key: &Key,
    challenge: &[u8],
    want_seq: u64,
    body: &[u8],
) -> std::result::Result<SyncEntry, String> {
    if body.len() < 12 + TAG {
        return Err(format!("frame of {} bytes is too short", body.len()));
    }
    let (data, tag) = body.split_at(body.len() - TAG);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&data[..8]);
    let seq = u64::from_be_bytes(seq);
    let key_len = u32::from_be_bytes([data[8], data[9], data[10], data[11]]) as usize;
    let rest = &data[12..];
    if key_len > rest.len() {
        return Err(format!("key length {key_len} exceeds the frame"));
    }
    let (k, v) = rest.split_at(key_len);
    if !key.verify(&[challenge, &data[..12], k, v], tag) {
        return Err("bad tag (key mismatch, forged or replayed frame)".to_owned());
    }
    if seq != want_seq {
        return Err(format!("sequence {seq}, expected {want_seq}"));
    }
    Ok(SyncEntry {
        key: k.to_vec(),
        value: v.to_vec(),
    })
}

async fn accept_loop(
    listener: TcpListener,
    table: Arc<dyn SyncTable>,
    role: watch::Receiver<Role>,
    key: Key,
) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (table, role, key) = (table.clone(), role.clone(), key.clone());
        tokio::spawn(async move {
            match receive(stream, &*table, &role, &key).await {
                Ok(n) => tracing::info!(%from, entries = n, "sync stream closed"),
                Err(e) => tracing::warn!(%from, error = %e, "sync stream rejected"),
            }
        });
    }
}

async fn receive(
    mut s: TcpStream,
    table: &dyn SyncTable,
    role: &watch::Receiver<Role>,
    key: &Key,
) -> Result<u64> {
    let c = challenge();
    s.write_all(&c)
        .await
        .map_err(|e| Error::io("sending the sync challenge", e))?;
    let mut seq = 1u64;
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match s.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(seq - 1),
            Err(e) => return Err(Error::io("reading a sync frame", e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(Error::Malformed(format!("sync frame of {len} bytes")));
        }
        buf.resize(len, 0);
        s.read_exact(&mut buf)
            .await
            .map_err(|e| Error::io("reading a sync frame", e))?;
        let entry = unframe(key, &c, seq, &buf).map_err(Error::Malformed)?;
        seq += 1;
        if *role.borrow() != Role::Active {
            table.apply(entry);
        }
    }
}

async fn send_loop(
    table: Arc<dyn SyncTable>,
    mut role: watch::Receiver<Role>,
    peer: SocketAddr,
    key: Key,
) {
    loop {
        if role.wait_for(|r| *r == Role::Active).await.is_err() {
            return;
        }
        let result = tokio::select! {
            r = stream_to(&*table, peer, &key) => r,
            _ = role.wait_for(|r| *r != Role::Active) => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "sync stream to the peer");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn stream_to(table: &dyn SyncTable, peer: SocketAddr, key: &Key) -> Result<()> {
    let mut s = TcpStream::connect(peer)
        .await
        .map_err(|e| Error::io(format!("connecting to the sync peer {peer}"), e))?;
    let _ = s.set_nodelay(true);
    let mut c = [0u8; CHALLENGE];
    s.read_exact(&mut c)
        .await
        .map_err(|e| Error::io("reading the sync challenge", e))?;
    let mut changes = table.subscribe();
    let mut seq = 0u64;
    let mut send_all = true;
    loop {
        if send_all {
            send_all = false;
            let all = table.export();
            tracing::info!(%peer, entries = all.len(), "sync: full transfer");
            for e in all {
                seq += 1;
                s.write_all(&frame(key, &c, seq, &e))
                    .await
                    .map_err(|e| Error::io("sending a sync frame", e))?;
            }
        }
        match changes.recv().await {
            Ok(e) => {
                seq += 1;
                s.write_all(&frame(key, &c, seq, &e))
                    .await
                    .map_err(|e| Error::io("sending a sync frame", e))?;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => send_all = true,
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug)]
    struct Table {
        map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
        tx: broadcast::Sender<SyncEntry>,
    }

    impl Table {
        fn new() -> Arc<Self> {
            Arc::new(Table {
                map: Mutex::new(HashMap::new()),
                tx: broadcast::channel(64).0,
            })
        }
        fn set(&self, k: &str, v: &str) {
            let e = SyncEntry {
                key: k.into(),
                value: v.into(),
            };
            self.map
                .lock()
                .expect("map")
                .insert(e.key.clone(), e.value.clone());
            let _ = self.tx.send(e);
        }
        fn get(&self, k: &str) -> Option<Vec<u8>> {
            self.map.lock().expect("map").get(k.as_bytes()).cloned()
        }
    }

    impl SyncTable for Table {
        fn export(&self) -> Vec<SyncEntry> {
            let m = self.map.lock().expect("map");
            m.iter()
                .map(|(k, v)| SyncEntry {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect()
        }
        fn apply(&self, e: SyncEntry) {
            self.map.lock().expect("map").insert(e.key, e.value);
        }
        fn subscribe(&self) -> broadcast::Receiver<SyncEntry> {
            self.tx.subscribe()
        }
    }

    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn free_port() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
    }

    #[tokio::test]
    async fn active_streams_export_and_changes_to_passive() {
        let (a, b) = (Table::new(), Table::new());
        a.set("10.0.0.1", "backend-1");
        let (ra_tx, ra) = watch::channel(Role::Standby);
        let (_rb_tx, rb) = watch::channel(Role::Standby);
        let (pa, pb) = (free_port(), free_port());
        let _sa = StateSync::spawn(a.clone(), ra, pa, pb, Key::new("k"))
            .await
            .expect("a");
        let _sb = StateSync::spawn(b.clone(), rb, pb, pa, Key::new("k"))
            .await
            .expect("b");
        ra_tx.send_replace(Role::Active);
        assert!(
            eventually(|| b.get("10.0.0.1").is_some()).await,
            "full transfer"
        );
        a.set("10.0.0.2", "backend-2");
        assert!(
            eventually(|| b.get("10.0.0.2") == Some(b"backend-2".to_vec())).await,
            "change"
        );
    }

    #[tokio::test]
    async fn wrong_key_changes_nothing() {
        let (a, b) = (Table::new(), Table::new());
        a.set("10.0.0.1", "backend-1");
        let (_ra_tx, ra) = watch::channel(Role::Active);
        let (_rb_tx, rb) = watch::channel(Role::Standby);
        let (pa, pb) = (free_port(), free_port());
        let _sa = StateSync::spawn(a.clone(), ra, pa, pb, Key::new("k"))
            .await
            .expect("a");
        let _sb = StateSync::spawn(b.clone(), rb, pb, pa, Key::new("other"))
            .await
            .expect("b");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(b.get("10.0.0.1"), None);
    }

    #[test]
    fn replayed_and_tampered_frames_are_refused() {
        let k = Key::new("k");
        let e = SyncEntry {
            key: b"c".to_vec(),
            value: b"v".to_vec(),
        };
        let f = frame(&k, b"challenge-one---", 1, &e);
        assert_eq!(unframe(&k, b"challenge-one---", 1, &f[4..]), Ok(e.clone()));
        // Same frame on another connection (another challenge): refused.
        assert!(unframe(&k, b"challenge-two---", 1, &f[4..]).is_err());
        // Out of order: refused.
        assert!(unframe(&k, b"challenge-one---", 2, &f[4..]).is_err());
        let mut t = f.clone();
        let last = t.len() - 33;
        t[last] ^= 1;
        assert!(unframe(&k, b"challenge-one---", 1, &t[4..]).is_err());
        assert!(unframe(&k, b"x", 1, &[0; 10]).is_err());
    }
}
