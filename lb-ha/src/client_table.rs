//! [`SyncTable`] for lb-core's pen-style client table.
//!
//! Wire value of an entry: the backend id (`u32`, big endian) then the entry's age in
//! milliseconds (`u64`, big endian); the key is the table's key as is. Backend ids mean
//! the same on both nodes only when both balancers are configured with the same backends
//! in the same order (the same command line or configuration file).

use std::sync::Arc;
use std::time::Duration;

use lb_core::BackendId;
use lb_core::persistence::{ClientEntry, ClientTable};
use tokio::sync::broadcast;

use crate::sync::{SyncEntry, SyncTable};

/// A [`ClientTable`] as a [`SyncTable`]: pass it to
/// [`HaArgs::start_with`](crate::HaArgs::start_with) so sticky clients keep their backend
/// after a failover.
#[derive(Debug, Clone)]
pub struct ClientTableSync {
    table: Arc<ClientTable>,
}

impl ClientTableSync {
    /// Syncs `table`.
    pub fn new(table: Arc<ClientTable>) -> Self {
        ClientTableSync { table }
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
        self.table.export().iter().map(encode).collect()
    }

    fn apply(&self, entry: SyncEntry) {
        match decode(entry) {
            Some(e) => self.table.import([e]),
            None => tracing::warn!("sync: a client-table entry with a malformed value was ignored"),
        }
    }

    /// Forwards the table's changes, encoded; when the forwarder falls behind, it sends
    /// the whole table again. Needs a tokio runtime.
    fn subscribe(&self) -> broadcast::Receiver<SyncEntry> {
        let (tx, rx) = broadcast::channel(1024);
        let mut changes = self.table.subscribe();
        let table = self.table.clone();
        tokio::spawn(async move {
            loop {
                let batch = match changes.recv().await {
                    Ok(e) => vec![e],
                    Err(broadcast::error::RecvError::Lagged(_)) => table.export(),
                    Err(broadcast::error::RecvError::Closed) => return,
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
}
