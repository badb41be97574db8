//! A reload that keeps the running state (Apache's `BalancerPersist On`).
//!
//! A balancer whose name is in both the running and the new configuration is kept: the
//! difference between the two files is applied to it, member by member (members are known by
//! their URL), and everything else stays as it is: the counters, the health, the time in
//! error, and what the balancer manager changed on members whose lines did not change (a
//! disabled member stays disabled, a new loadfactor stays). On a changed line the file's
//! settings apply, but the status flags the manager set (D, S, N, H, I) stay unless the
//! line's `status` changed. A member added from the manager
//! stays until a file names it; a member the old file named and the new one does not leaves
//! (its requests in flight finish). A balancer that is new in the file is built fresh; one
//! that is gone leaves with its routes.

use lb_core::{BackendId, Balancer};
use lb_http::member::{LABEL_URL, MemberSpec, StatusFlags};

use super::config::{BalancerConf, resolve_lbmethod};
use super::{Plan, build_balancer};

/// The member of `b` configured with `url`.
fn member_by_url(b: &Balancer, url: &str) -> Option<BackendId> {
    b.members()
        .iter()
        .find(|m| m.backend().labels().get(LABEL_URL).map(String::as_str) == Some(url))
        .map(|m| m.id())
}

/// The balancer for `new`: the running one of `old` with the file's changes applied when
/// there is one (`old_conf` is what it was built from), else a fresh one. Call [`check`]
/// first: a change that fails here may have left the running balancer half-changed.
pub(crate) fn balancer_for(
    old: Option<(&Balancer, &BalancerConf)>,
    new: &BalancerConf,
) -> Result<Balancer, String> {
    let Some((b, old_conf)) = old else {
        return build_balancer(new);
    };
    apply(b, old_conf, new)?;
    Ok(b.clone())
}

/// Whether `new` can be applied to the running balancer `b` (built from `old_conf`, then
/// changed from the manager): the same steps as [`balancer_for`], on a scratch balancer
/// holding copies of `b`'s members, so that an error leaves `b` as it is. Members the
/// manager added count: a file line may not take their address.
pub(crate) fn check(
    b: &Balancer,
    old_conf: &BalancerConf,
    new: &BalancerConf,
) -> Result<(), String> {
    let scratch = Balancer::builder()
        .backends(b.members().iter().map(|m| m.backend().clone()))
        .config(b.config())
        .build()
        .map_err(|e| format!("balancer {}: {e}", new.name))?;
    apply(&scratch, old_conf, new)
}

/// Applies the difference between `old_conf` and `new` to `b`.
fn apply(b: &Balancer, old_conf: &BalancerConf, new: &BalancerConf) -> Result<(), String> {
    let scheduler = if new.lbmethod == old_conf.lbmethod {
        None
    } else {
        Some(resolve_lbmethod(&new.lbmethod)?.0)
    };
    let mut wanted = Vec::with_capacity(new.members.len());
    for spec in &new.members {
        let backend = spec
            .to_backend()
            .map_err(|e| format!("balancer {}: member {}: {e}", new.name, spec.url))?;
        wanted.push((spec, backend));
    }
    let ctx = |e: lb_core::Error| format!("balancer {}: {e}", new.name);
    // A member's address may already be another member's, one the manager added.
    let member_ctx = |spec: &MemberSpec, address: &lb_core::Address, e: lb_core::Error| {
        let holder = b
            .find(address)
            .and_then(|m| m.backend().labels().get(LABEL_URL).cloned())
            .filter(|url| *url != spec.url);
        match holder {
            Some(url) => format!(
                "balancer {}: member {}: {e} (member {url} has it)",
                new.name, spec.url
            ),
            None => format!("balancer {}: member {}: {e}", new.name, spec.url),
        }
    };

    if let Some(s) = scheduler {
        b.set_scheduler(s);
    }
    b.update_config(|p| {
        p.max_attempts = new.maxattempts;
        p.stubborn = new.nofailover;
        p.force_recovery = new.forcerecovery;
    })
    .map_err(ctx)?;
    // Members the old file named and the new one does not leave first, so that an address
    // can move from one URL to another.
    for gone in old_conf
        .members
        .iter()
        .filter(|o| !new.members.iter().any(|n| n.url == o.url))
    {
        if let Some(id) = member_by_url(b, &gone.url) {
            b.remove(id).map_err(ctx)?;
        }
    }
    for (spec, backend) in wanted {
        let before: Option<&MemberSpec> = old_conf.members.iter().find(|o| o.url == spec.url);
        let address = backend.address().clone();
        match (member_by_url(b, &spec.url), before) {
            // The same line as before: whatever the manager did to it stays.
            (Some(_), Some(before)) if before == spec => {}
            // A changed line, or a member the manager added that the file now names. The
            // flags are the file's when its status changed (or it names the member for the
            // first time), else they stay as the manager left them: the new backend has
            // the file's stopped mark and role, which would turn a stopped member into a
            // disabled one and drop a hot standby.
            (Some(id), before) => {
                let flags = if before.is_none_or(|o| o.status != spec.status) {
                    spec.status
                } else {
                    b.get(id).map_or(spec.status, |m| StatusFlags::of(&m))
                };
                b.update(id, |be| *be = backend)
                    .map_err(|e| member_ctx(spec, &address, e))?;
                flags.set_on(b, id).map_err(ctx)?;
            }
            // New in the file (or removed from the manager since): added.
            (None, _) => {
                let id = b.add(backend).map_err(|e| member_ctx(spec, &address, e))?;
                spec.status.set_on(b, id).map_err(ctx)?;
            }
        }
    }
    Ok(())
}

/// The running balancer and configuration of the balancer named `name` in `plan`.
pub(crate) fn running<'a>(plan: &'a Plan, name: &str) -> Option<(&'a Balancer, &'a BalancerConf)> {
    plan.sites
        .iter()
        .zip(&plan.confs)
        .find(|(_, c)| c.name == name)
        .map(|((_, b, _), c)| (b, c))
}
