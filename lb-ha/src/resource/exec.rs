//! A resource script, run as Heartbeat v1 runs `haresources` entries.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::failover::{BoxFuture, Failover};
use crate::{Error, Result};

/// A script run as `SCRIPT [ARGS...] start`, `... stop` and `... status`.
///
/// This is Heartbeat v1's resource-script convention (LSB init scripts): `start` and
/// `stop` must be idempotent and exit 0 on success; `status` exits 0 when the service
/// runs. Heartbeat's `name::arg1::arg2` form passes `arg1 arg2` before the action.
///
/// The script's standard output and error go to the node's own, and standard input is
/// closed, so a script that leaves a daemon behind does not hang the node. A script that
/// runs longer than its timeout (60 s by default) is killed and counts as failed.
#[derive(Debug, Clone)]
pub struct ExecResource {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    timeout: Duration,
}

impl ExecResource {
    /// A resource running `program` (a path) with `args` before the action.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Self {
        let program = program.into();
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut name = program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for a in &args {
            name.push_str("::");
            name.push_str(&a.to_string_lossy());
        }
        ExecResource {
            name,
            program,
            args,
            timeout: Duration::from_secs(60),
        }
    }

    /// Sets how long one action may run before it is killed and counts as failed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs `status`: `Ok(true)` when the script exits 0, `Ok(false)` otherwise.
    pub async fn status(&self) -> Result<bool> {
        self.run("status").await.map(|code| code == Some(0))
    }

    async fn run(&self, action: &str) -> Result<Option<i32>> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg(action)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("cannot run {} {action}", self.program.display()), e))?;
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => Ok(status.code()),
            Ok(Err(e)) => Err(Error::io(
                format!("waiting for {} {action}", self.program.display()),
                e,
            )),
            Err(_) => {
                // kill_on_drop would also do it; kill and reap here so no zombie is left.
                let _ = child.kill().await;
                Err(Error::io(
                    format!("{} {action}", self.program.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("timed out after {:?}", self.timeout),
                    ),
                ))
            }
        }
    }
}

impl Failover for ExecResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn promote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.run("start").await {
                Ok(Some(0)) => Ok(()),
                Ok(code) => Err(Error::Promote {
                    name: self.name.clone(),
                    message: format!("`start` exited with {}", describe(code)),
                }),
                Err(e) => Err(Error::Promote {
                    name: self.name.clone(),
                    message: e.to_string(),
                }),
            }
        })
    }

    fn demote(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.run("stop").await {
                Ok(Some(0)) => Ok(()),
                Ok(code) => Err(Error::Demote {
                    name: self.name.clone(),
                    message: format!("`stop` exited with {}", describe(code)),
                }),
                Err(e) => Err(Error::Demote {
                    name: self.name.clone(),
                    message: e.to_string(),
                }),
            }
        })
    }
}

fn describe(code: Option<i32>) -> String {
    code.map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"))
}

/// Finds a resource script: a name with a `/` is taken as a path; otherwise each of
/// `dirs` (such as `/etc/ha.d/resource.d`, `/etc/init.d`) is searched, then `PATH`.
pub fn find_script(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::ScriptNotFound(name.to_owned()))
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| Error::ScriptNotFound(name.to_owned()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-ha-exec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[tokio::test]
    async fn runs_start_stop_status_with_args() {
        let d = tmpdir("run");
        let log = d.join("log");
        let s = script(
            &d,
            "svc",
            &format!(
                "echo \"$@\" >> {log}\ncase \"$2\" in status) test -e {up};; start) touch {up};; stop) rm -f {up};; esac",
                log = log.display(),
                up = d.join("up").display()
            ),
        );
        let found = find_script("svc", std::slice::from_ref(&d)).expect("found in dir");
        assert_eq!(found, s);
        let r = ExecResource::new(found, ["eth0"]);
        assert_eq!(r.name(), "svc::eth0");
        assert!(!r.status().await.expect("status"));
        r.promote().await.expect("start");
        assert!(r.status().await.expect("status"));
        r.demote().await.expect("stop");
        assert!(!r.status().await.expect("status"));
        let text = std::fs::read_to_string(&log).expect("log");
        assert_eq!(
            text,
            "eth0 status\neth0 start\neth0 status\neth0 stop\neth0 status\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn failing_start_is_an_error_naming_the_script() {
        let d = tmpdir("fail");
        let s = script(&d, "broken", "exit 3");
        let err = ExecResource::new(s, Vec::<String>::new())
            .promote()
            .await
            .expect_err("exit 3");
        assert!(
            err.to_string().contains("broken") && err.to_string().contains("status 3"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn slow_script_times_out() {
        let d = tmpdir("slow");
        let s = script(&d, "slow", "exec sleep 30");
        let err = ExecResource::new(s, Vec::<String>::new())
            .with_timeout(Duration::from_millis(200))
            .promote()
            .await
            .expect_err("timeout");
        assert!(err.to_string().contains("timed out"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_script_is_named() {
        let err = find_script("no-such-script-lb-ha", &[]).expect_err("missing");
        assert!(err.to_string().contains("no-such-script-lb-ha"));
    }
}
