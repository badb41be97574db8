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
//!
//! The changes to every running balancer are made in lb-core edits and committed together
//! once the whole file is known good: a refused reload changes nothing, and a manager action
//! waits for the commit rather than landing in the middle of the reload.

use lb_core::{BackendId, Balancer, Edit};
use lb_http::member::{LABEL_URL, MemberSpec, StatusFlags};

use super::Plan;
use super::config::{BalancerConf, resolve_lbmethod};

/// The member of `e` configured with `url`.
fn member_by_url(e: &Edit<'_, lb_core::scheduler::AnyScheduler>, url: &str) -> Option<BackendId> {
    e.members()
        .iter()
        .find(|m| m.backend().labels().get(LABEL_URL).map(String::as_str) == Some(url))
        .map(|m| m.id())
}

/// The changes that turn the running balancer `b` (built from `old_conf`, then changed
/// from the manager) into what `new` says, in an edit of `b`: nothing changes until the
/// caller commits it, and the manager's changes wait until then. Members the manager added
/// count: a file line may not take their address.
pub(crate) fn edit<'a>(
    b: &'a Balancer,
    old_conf: &BalancerConf,
    new: &BalancerConf,
) -> Result<Edit<'a, lb_core::scheduler::AnyScheduler>, String> {
    let mut e = b.edit();
    apply(&mut e, old_conf, new)?;
    Ok(e)
}

/// Applies the difference between `old_conf` and `new` to `e`.
fn apply(
    e: &mut Edit<'_, lb_core::scheduler::AnyScheduler>,
    old_conf: &BalancerConf,
    new: &BalancerConf,
) -> Result<(), String> {
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
    let member_ctx =
        |e: &Edit<'_, _>, spec: &MemberSpec, address: &lb_core::Address, err: lb_core::Error| {
            let holder = e
                .find(address)
                .and_then(|m| m.backend().labels().get(LABEL_URL).cloned())
                .filter(|url| *url != spec.url);
            match holder {
                Some(url) => format!(
                    "balancer {}: member {}: {err} (member {url} has it)",
                    new.name, spec.url
                ),
                None => format!("balancer {}: member {}: {err}", new.name, spec.url),
            }
        };

    if let Some(s) = scheduler {
        e.set_scheduler(s);
    }
    e.update_config(|p| {
        p.max_attempts = new.max_attempts();
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
        if let Some(id) = member_by_url(e, &gone.url) {
            e.remove(id).map_err(ctx)?;
        }
    }
    for (spec, backend) in wanted {
        let before: Option<&MemberSpec> = old_conf.members.iter().find(|o| o.url == spec.url);
        let address = backend.address().clone();
        match (member_by_url(e, &spec.url), before) {
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
                    e.get(id).map_or(spec.status, |m| StatusFlags::of(m))
                };
                if let Err(err) = e.update(id, |be| *be = backend) {
                    return Err(member_ctx(e, spec, &address, err));
                }
                flags.set_in(e, id).map_err(ctx)?;
            }
            // New in the file (or removed from the manager since): added.
            (None, _) => {
                let id = match e.add(backend) {
                    Ok(id) => id,
                    Err(err) => return Err(member_ctx(e, spec, &address, err)),
                };
                spec.status.set_in(e, id).map_err(ctx)?;
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
