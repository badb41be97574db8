//! Helpers for the schedulers' tests: balancers of numbered backends, pick counting.

use std::net::SocketAddr;

use super::Scheduler;
use crate::{Backend, Balancer, PickContext};

/// The address of backend `i` (port 10000 + i).
pub(crate) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
}

/// A balancer with one backend per weight, backend `i` at [`addr`]`(i)`.
pub(crate) fn balancer<S: Scheduler>(s: S, weights: &[u32]) -> Balancer<S> {
    Balancer::builder()
        .scheduler(s)
        .backends(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Backend::new(addr(i)).with_weight(w)),
        )
        .build()
        .expect("valid test backends")
}

/// The index (port - 10000) of a lease's backend.
pub(crate) fn index(lease: &crate::Lease) -> usize {
    usize::from(lease.backend().address().port().expect("socket address")) - 10_000
}

/// `n` picks with an empty context, each lease dropped at once.
pub(crate) fn picks<S: Scheduler>(lb: &Balancer<S>, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| index(&lb.pick(&PickContext::new()).expect("a backend")))
        .collect()
}

/// How many of `n` picks (leases dropped at once) went to each backend.
pub(crate) fn count_picks<S: Scheduler>(lb: &Balancer<S>, n: usize) -> Vec<usize> {
    let mut counts = vec![0; lb.members().len()];
    for i in picks(lb, n) {
        counts[i] += 1;
    }
    counts
}

/// The pick for a hash key.
pub(crate) fn pick_key<S: Scheduler>(lb: &Balancer<S>, key: &[u8]) -> usize {
    index(
        &lb.pick(&PickContext::new().with_key(key))
            .expect("a backend"),
    )
}

/// Asserts that `counts` are proportional to `weights` within `tol` (a fraction of each
/// expected count).
pub(crate) fn assert_proportional(counts: &[usize], weights: &[u32], tol: f64) {
    let total: usize = counts.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let expected = total as f64 * f64::from(w) / f64::from(wsum);
        let err = (c as f64 - expected).abs();
        assert!(
            err <= tol * expected.max(1.0),
            "backend {i}: {c} picks, expected {expected:.0} ± {:.0}% ({counts:?} for {weights:?})",
            tol * 100.0
        );
    }
}
