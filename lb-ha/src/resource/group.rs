//! An ordered group of resources.

use std::fmt;

use tokio::sync::Mutex;

use crate::failover::{BoxFuture, Failover};
use crate::{Error, Result};

/// Resources promoted in order and demoted in reverse; rolls back a failed promote.
///
/// The group remembers how many resources it has promoted, so promoting twice starts
/// nothing new and demoting stops only what might be running. Calls are serialised.
pub struct ResourceGroup {
    resources: Vec<Box<dyn Failover>>,
    /// How many resources (a prefix of `resources`) may be running.
    up: Mutex<usize>,
    name: String,
}

impl fmt::Debug for ResourceGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceGroup")
            .field("name", &self.name)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

impl Default for ResourceGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceGroup {
    /// An empty group.
    pub fn new() -> Self {
        ResourceGroup {
            resources: Vec::new(),
            up: Mutex::new(0),
            name: "group".to_owned(),
        }
    }

    /// Adds a resource at the end (promoted last, demoted first).
    pub fn with(mut self, resource: impl Failover + 'static) -> Self {
        self.push(Box::new(resource));
        self
    }

    /// Adds a boxed resource at the end.
    pub fn push(&mut self, resource: Box<dyn Failover>) {
        self.resources.push(resource);
        self.name = self
            .resources
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(" ");
    }

    /// The resources, in promote order.
    pub fn resources(&self) -> impl Iterator<Item = &dyn Failover> {
        self.resources.iter().map(|r| &**r)
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// True when the group holds no resource.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    async fn promote_all(&self) -> Result<()> {
        let mut up = self.up.lock().await;
        // Promote everything again from the start: each promote is idempotent, and a
        // resource may have been lost behind our back (an address removed by hand).
        for (i, r) in self.resources.iter().enumerate() {
            tracing::info!(resource = r.name(), "promoting");
            *up = (*up).max(i + 1);
            if let Err(e) = r.promote().await {
                tracing::error!(resource = r.name(), error = %e, "promote failed, rolling back");
                // Roll back in reverse, the failed resource included.
                for r in self.resources[..=i].iter().rev() {
                    if let Err(e) = r.demote().await {
                        tracing::error!(resource = r.name(), error = %e, "rollback demote failed");
                    }
                }
                *up = 0;
                return Err(match e {
                    e @ Error::Promote { .. } => e,
                    other => Error::Promote {
                        name: r.name().to_owned(),
                        message: other.to_string(),
                    },
                });
            }
        }
        Ok(())
    }

    async fn demote_all(&self) -> Result<()> {
        let mut up = self.up.lock().await;
        let mut first_err = None;
        // Demote everything in reverse, even what we believe is down: demote is
        // idempotent and this cleans up after a crash of a previous run.
        for r in self.resources.iter().rev() {
            tracing::info!(resource = r.name(), "demoting");
            if let Err(e) = r.demote().await {
                tracing::error!(resource = r.name(), error = %e, "demote failed");
                first_err.get_or_insert(e);
            }
        }
        *up = 0;
        first_err.map_or(Ok(()), Err)
    }
}

impl Failover for ResourceGroup {
    fn name(&self) -> &str {
        &self.name
    }

    fn promote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.promote_all())
    }

    fn demote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.demote_all())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};

    use super::*;
    use crate::resource::FnResource;

    fn recorder(log: &Arc<StdMutex<Vec<String>>>, name: &str, fail: bool) -> FnResource {
        let (l1, l2) = (log.clone(), log.clone());
        let (n1, n2) = (name.to_owned(), name.to_owned());
        FnResource::new(
            name,
            move || {
                let l = l1.clone();
                let n = n1.clone();
                async move {
                    l.lock().expect("log").push(format!("+{n}"));
                    if fail {
                        Err(Error::Invalid(format!("{n} broken")))
                    } else {
                        Ok(())
                    }
                }
            },
            move || {
                let l = l2.clone();
                let n = n2.clone();
                async move {
                    l.lock().expect("log").push(format!("-{n}"));
                    Ok(())
                }
            },
        )
    }

    #[tokio::test]
    async fn promotes_in_order_and_demotes_in_reverse() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let g = ResourceGroup::new()
            .with(recorder(&log, "ip", false))
            .with(recorder(&log, "pen", false))
            .with(recorder(&log, "httpd", false));
        assert_eq!(g.name(), "ip pen httpd");
        g.promote().await.expect("promote");
        g.demote().await.expect("demote");
        assert_eq!(
            *log.lock().expect("log"),
            ["+ip", "+pen", "+httpd", "-httpd", "-pen", "-ip"]
        );
    }

    #[tokio::test]
    async fn failed_promote_rolls_back_in_reverse() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let g = ResourceGroup::new()
            .with(recorder(&log, "ip", false))
            .with(recorder(&log, "pen", true))
            .with(recorder(&log, "httpd", false));
        let err = g.promote().await.expect_err("pen fails");
        assert!(err.to_string().contains("pen"), "{err}");
        assert_eq!(*log.lock().expect("log"), ["+ip", "+pen", "-ip"]);
    }

    #[tokio::test]
    async fn fn_resources_are_idempotent() {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let g = ResourceGroup::new().with(recorder(&log, "ip", false));
        g.promote().await.expect("promote");
        g.promote().await.expect("promote twice");
        g.demote().await.expect("demote");
        g.demote().await.expect("demote twice");
        assert_eq!(*log.lock().expect("log"), ["+ip", "-ip"]);
    }
}
