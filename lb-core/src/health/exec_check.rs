//! A check that runs a program: keepalived's `MISC_CHECK`, Piranha's monitoring scripts.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{CheckError, CheckReport, HealthCheck};
use crate::backend::{Address, Backend};

/// Runs a program per check: exit status 0 is up, anything else down.
///
/// The program is run as
///
/// ```text
/// PROGRAM [ARGS...] HOST PORT
/// ```
///
/// where `HOST` is the backend's IP address (IPv6 without brackets), host name or Unix
/// socket path, and `PORT` its port (an empty argument for a Unix socket). It also gets
/// these environment variables, on top of lb's own environment and any set with
/// [`env`](Self::env):
///
/// | variable | value |
/// |---|---|
/// | `LB_BACKEND_ADDRESS` | the address as written: `192.0.2.1:80`, `[2001:db8::1]:80`, `app.example:80`, `unix:/run/app.sock` |
/// | `LB_BACKEND_HOST` | as `HOST` above |
/// | `LB_BACKEND_PORT` | as `PORT` above (unset for a Unix socket) |
/// | `LB_BACKEND_WEIGHT` | the backend's current weight |
/// | `LB_BACKEND_ROUTE` | its route name (unset when it has none) |
///
/// Standard input, output and error are `/dev/null`.
///
/// With [`dynamic_weight`](Self::dynamic_weight) (keepalived's `misc_dynamic`): exit 0 is
/// up with the weight unchanged, 1 is down, and 2 to 255 are up with weight `status - 2`,
/// which the [`Monitor`](super::Monitor) applies to the backend.
///
/// A program still running when the monitor's timeout expires is killed (`SIGKILL`) and
/// reaped by Tokio. Only the program itself is killed: a shell script should `exec` its
/// last long-running command (or run nothing long in the background) so nothing outlives
/// it.
///
/// ```
/// use lb_core::Backend;
/// use lb_core::health::{ExecCheck, HealthCheck};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let backend = Backend::new("192.0.2.1:80".parse::<std::net::SocketAddr>().unwrap());
/// // Runs: sh -c 'test "$0:$1" = "192.0.2.1:80"' 192.0.2.1 80
/// let check = ExecCheck::new("/bin/sh").arg("-c").arg(r#"test "$0:$1" = "192.0.2.1:80""#);
/// assert!(check.check(&backend).await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCheck {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dynamic_weight: bool,
}

