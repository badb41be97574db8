//! [`SyncTable`] for lb-core's pen-style client table.
//!
//! Wire value of an entry: the backend id (`u32`, big endian) then the entry's age in
//! milliseconds (`u64`, big endian); the key is the table's key as is. Backend ids mean
//! the same on both nodes only when both balancers are configured with the same backends
//! in the same order (the same command line or configuration file).
//!
//! A program that replaces its table at run time (pen's `clients_max` and `tracking`
//! commands build a table of the new size and carry the entries over) hands its tables
//! over a `watch` channel with [`ClientTableSync::follow`]: the sync then exports,
//! applies and streams whichever table is current, and sends the whole new table when
//! one replaces another.

use std::sync::Arc;
use std::time::Duration;

use lb_core::BackendId;
use lb_core::persistence::{ClientEntry, ClientTable};
use tokio::sync::{broadcast, watch};

use crate::sync::{SyncEntry, SyncTable};

/// A [`ClientTable`] as a [`SyncTable`]: pass it to
/// [`HaArgs::start_with`](crate::HaArgs::start_with) so sticky clients keep their backend
/// after a failover.
#[derive(Debug, Clone)]
pub struct ClientTableSync {
    tables: watch::Receiver<Arc<ClientTable>>,
}

impl ClientTableSync {
    /// Syncs `table`, which is never replaced.
    pub fn new(table: Arc<ClientTable>) -> Self {
        // The sender goes at once: the receiver keeps the table and never sees a change.
        ClientTableSync {
            tables: watch::channel(table).1,
        }
    }

    /// Syncs whichever table `tables` holds: entries received go into the current
    /// table, and a table that replaces another is sent whole to the peer, then its
    /// changes.
    pub fn follow(tables: watch::Receiver<Arc<ClientTable>>) -> Self {
        ClientTableSync { tables }
    }

    fn current(&self) -> Arc<ClientTable> {
        self.tables.borrow().clone()
    }
}

fn encode(e: &ClientEntry) -> SyncEntry {
    let mut value = Vec::with_capacity(12);
    value.extend_from_slice(&e.backend.0.to_be_bytes());
    let age = u64::try_from(e.age.as_millis()).unwrap_or(u64::MAX);
    value.extend_from_slice(&age.to_be_bytes());
    SyncEntry {
        key: e.key.clone(),
        value,
    }
}

fn decode(e: SyncEntry) -> Option<ClientEntry> {
    let v: &[u8; 12] = e.value.as_slice().try_into().ok()?;
    let backend = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let mut age = [0u8; 8];
    age.copy_from_slice(&v[4..]);
    Some(ClientEntry {
        key: e.key,
        backend: BackendId(backend),
        age: Duration::from_millis(u64::from_be_bytes(age)),
    })
}

impl SyncTable for ClientTableSync {
    fn export(&self) -> Vec<SyncEntry> {
        self.current().export().iter().map(encode).collect()
    }

    fn apply(&self, entry: SyncEntry) {
        match decode(entry) {
            Some(e) => self.current().import([e]),
            None => tracing::warn!("sync: a client-table entry with a malformed value was ignored"),
        }
    }

    /// Forwards the current table's changes, encoded; when the forwarder falls behind,
    /// or another table replaces the current one, it sends the whole table. Needs a tokio
    /// runtime.
    fn subscribe(&self) -> broadcast::Receiver<SyncEntry> {
        let (tx, rx) = broadcast::channel(1024);
        let mut tables = self.tables.clone();
        let mut table = tables.borrow_and_update().clone();
        let mut changes = table.subscribe();
        let mut following = true;
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    r = changes.recv() => match r {
                        Ok(e) => vec![e],
                        Err(broadcast::error::RecvError::Lagged(_)) => table.export(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    r = tables.changed(), if following => match r {
                        Ok(()) => {
                            table = tables.borrow_and_update().clone();
                            changes = table.subscribe();
                            table.export()
                        }
                        // Nobody replaces the table any more: keep the last one.
                        Err(_) => {
                            following = false;
                            continue;
                        }
                    },
                };
                for e in &batch {
                    if tx.send(encode(e)).is_err() {
                        return; // nobody listens any more
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use lb_core::persistence::{ClientTableConfig, Persistence};

    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = ClientEntry {
            key: vec![198, 18, 0, 1],
            backend: BackendId(7),
            age: Duration::from_millis(1234),
        };
        assert_eq!(decode(encode(&e)), Some(e));
        assert_eq!(
            decode(SyncEntry {
                key: vec![1],
                value: vec![0; 3]
            }),
            None
        );
    }

    #[tokio::test]
    async fn export_apply_and_changes() {
        let a = Arc::new(ClientTable::new(ClientTableConfig::default()).expect("table"));
        let b = Arc::new(ClientTable::new(ClientTableConfig::default()).expect("table"));
        let (sa, sb) = (
            ClientTableSync::new(a.clone()),
            ClientTableSync::new(b.clone()),
        );
        a.record(&[198, 18, 0, 1], BackendId(1));
        for e in sa.export() {
            sb.apply(e);
        }
        assert_eq!(b.lookup(&[198, 18, 0, 1]), Some(BackendId(1)));
        let mut rx = sa.subscribe();
        tokio::task::yield_now().await;
        a.record(&[198, 18, 0, 2], BackendId(2));
        let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("change in time")
            .expect("change");
        sb.apply(e);
        assert_eq!(b.lookup(&[198, 18, 0, 2]), Some(BackendId(2)));
    }

    async fn next(changes: &mut broadcast::Receiver<SyncEntry>) -> ClientEntry {
        let e = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("in time")
            .expect("entry");
        decode(e).expect("well formed")
    }

    #[tokio::test]
    async fn a_followed_table_replaced_is_sent_whole_then_its_changes() {
        let first = Arc::new(ClientTable::new(ClientTableConfig::default()).expect("table"));
        let (tx, rx) = watch::channel(first.clone());
        let sync = ClientTableSync::follow(rx);
        let mut changes = sync.subscribe();
        tokio::task::yield_now().await;
        first.record(&[198, 18, 0, 1], BackendId(1));
        let e = next(&mut changes).await;
        assert_eq!((e.key, e.backend), (vec![198, 18, 0, 1], BackendId(1)));

        // pen's `clients_max`: a new table with the old entries replaces the first.
        let second =
            Arc::new(ClientTable::new(ClientTableConfig::default().with_slots(10)).expect("table"));
        second.import(first.export());
        second.record(&[198, 18, 0, 2], BackendId(2));
        tx.send_replace(second.clone());
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(next(&mut changes).await.key);
        }
        got.sort();
        assert_eq!(got, [vec![198, 18, 0, 1], vec![198, 18, 0, 2]]);
        // The new table's changes follow; the old table's do not.
        first.record(&[198, 18, 0, 9], BackendId(1));
        second.record(&[198, 18, 0, 3], BackendId(1));
        assert_eq!(next(&mut changes).await.key, vec![198, 18, 0, 3]);

        // Entries received go into the current table.
        sync.apply(encode(&ClientEntry {
            key: vec![198, 18, 0, 4],
            backend: BackendId(2),
            age: Duration::ZERO,
        }));
        assert_eq!(second.lookup(&[198, 18, 0, 4]), Some(BackendId(2)));
        assert_eq!(first.lookup(&[198, 18, 0, 4]), None);
        assert_eq!(sync.export().len(), 4);
    }
}
