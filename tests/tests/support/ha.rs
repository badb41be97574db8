//! Helpers for the HA end-to-end tests: network namespaces on a bridge, `lb-heartbeat`
//! processes, a tiny HTTP backend and client. Everything created is removed on drop.

#![allow(dead_code)]
// These helpers wait for external processes (ip, lb-heartbeat, python) in real time;
// there is no timing logic here to pause.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The virtual IP of the tests (RFC 2544 benchmarking range).
pub(crate) const VIP: &str = "198.18.0.100";

/// One HA test at a time: they share the CPU with the timing under test.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the namespace tests cannot run here, if they cannot (probed once per run).
pub(crate) fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".to_owned());
    }
    let probe = format!("lbha-probe-{}", std::process::id());
    if !run_ok("ip", &["netns", "add", &probe]) {
        return Some("`ip netns add` failed (no iproute2 or no namespace support)".to_owned());
    }
    run_ok("ip", &["netns", "del", &probe]);
    if !run_ok("python3", &["-c", "pass"]) {
        return Some("python3 is not available for the test backend and client".to_owned());
    }
    None
}

/// Runs a command, true on success.
pub(crate) fn run_ok(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command and panics with its output on failure.
pub(crate) fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {prog} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of a binary of lb-examples, built once per test run.
pub(crate) fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    // target/debug/deps/ha_xxx -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_owned();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "lb-examples", "--bin", name]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build of {name} failed: {s}")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    profile_dir.join(name)
}

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) name: String,
    pub(crate) stdout: PathBuf,
}

