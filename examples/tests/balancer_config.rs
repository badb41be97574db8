//! lb-balancer's configuration through the binary: what the command line and the file
//! refuse, and how the refusal reads (one message naming the file, line and key, or the
//! flag; exit status 2).

mod balancer_support;

use balancer_support::{Dir, Proxy, run_to_exit};

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

/// Runs lb-balancer with `args`, expecting it to refuse them: exit status 2 and one line on
/// stderr holding `wanted`.
fn refused(args: &[&str], wanted: &str) {
    let (code, err) = run_to_exit(args);
    assert_eq!(code, Some(2), "{args:?}: {err}");
    assert!(err.contains(wanted), "{args:?}: wanted {wanted:?} in {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn configuration_errors_name_the_file_line_and_key_or_the_flag() {
    let dir = Dir::new("config-errors");
    // Two members at one address, in the file and on the command line.
    let path = dir.write(
        "members.toml",
        "listen = \"127.0.0.1:0\"\n[[balancer]]\nname = \"app\"\nmembers = [\n  \"http://127.0.0.1:19401/x\",\n  \"http://127.0.0.1:19401/y\",\n]\n",
    );
    refused(
        &["--config", &path],
        &format!("{path}:6: members: duplicate backend address 127.0.0.1:19401"),
    );
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "-m",
            "http://127.0.0.1:19401",
            "-m",
            "http://127.0.0.1:19401",
        ],
        "--member http://127.0.0.1:19401: duplicate backend address 127.0.0.1:19401",
    );
    // A balancer name or path used twice: the second one's line.
    let app = |name: &str, path: &str, port: u16| {
        format!(
            "[[balancer]]\nname = \"{name}\"\npath = \"{path}\"\nmembers = [\"http://127.0.0.1:{port}\"]\n"
        )
    };
    let listen = "listen = \"127.0.0.1:0\"\n";
    let path = dir.write(
        "names.toml",
        &format!(
            "{listen}{}{}",
            app("app", "/a", 19401),
            app("app", "/b", 19402)
        ),
    );
    refused(&["--config", &path], &format!("{path}:7: name: "));
    let path = dir.write(
        "paths.toml",
        &format!(
            "{listen}{}{}",
            app("one", "/a", 19401),
            app("two", "/a/", 19402)
        ),
    );
    refused(&["--config", &path], &format!("{path}:8: path: "));
    // A value of the wrong type names its key.
    let path = dir.write(
        "limit.toml",
        "listen = \"127.0.0.1:0\"\nhead_timeout = -5\n[[balancer]]\nmembers = [\"http://127.0.0.1:19401\"]\n",
    );
    refused(&["--config", &path], &format!("{path}:2: head_timeout: "));
    // A manager host name with a port could never match a Host header.
    let path = dir.write(
        "hosts.toml",
        "listen = \"127.0.0.1:0\"\nmanager_hosts = [\"lb1.test:8081\"]\n[[balancer]]\nmembers = [\"http://127.0.0.1:19401\"]\n",
    );
    refused(
        &["--config", &path],
        &format!("{path}:2: manager_hosts: manager host name \"lb1.test:8081\" is not a DNS name"),
    );
}

#[test]
fn settings_that_could_never_work_are_refused() {
    let dir = Dir::new("config-never");
    let file = |name: &str, balancer: &str| {
        dir.write(
            name,
            &format!("listen = \"127.0.0.1:0\"\n[[balancer]]\nname = \"app\"\n{balancer}"),
        )
    };
    // Mount paths no request can match: requests lose their dot segments before they are
    // matched, a query is not part of the path, and a space would come encoded.
    for (i, mount) in ["/app/../x", "/app/%2E%2e", "/app?x=1", "/my app", "/a#b"]
        .iter()
        .enumerate()
    {
        let path = file(
            &format!("mount{i}.toml"),
            &format!("path = \"{mount}\"\nmembers = [\"http://127.0.0.1:19401\"]\n"),
        );
        refused(&["--config", &path], &format!("{path}:4: path: "));
    }
    // A member list element that is not a string: its own line, not the list's.
    let path = file(
        "element.toml",
        "members = [\n  \"http://127.0.0.1:19401\",\n  5,\n]\n",
    );
    refused(
        &["--config", &path],
        &format!("{path}:6: members: expected a member string"),
    );
    // Two members with one route: sticky sessions would all go to the first.
    let path = file(
        "routes.toml",
        "members = [\n  \"http://127.0.0.1:19401,route=a\",\n  \"http://127.0.0.1:19402,route=a\",\n]\n",
    );
    refused(
        &["--config", &path],
        &format!("{path}:6: members: duplicate route \"a\" (also member http://127.0.0.1:19401)"),
    );
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "-m",
            "http://127.0.0.1:19401,route=a",
            "-m",
            "http://127.0.0.1:19402,route=a",
        ],
        "--member http://127.0.0.1:19402,route=a: duplicate route \"a\"",
    );
    // A hash key with an lbmethod that ignores it.
    let path = file(
        "hashkey.toml",
        "lbmethod = \"byrequests\"\nhashkey = \"path\"\nmembers = [\"http://127.0.0.1:19401\"]\n",
    );
    refused(
        &["--config", &path],
        &format!("{path}:5: hashkey: lbmethod byrequests does not hash a key"),
    );
    refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "-m",
            "http://127.0.0.1:19401",
            "--lbmethod",
            "sh",
            "--hashkey",
            "path",
        ],
        "--hashkey path: lbmethod sh does not hash a key",
    );
}

