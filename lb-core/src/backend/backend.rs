//! The configuration of one backend.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Address;

/// Identifies a backend within one [`Balancer`](crate::Balancer) for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackendId(pub u32);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The part a backend plays in selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes traffic in its `lbset` tier.
    #[default]
    Normal,
    /// HAProxy's `backup`: used only when no normal backend (of any lbset) is usable.
    Backup,
    /// Apache's hot standby (`+H`): used only when every normal member of its lbset is
    /// unusable.
    HotStandby,
    /// pen's emergency server (`-e`): the last resort after everything else failed.
    Emergency,
}

/// The tier a backend belongs to, ordered as a pick goes through them: each `lbset` in
/// ascending order, its normal members before its hot standbys; then every backup, in one
/// tier; the emergency backends last, apart. Backends of an earlier tier are used while any
/// is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tier((u8, u32, u8));

impl Tier {
    /// The tier of the backups.
    pub(crate) fn is_backup(self) -> bool {
        self.0.0 == 1
    }
}

/// A backend's configuration: where it is and how it takes part in balancing.
///
/// Built with [`Backend::new`] and the setters; a balancer takes it by value and keeps live
/// state (connections, bytes, health) beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    address: Address,
    weight: u32,
    max_conns: Option<u32>,
    hard_conns: Option<u32>,
    priority: u32,
    lbset: u32,
    role: Role,
    route: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Backend {
    /// A normal backend at `address` with weight 1, no limits, priority 0, lbset 0.
    pub fn new(address: impl Into<Address>) -> Self {
        Backend {
            address: address.into(),
            weight: 1,
            max_conns: None,
            hard_conns: None,
            priority: 0,
            lbset: 0,
            role: Role::Normal,
            route: None,
            labels: BTreeMap::new(),
        }
    }

    /// Sets the weight; 0 makes the backend quiescent (only sticky clients reach it).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the soft connection limit (pen's `maxc`): no new clients at or above it.
    pub fn with_max_conns(mut self, max: u32) -> Self {
        self.max_conns = Some(max);
        self
    }

    /// Sets the hard connection limit (pen's `hard`): returning sticky clients are still
    /// accepted above the soft limit, up to this one.
    pub fn with_hard_conns(mut self, hard: u32) -> Self {
        self.hard_conns = Some(hard);
        self
    }

    /// Sets the priority (lower is preferred; pen's `prio`, IPVS `fo`).
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the Apache `lbset` tier: lower sets are used first.
    pub fn with_lbset(mut self, lbset: u32) -> Self {
        self.lbset = lbset;
        self
    }

    /// Sets the role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Sets the sticky route name (Apache's `route=`).
    pub fn with_route(mut self, route: impl Into<String>) -> Self {
        self.route = Some(route.into());
        self
    }

    /// Adds a free-form label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Replaces the address.
    pub fn set_address(&mut self, address: Address) {
        self.address = address;
    }

    /// Replaces the weight.
    pub fn set_weight(&mut self, weight: u32) {
        self.weight = weight;
    }

    /// Replaces the soft limit (`None`: unlimited).
    pub fn set_max_conns(&mut self, max: Option<u32>) {
        self.max_conns = max;
    }

    /// Replaces the hard limit (`None`: same as the soft limit).
    pub fn set_hard_conns(&mut self, hard: Option<u32>) {
        self.hard_conns = hard;
    }

    /// Replaces the priority.
    pub fn set_priority(&mut self, priority: u32) {
        self.priority = priority;
    }

    /// Replaces the lbset.
    pub fn set_lbset(&mut self, lbset: u32) {
        self.lbset = lbset;
    }

    /// Replaces the role.
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    /// Replaces the route name.
    pub fn set_route(&mut self, route: Option<String>) {
        self.route = route;
    }

    /// The labels, mutable.
    pub fn labels_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.labels
    }

    /// The address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The soft connection limit.
    pub fn max_conns(&self) -> Option<u32> {
        self.max_conns
    }

    /// The hard connection limit for returning clients (the soft limit when unset).
    pub fn hard_conns(&self) -> Option<u32> {
        self.hard_conns.or(self.max_conns)
    }

    /// The priority.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// The lbset.
    pub fn lbset(&self) -> u32 {
        self.lbset
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where this backend stands in the order a pick follows (see [`Tier`]).
    pub fn tier(&self) -> Tier {
        Tier(match self.role {
            Role::Normal => (0, self.lbset, 0),
            Role::HotStandby => (0, self.lbset, 1),
            // One tier for every backup, whatever its lbset.
            Role::Backup => (1, 0, 0),
            Role::Emergency => (2, 0, 0),
        })
    }

    /// The route name.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
}