impl Proc {
    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit status (SIGKILL after that).
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        run_ok("kill", &["-TERM", &pid]);
        for _ in 0..(timeout.as_millis() / 20).max(1) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// What the process printed on stdout so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small network: namespaces `client`, `lb0`, `lb1` on a bridge in a fourth one.
///
/// Addresses: client 198.18.0.1, lb0 198.18.0.2, lb1 198.18.0.3, each on `eth0`, /24.
#[derive(Debug)]
pub(crate) struct Net {
    pub(crate) prefix: String,
    pub(crate) dir: PathBuf,
    created: Vec<String>,
}

impl Net {
    /// Creates the network; `tag` names the test. Names include the pid.
    pub(crate) fn new(tag: &str) -> Net {
        let prefix = format!("lbha{}{}", std::process::id(), tag);
        let dir = std::env::temp_dir().join(format!("{prefix}-files"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        let mut net = Net {
            prefix,
            dir,
            created: Vec::new(),
        };
        let br = net.ns("br");
        net.add_ns(&br);
        run("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &br, "link", "set", "br0", "up"]);
        for (host, addr) in [
            ("client", "198.18.0.1"),
            ("lb0", "198.18.0.2"),
            ("lb1", "198.18.0.3"),
        ] {
            let ns = net.ns(host);
            net.add_ns(&ns);
            let port = format!("v{host}");
            run(
                "ip",
                &[
                    "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            );
            run(
                "ip",
                &["-n", &br, "link", "set", &port, "master", "br0", "up"],
            );
            run(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "eth0",
                ],
            );
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn add_ns(&mut self, ns: &str) {
        run("ip", &["netns", "add", ns]);
        self.created.push(ns.to_owned());
    }

    /// The namespace name of `host` (`client`, `lb0`, `lb1`, `br`).
    pub(crate) fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Runs a command in `host`'s namespace.
    pub(crate) fn exec(&self, host: &str, args: &[&str]) -> String {
        let ns = self.ns(host);
        let mut all = vec!["netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// [`exec`](Self::exec) for probes that may fail: stdout on success, `None` otherwise.
    pub(crate) fn try_exec(&self, host: &str, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Spawns a long-running command in `host`'s namespace, stdout to a file.
    pub(crate) fn spawn(&self, host: &str, label: &str, args: &[&str]) -> Proc {
        let stdout = self.dir.join(format!("{label}.out"));
        let stderr = self.dir.join(format!("{label}.err"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn in namespace");
        Proc {
            child,
            name: label.to_owned(),
            stdout,
        }
    }

    /// Sets `host`'s link (inside its namespace) up or down.
    pub(crate) fn link(&self, host: &str, up: bool) {
        run(
            "ip",
            &[
                "-n",
                &self.ns(host),
                "link",
                "set",
                "eth0",
                if up { "up" } else { "down" },
            ],
        );
    }

    /// Sets the bridge port of `host` up or down (cuts the host off, process alive).
    pub(crate) fn bridge_port(&self, host: &str, up: bool) {
        run(
            "ip",
            &[
                "-n",
                &self.ns("br"),
                "link",
                "set",
                &format!("v{host}"),
                if up { "up" } else { "down" },
            ],
        );
    }

    /// Sends SIGTERM to `p`, the daemon on `host`: it must exit 0 within 10 s, having given
    /// the virtual IP up.
    pub(crate) fn stop_cleanly(&self, host: &str, p: &mut Proc) {
        let status = p
            .terminate(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} did not exit on SIGTERM", p.name));
        assert!(status.success(), "{}: exit status {status}", p.name);
        assert!(!self.holds_vip(host), "{host} kept the vip after shutdown");
    }

    /// True when `host` has the virtual IP.
    pub(crate) fn holds_vip(&self, host: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.ns(host), "-o", "addr", "show", "dev", "eth0"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {VIP}/")))
    }

    /// The MAC address of `host`'s eth0.
    pub(crate) fn mac(&self, host: &str) -> String {
        let out = run(
            "ip",
            &["-n", &self.ns(host), "-o", "link", "show", "dev", "eth0"],
        );
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .expect("link/ether in ip link output")
            .to_owned()
    }

    /// The client's neighbour entry for the virtual IP: the MAC, if any.
    pub(crate) fn client_neigh(&self) -> Option<String> {
        self.client_neigh_of(VIP)
    }

    /// Writes the node's files: ha.cf, haresources, authkeys, and a resource script
    /// `svc` logging its actions to `svc.log` in the node's directory.
    pub(crate) fn write_node_files(&self, host: &str, auto_failback: bool) -> PathBuf {
        let d = self.dir.join(host);
        std::fs::create_dir_all(d.join("resource.d")).expect("node dir");
        std::fs::write(
            d.join("ha.cf"),
            format!(
                "# written by the lb-ha end-to-end tests\nkeepalive 200ms\nwarntime 500ms\ndeadtime 1\ninitdead 3\nudpport 694\nauto_failback {}\nucast eth0 198.18.0.2\nucast eth0 198.18.0.3\nnode lb0\nnode lb1\nrespawn hacluster /usr/lib/heartbeat/ipfail\n",
                if auto_failback { "on" } else { "off" }
            ),
        )
        .expect("ha.cf");
        std::fs::write(
            d.join("haresources"),
            format!("lb0 IPaddr::{VIP}/24/eth0 svc\n"),
        )
        .expect("haresources");
        std::fs::write(d.join("authkeys"), "auth 1\n1 sha1 lb-ha-test-key\n").expect("authkeys");
        let script = d.join("resource.d/svc");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1\" >> {}\nexit 0\n",
                d.join("svc.log").display()
            ),
        )
        .expect("svc");
        run("chmod", &["755", &script.display().to_string()]);
        d
    }

    /// Writes the TOML form for `host`: multicast beats, the given resources.
    pub(crate) fn write_node_toml(&self, host: &str, resources: &[&str]) -> PathBuf {
        let d = self.dir.join(host);
        std::fs::create_dir_all(d.join("resource.d")).expect("node dir");
        let list: Vec<String> = resources.iter().map(|r| format!("{r:?}")).collect();
        let path = d.join("ha.toml");
        std::fs::write(
            &path,
            format!(
                "nodes = [\"lb0\", \"lb1\"]\npreferred = \"lb0\"\nkeepalive = \"200ms\"\nwarntime = \"500ms\"\ndeadtime = 1\ninitdead = 3\nauto_failback = true\nkey = \"lb-ha-test-key\"\nmcast = [{{ interface = \"eth0\", group = \"239.255.6.94\" }}]\nresources = [{}]\nannounce = {{ count = 4, interval = \"600ms\" }}\n",
                list.join(", ")
            ),
        )
        .expect("ha.toml");
        path
    }

    /// Starts `lb-heartbeat --ha-toml` for `host`.
    pub(crate) fn start_heartbeat_toml(&self, host: &str, run_no: u32) -> Proc {
        let d = self.dir.join(host);
        let bin = example_bin("lb-heartbeat").display().to_string();
        let toml = d.join("ha.toml").display().to_string();
        self.spawn(
            host,
            &format!("{host}-hb{run_no}"),
            &[&bin, "--ha-toml", &toml, "--ha-node", host],
        )
    }

    /// True when `host` has `addr` (any family) on eth0.
    pub(crate) fn holds(&self, host: &str, addr: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.ns(host), "-o", "addr", "show", "dev", "eth0"])
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w.split('/').next() == Some(addr))
            })
    }

    /// The client's neighbour entry for `addr`: the MAC, if any.
    pub(crate) fn client_neigh_of(&self, addr: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns("client"), "neigh", "show", addr])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_owned)
    }

    /// Starts `lb-heartbeat` for `host` (`lb0` or `lb1`).
    pub(crate) fn start_heartbeat(&self, host: &str, run_no: u32) -> Proc {
        let d = self.dir.join(host);
        let bin = example_bin("lb-heartbeat");
        let cf = d.join("ha.cf").display().to_string();
        let rd = d.join("resource.d").display().to_string();
        let bin = bin.display().to_string();
        self.spawn(
            host,
            &format!("{host}-hb{run_no}"),
            &[
                &bin,
                "--ha-config",
                &cf,
                "--ha-node",
                host,
                "--ha-resource-dir",
                &rd,
            ],
        )
    }

    /// Starts an HTTP backend answering with `host`'s name on port 8080, on all addresses.
    pub(crate) fn start_backend(&self, host: &str) -> Proc {
        self.start_backend_on(host, 8080, host)
    }

    /// Starts an HTTP backend in `host`'s namespace answering `body` on `port`, on all
    /// addresses.
    pub(crate) fn start_backend_on(&self, host: &str, port: u16, body: &str) -> Proc {
        let root = self.dir.join(format!("www-{host}-{port}"));
        std::fs::create_dir_all(&root).expect("www");
        std::fs::write(root.join("index.html"), body).expect("index");
        let root = root.display().to_string();
        let port = port.to_string();
        let p = self.spawn(
            host,
            &format!("{host}-www-{port}"),
            &[
                "python3",
                "-m",
                "http.server",
                &port,
                "--bind",
                "0.0.0.0",
                "--directory",
                &root,
            ],
        );
        let ns = self.ns(host);
        let probe =
            format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1).close()");
        wait_until(Duration::from_secs(20), || {
            run_ok("ip", &["netns", "exec", &ns, "python3", "-c", &probe])
        })
        .expect("the backend listens");
        p
    }

