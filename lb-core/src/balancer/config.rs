//! The selection pipeline's settings.

use std::sync::Arc;

use crate::persistence::Persistence;

/// How a balancer runs its selection pipeline. Change it at run time with
/// [`Balancer::update_config`](crate::Balancer::update_config).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// The client table (or any persistence); `None`: no persistence.
    pub persistence: Option<Arc<dyn Persistence>>,
    /// Skip persistence lookups and records (pen's `-r`).
    pub bypass_persistence: bool,
    /// A sticky client whose backend cannot take it fails rather than moving (pen's `-s`,
    /// Apache's `nofailover` for routes).
    pub stubborn: bool,
    /// How many backends one request may try before the emergency backend; 0 means every
    /// member once. (Apache's `maxattempts` counts failovers: it is this minus one.)
    pub max_attempts: usize,
    /// Use every usable backup member, not only the first (HAProxy `allbackups`).
    pub all_backups: bool,
    /// When every member is in error, try them all again rather than fail (Apache
    /// `forcerecovery`, on by default).
    pub force_recovery: bool,
    /// Envoy's panic threshold, as a fraction 0.0..=1.0: when fewer than this share of a
    /// tier's members are usable, balance across all its ready and up members, ignoring
    /// passive error states. The share is of the members' states: the members one request
    /// already tried (and lb-http's members at their `max`, passed over) count as usable.
    /// `None`: off.
    pub panic_threshold: Option<f32>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            persistence: None,
            bypass_persistence: false,
            stubborn: false,
            max_attempts: 0,
            all_backups: false,
            force_recovery: true,
            panic_threshold: None,
        }
    }
}