#[test]
fn stickysession_and_cookie_together_are_refused_in_the_file() {
    let dir = Dir::new("config-sticky");
    let path = dir.write(
        "c.toml",
        "listen = \"127.0.0.1:0\"\n[[balancer]]\nname = \"app\"\nstickysession = \"JSESSIONID\"\ncookie = \"SRV insert\"\nmembers = [\"http://127.0.0.1:19401\"]\n",
    );
    let (code, err) = run_to_exit(&["--config", &path]);
    assert_eq!(code, Some(2), "accepted: {err}");
    assert!(
        err.contains(&format!(
            "{path}:5: cookie: cannot be combined with stickysession"
        )),
        "{err}"
    );
    // As on the command line.
    let (code, err) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "-m",
        "http://127.0.0.1:19401",
        "--stickysession",
        "JSESSIONID",
        "--cookie",
        "SRV insert",
    ]);
    assert_eq!(code, Some(2), "{err}");
}

/// A sticky cookie name no client could send back (QA6 F3) is refused, naming the key and
/// line in a file and the flag on the command line, rather than starting with sessions
/// that silently never stick.
#[test]
fn sticky_cookie_names_that_could_never_work_are_refused() {
    let dir = Dir::new("config-sticky-names");
    for (value, why) in [
        (
            "\"\"",
            "invalid value \"\" for cookie name: a cookie name cannot be empty",
        ),
        (
            "\"bad name;x\"",
            "invalid value \"bad name;x\" for cookie name: ' ' cannot be in a cookie name",
        ),
        (
            "\"A|b|c\"",
            "invalid value \"b|c\" for URL parameter name: '|' cannot be",
        ),
    ] {
        let path = dir.write(
            "c.toml",
            &format!(
                "listen = \"127.0.0.1:0\"\n[[balancer]]\nname = \"app\"\n\nstickysession = {value}\nmembers = [\"http://127.0.0.1:19401,route=a\"]\n"
            ),
        );
        refused(
            &["--config", &path],
            &format!("{path}:5: stickysession: {why}"),
        );
    }
    let path = dir.write(
        "c.toml",
        "listen = \"127.0.0.1:0\"\n[[balancer]]\ncookie = \"=x insert\"\nmembers = [\"http://127.0.0.1:19401\"]\n",
    );
    refused(
        &["--config", &path],
        &format!("{path}:3: cookie: invalid value \"=x\" for cookie name"),
    );
    let cli = |flag: &str, value: &str, wanted: &str| {
        refused(
            &[
                "--listen",
                "127.0.0.1:0",
                "-m",
                "http://127.0.0.1:19401",
                flag,
                value,
            ],
            wanted,
        )
    };
    cli(
        "--cookie",
        "a;b insert",
        "--cookie a;b insert: invalid value \"a;b\" for cookie name: ';' cannot be",
    );
    cli("--cookie", "=x insert", "--cookie =x insert: invalid value");
    cli(
        "--stickysession",
        "X|",
        "--stickysession X|: invalid value \"\" for URL parameter name",
    );
}

/// One cookie name on nested paths (`/` and `/app`) is refused, naming both balancers: a
/// client sends the outer balancer's cookie to the inner one too, which would follow it.
/// On disjoint paths the name may be shared (see balancer_http.rs).
#[test]
fn one_sticky_cookie_name_on_nested_paths_is_refused() {
    let dir = Dir::new("config-sticky-nested");
    let path = dir.write(
        "c.toml",
        "listen = \"127.0.0.1:0\"\n\
         [[balancer]]\nname = \"site\"\npath = \"/\"\nstickysession = \"ROUTEID\"\nmembers = [\"http://127.0.0.1:19401,route=a\"]\n\
         [[balancer]]\nname = \"app\"\npath = \"/app\"\nstickysession = \"ROUTEID\"\nmembers = [\"http://127.0.0.1:19402,route=a\"]\n",
    );
    refused(
        &["--config", &path],
        &format!(
            "{path}:10: stickysession: cookie \"ROUTEID\" is used by balancers \"site\" (path \"/\") \
             and \"app\" (path \"/app\")"
        ),
    );
}