    /// Adds `addr` (with prefix, e.g. `198.18.0.11/24`) to `host`'s eth0.
    pub(crate) fn add_addr(&self, host: &str, addr: &str) {
        run(
            "ip",
            &["-n", &self.ns(host), "addr", "add", addr, "dev", "eth0"],
        );
    }

    /// Sends one line to a TCP port on `host`'s loopback and returns the whole reply
    /// (lb-pen's control port), `None` when nothing listens.
    pub(crate) fn tcp_ask(&self, host: &str, port: u16, line: &str) -> Option<String> {
        let script = "import socket, sys\n\
            s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n\
            s.sendall(sys.argv[2].encode() + b'\\n')\n\
            data = b''\n\
            while True:\n    c = s.recv(4096)\n    if not c:\n        break\n    data += c\n\
            sys.stdout.write(data.decode())\n";
        self.try_exec(host, &["python3", "-c", script, &port.to_string(), line])
    }

    /// GET `url` from inside `host`'s namespace: the body, `None` on any failure.
    pub(crate) fn http_get(&self, host: &str, url: &str) -> Option<String> {
        let script = "import sys, urllib.request\n\
            sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n";
        self.try_exec(host, &["python3", "-c", script, url])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Processes we started inside are killed by their own guards first (they are
            // declared after the Net); anything they left behind is ours too.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    run_ok("kill", &["-KILL", pid]);
                }
            }
            run_ok("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `f` holds, polling every 10 ms for at most `limit`; returns the time taken.
pub(crate) fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::SystemTime::now();
    loop {
        if f() {
            return start.elapsed().ok();
        }
        if start.elapsed().map_or(true, |e| e > limit) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The client, asking through the virtual IP. Two forms:
///
/// * `VIP PORT COUNT`: `COUNT` HTTP requests, 50 ms apart, each retried once. Output: one
///   line per request, `attempts body milliseconds`.
/// * `VIP PORT from SOURCE...`: one request from each source address in turn, up to 3 tries
///   200 ms apart. Output: one line per source, `source body`.
///
/// Each try has a 2 s connect/read timeout; `body` is `FAIL` when every try failed.
pub(crate) const CLIENT: &str = r#"
import socket, sys, time
vip, port = sys.argv[1], int(sys.argv[2])
def get(src=None):
    s = socket.create_connection((vip, port), timeout=2.0,
                                 source_address=(src, 0) if src else None)
    s.settimeout(2.0)
    s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
    data = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
    s.close()
    return data.split(b"\r\n\r\n", 1)[1].strip().decode()
def ask(tries, pause, src=None):
    for attempt in range(tries):
        try:
            return attempt + 1, get(src)
        except Exception:
            time.sleep(pause)
    return tries, "FAIL"
if sys.argv[3] == "from":
    for src in sys.argv[4:]:
        print(src, ask(3, 0.2, src)[1], flush=True)
else:
    for i in range(int(sys.argv[3])):
        started = time.time()
        tries, body = ask(2, 0.0)
        print(tries, body, int((time.time() - started) * 1000), flush=True)
        time.sleep(0.05)
"#;