impl ExecCheck {
    /// A check running `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ExecCheck {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dynamic_weight: false,
        }
    }

    /// Adds an argument before the backend's host and port.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Turns exit statuses 2 to 255 into weights (keepalived's `misc_dynamic`).
    pub fn dynamic_weight(mut self, on: bool) -> Self {
        self.dynamic_weight = on;
        self
    }

    fn command(&self, target: &Backend) -> Command {
        let (host, port) = match target.address() {
            Address::Socket(a) => (OsString::from(a.ip().to_string()), Some(a.port())),
            Address::Host { host, port } => (OsString::from(host), Some(*port)),
            Address::Unix(p) => (p.clone().into_os_string(), None),
        };
        let port_arg = port.map(|p| p.to_string()).unwrap_or_default();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .arg(&host)
            .arg(&port_arg)
            .env("LB_BACKEND_ADDRESS", target.address().to_string())
            .env("LB_BACKEND_HOST", &host)
            .env("LB_BACKEND_WEIGHT", target.weight().to_string())
            .env_remove("LB_BACKEND_PORT")
            .env_remove("LB_BACKEND_ROUTE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if port.is_some() {
            cmd.env("LB_BACKEND_PORT", &port_arg);
        }
        if let Some(route) = target.route() {
            cmd.env("LB_BACKEND_ROUTE", route);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

/// `ETXTBSY`: the program file is still open for writing somewhere (being deployed).
const TEXT_FILE_BUSY: i32 = 26;

impl HealthCheck for ExecCheck {
    async fn check(&self, target: &Backend) -> Result<(), CheckError> {
        self.probe(target).await.map(drop)
    }

    async fn probe(&self, target: &Backend) -> Result<CheckReport, CheckError> {
        let program = self.program.display();
        let mut tries = 0;
        let mut child = loop {
            match self.command(target).spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(TEXT_FILE_BUSY) && tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) if super::is_local_shortage(&e) => {
                    return Err(CheckError::Local(format!("cannot run {program}: {e}")));
                }
                Err(e) => return Err(CheckError::Setup(format!("cannot run {program}: {e}"))),
            }
        };
        let status = child
            .wait()
            .await
            .map_err(|e| CheckError::Setup(format!("cannot wait for {program}: {e}")))?;
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(CheckReport::default()),
            (Some(code @ 2..=255), _) if self.dynamic_weight => {
                Ok(CheckReport::with_weight(code as u32 - 2))
            }
            (Some(code), _) => Err(CheckError::Unexpected(format!(
                "{program} exited with status {code}"
            ))),
            (None, Some(sig)) => Err(CheckError::Unexpected(format!(
                "{program} was killed by signal {sig}"
            ))),
            (None, None) => Err(CheckError::Unexpected(format!(
                "{program} ended without a status"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("lb-core-exec-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        /// Writes a shell script; returns a check running it with `/bin/sh`.
        fn script(&self, name: &str, body: &str) -> (PathBuf, ExecCheck) {
            let path = self.0.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            let check = ExecCheck::new("/bin/sh").arg(&path);
            (path, check)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn backend(s: &str) -> Backend {
        Backend::new(s.parse::<SocketAddr>().unwrap())
    }

    #[tokio::test]
    async fn passes_host_port_and_environment_exactly() {
        let dir = TempDir::new("argv");
        let out = dir.0.join("out");
        let body = format!(
            r#"for a in "$@"; do echo "arg=$a"; done > {out}
echo "address=$LB_BACKEND_ADDRESS host=$LB_BACKEND_HOST port=${{LB_BACKEND_PORT-unset}} weight=$LB_BACKEND_WEIGHT route=${{LB_BACKEND_ROUTE-unset}} extra=$EXTRA" >> {out}"#,
            out = out.display()
        );
        let (_, check) = dir.script("argv.sh", &body);
        let check = check.arg("first").env("EXTRA", "yes");
        let read = || std::fs::read_to_string(&out).unwrap();

        let b = backend("[2001:db8::7]:8080")
            .with_weight(3)
            .with_route("r1");
        check.check(&b).await.unwrap();
        assert_eq!(
            read(),
            "arg=first\narg=2001:db8::7\narg=8080\naddress=[2001:db8::7]:8080 \
             host=2001:db8::7 port=8080 weight=3 route=r1 extra=yes\n"
        );

        let b = Backend::new(Address::Unix("/run/app.sock".into()));
        check.check(&b).await.unwrap();
        assert_eq!(
            read(),
            "arg=first\narg=/run/app.sock\narg=\naddress=unix:/run/app.sock \
             host=/run/app.sock port=unset weight=1 route=unset extra=yes\n"
        );
    }

    #[tokio::test]
    async fn exit_status_decides_and_optionally_sets_the_weight() {
        let dir = TempDir::new("status");
        let (_, check) = dir.script("exit.sh", r#"exit "$CODE""#);
        let b = backend("192.0.2.1:80");
        let with =
            |code: &str, dynamic: bool| check.clone().env("CODE", code).dynamic_weight(dynamic);
        assert_eq!(with("0", false).probe(&b).await, Ok(CheckReport::default()));
        let e = with("1", false).probe(&b).await.unwrap_err();
        assert_eq!(
            e,
            CheckError::Unexpected("/bin/sh exited with status 1".into())
        );
        assert!(with("5", false).probe(&b).await.is_err(), "5 is down");
        assert_eq!(
            with("5", true).probe(&b).await,
            Ok(CheckReport::with_weight(3))
        );
        assert_eq!(
            with("2", true).probe(&b).await,
            Ok(CheckReport::with_weight(0))
        );
        assert_eq!(
            with("255", true).probe(&b).await,
            Ok(CheckReport::with_weight(253))
        );
        assert_eq!(with("0", true).probe(&b).await, Ok(CheckReport::default()));
        assert!(with("1", true).probe(&b).await.is_err(), "1 is down");
        assert_eq!(with("5", true).check(&b).await, Ok(()), "check: just up");
    }

    #[tokio::test]
    async fn runs_an_executable_script_directly_and_reports_missing_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("direct");
        let (path, _) = dir.script("ok.sh", r#"test "$2" = 80"#);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let b = backend("192.0.2.1:80");
        assert_eq!(ExecCheck::new(&path).check(&b).await, Ok(()));
        let missing = dir.0.join("missing.sh");
        let e = ExecCheck::new(&missing).check(&b).await.unwrap_err();
        assert!(
            matches!(&e, CheckError::Setup(m) if m.contains("missing.sh")),
            "{e}"
        );
    }

    fn process_gone(pid: u32) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    #[tokio::test]
    async fn a_dropped_check_kills_and_reaps_the_script() {
        let dir = TempDir::new("timeout");
        let pidfile = dir.0.join("pid");
        let body = format!("echo $$ > {}\nexec sleep 60", pidfile.display());
        let (_, check) = dir.script("slow.sh", &body);
        let b = backend("192.0.2.1:80");
        // The monitor's timeout drops the check future; so does aborting this task, once
        // the script surely runs (it wrote its pid before exec).
        let task = tokio::spawn(async move { check.check(&b).await });
        let mut pid = None;
        for _ in 0..200 {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                pid = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!task.is_finished(), "sleep 60 still running");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let pid = pid.expect("the script wrote its pid");
        let mut gone = false;
        for _ in 0..200 {
            if process_gone(pid) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "process {pid} was not killed and reaped");
    }
}
