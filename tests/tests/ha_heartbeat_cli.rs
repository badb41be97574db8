//! `lb-heartbeat`'s command line: a bad configuration is one clear line and exit status 2.

#[path = "support/ha.rs"]
mod ha;

use std::process::Command;

fn run_with(files: &[(&str, &str)], extra: &[&str]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("lbha-cli-{}-{}", std::process::id(), files.len()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let out = Command::new(ha::example_bin("lb-heartbeat"))
        .arg("--ha-config")
        .arg(dir.join("ha.cf"))
        .args(["--ha-node", "lb0"])
        .args(extra)
        .output()
        .expect("run lb-heartbeat");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_one_line_and_status_2() {
    let good_cf = "keepalive 200ms\ndeadtime 1\nnode lb0 lb1\nucast lo 127.0.0.1\n";
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("ha.cf", "keepalive 2\nwarntime ten\n"),
                ("haresources", ""),
                ("authkeys", "auth 1\n1 sha1 k\n"),
            ],
            "ha.cf:2: warntime: bad duration \"ten\"",
        ),
        (
            &[
                ("ha.cf", good_cf),
                ("haresources", "lb0 IPaddr::198.18.0.100/24\n"),
                ("authkeys", "auth 1\n1 sha1 k\n"),
            ],
            "haresources:1: IPaddr::198.18.0.100/24: expected ADDRESS/PREFIX/INTERFACE",
        ),
        (
            &[
                ("ha.cf", good_cf),
                ("haresources", "lb0 no-such-resource-script\n"),
                ("authkeys", "auth 1\n1 sha1 k\n"),
            ],
            "resource script \"no-such-resource-script\" not found",
        ),
        (
            &[
                ("ha.cf", good_cf),
                ("haresources", "lb0\n"),
                ("authkeys", "auth 2\n1 sha1 k\n"),
            ],
            "authkeys:1: auth: no key numbered 2",
        ),
    ];
    for (files, want) in cases {
        let (code, stderr) = run_with(files, &["--ha-resource-dir", "/nonexistent"]);
        assert_eq!(code, Some(2), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr:?}");
        assert!(lines[0].starts_with("lb-heartbeat: "), "{stderr:?}");
        assert!(
            lines[0].contains(want),
            "{:?} does not contain {want:?}",
            lines[0]
        );
    }
}
