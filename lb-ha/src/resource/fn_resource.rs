//! A resource made of two async closures.

use std::fmt;
use std::future::Future;

use tokio::sync::Mutex;

use crate::Result;
use crate::failover::{BoxFuture, Failover};

type Action = Box<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// A resource whose promote and demote are closures returning futures.
///
/// The resource tracks whether it is up, so each closure runs only on a real change: a
/// second promote (or a demote of a resource that is down) does nothing.
///
/// ```
/// use lb_ha::resource::FnResource;
/// let r = FnResource::new(
///     "accept",
///     || async { println!("now active"); Ok(()) },
///     || async { println!("now passive"); Ok(()) },
/// );
/// # let _ = r;
/// ```
pub struct FnResource {
    name: String,
    promote: Action,
    demote: Action,
    up: Mutex<bool>,
}

impl fmt::Debug for FnResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnResource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FnResource {
    /// A resource named `name` running `promote` when taken over and `demote` when given up.
    pub fn new<P, PF, D, DF>(name: impl Into<String>, promote: P, demote: D) -> Self
    where
        P: Fn() -> PF + Send + Sync + 'static,
        PF: Future<Output = Result<()>> + Send + 'static,
        D: Fn() -> DF + Send + Sync + 'static,
        DF: Future<Output = Result<()>> + Send + 'static,
    {
        FnResource {
            name: name.into(),
            promote: Box::new(move || Box::pin(promote())),
            demote: Box::new(move || Box::pin(demote())),
            up: Mutex::new(false),
        }
    }
}

impl Failover for FnResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn promote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut up = self.up.lock().await;
            if !*up {
                (self.promote)().await?;
                *up = true;
            }
            Ok(())
        })
    }

    fn demote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut up = self.up.lock().await;
            if *up {
                // Considered down even if the closure fails: a retry would not help the
                // closure and the group reports the error.
                *up = false;
                (self.demote)().await?;
            }
            Ok(())
        })
    }
}
