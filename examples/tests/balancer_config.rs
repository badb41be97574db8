//! lb-balancer's configuration through the binary: what the command line and the file
//! refuse, and how the refusal reads (one message naming the file, line and key, or the
//! flag; exit status 2).

mod balancer_support;

use std::path::PathBuf;

use balancer_support::{Proxy, run_to_exit};

/// A scratch directory for one test's files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lb-balancer-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn flags_the_file_sets_are_refused_with_config() {
    let dir = Dir::new("config-flags");
    let path = dir.write(
        "c.toml",
        "listen = \"127.0.0.1:0\"\n[[balancer]]\nname = \"app\"\nmembers = [\"http://127.0.0.1:19401\"]\n",
    );
    let (code, err) = run_to_exit(&[
        "--config",
        &path,
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "X",
        "--timeout",
        "0",
        "--maxheaders",
        "3",
    ]);
    assert_eq!(code, Some(2), "{err}");
    for flag in [
        "--config",
        "--listen",
        "--stickysession",
        "--timeout",
        "--maxheaders",
    ] {
        assert!(err.contains(flag), "{flag} not named: {err}");
    }
    // Each of them alone, valid or not.
    let with_value: [(&str, &str); 15] = [
        ("--listen", "127.0.0.1:0"),
        ("--member", "http://127.0.0.1:19402"),
        ("--lbmethod", "roundrobin"),
        ("--hashkey", "path"),
        ("--stickysession", "ROUTEID"),
        ("--cookie", "SRV insert"),
        ("--maxattempts", "2"),
        ("--failonstatus", "500"),
        ("--forcerecovery", "off"),
        ("--timeout", "5"),
        ("--connecttimeout", "5"),
        ("--retryon", "503"),
        ("--headtimeout", "5"),
        ("--idletimeout", "5"),
        ("--maxheaders", "50"),
    ];
    let bare = [
        "--scolonpathdelim",
        "--nofailover",
        "--failontimeout",
        "--preservehost",
        "--forwarded",
    ];
    let mut cases: Vec<Vec<&str>> = with_value.iter().map(|(f, v)| vec![*f, *v]).collect();
    cases.extend(bare.iter().map(|f| vec![*f]));
    cases.push(vec!["--maxheadsize", "4096"]);
    for case in cases {
        let mut args = vec!["--config", path.as_str()];
        args.extend(&case);
        let (code, err) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{case:?} accepted with --config: {err}");
        assert!(
            err.contains("--config") && err.contains(case[0]),
            "{case:?}: {err}"
        );
    }
}

#[test]
fn a_second_balancer_on_a_taken_address_is_refused() {
    let first = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        "http://127.0.0.1:19401",
    ]);
    let addr = first.addr.to_string();
    let (code, err) = run_to_exit(&["--listen", &addr, "--member", "http://127.0.0.1:19402"]);
    assert_eq!(code, Some(2), "a second balancer started on {addr}: {err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}: Address already in use")),
        "{err}"
    );
    // A port some other program holds reads the same.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let (code, err) = run_to_exit(&["--listen", &addr, "--member", "http://127.0.0.1:19402"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}: Address already in use")),
        "{err}"
    );
}
