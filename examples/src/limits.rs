//! Process limits the binaries set for themselves at start.

/// Raises the soft limit on open file descriptors to the hard one, as HAProxy does at start
/// (nginx has `worker_rlimit_nofile` for it): a balancer needs two descriptors per proxied
/// connection and keeps idle ones to its backends, and the soft limit most shells and
/// service managers give (1024) is soon reached. Returns the limit now in force, or why it
/// could not be read or raised.
pub fn raise_nofile_limit() -> Result<u64, String> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read the open-files limit: {e}"))?;
    if soft >= hard {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| format!("cannot raise the open-files limit from {soft} to {hard}: {e}"))?;
    Ok(hard)
}
