//! lb-balancer reloads (SIGHUP) through the binary: what a reload changes, what it keeps, and
//! that a refused one changes nothing.

mod balancer_support;

use std::net::SocketAddr;
use std::path::Path;

use balancer_support::{
    Backend, Dir, Proxy, client, eventually, get, manager_view as view, member_view as member,
};
use http_body_util::BodyExt;

/// Writes a file with one balancer `app` on `/` with `members` and `extra` lines.
fn write_app(path: &Path, extra: &str, members: &[String]) {
    let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    std::fs::write(
        path,
        format!(
            "listen = \"127.0.0.1:0\"\n\n[[balancer]]\nname = \"app\"\n{extra}members = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
}

fn hup(p: &Proxy) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// How many stderr lines of `p` contain `text`.
fn stderr_count(p: &Proxy, text: &str) -> usize {
    p.stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

/// Posts a JSON action (the nonce is added) to the manager; returns the status.
async fn act(m: SocketAddr, fields: &str) -> u16 {
    let nonce = view(m).await["nonce"].as_str().unwrap().to_string();
    let req = hyper::Request::post(format!("http://{m}/api"))
        .header("content-type", "application/json")
        .body(balancer_support::full(format!(
            r#"{{"nonce":"{nonce}","balancer":"app",{fields}}}"#
        )))
        .unwrap();
    let r = client().request(req).await.unwrap();
    let s = r.status().as_u16();
    let _ = r.into_body().collect().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_changes_nothing_even_against_members_added_from_the_manager() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let dir = Dir::new("refused");
    let path = dir.file("balancer.toml");
    write_app(&path, "", &[a.url(), b.url()]);
    let (p, m) = Proxy::from_file_managed(&path);
    assert_eq!(act(m, &format!(r#""add":"{}""#, c.url())).await, 200);
    assert!(member(&view(m).await, &c.url()).is_some());
    let before = view(m).await;
    // The manager names the lbmethod as the file does (the default), not as lb-core's
    // scheduler (wrr).
    assert_eq!(before["balancers"][0]["lbmethod"], "byrequests");

    // c's address under another URL: refused, since the manager's c holds it.
    write_app(
        &path,
        "lbmethod = \"roundrobin\"\n",
        &[format!("{},loadfactor=5", a.url()), format!("{}/", c.url())],
    );
    hup(&p);
    let refused = eventually(10, || async { stderr_count(&p, "reload failed") == 1 }).await;
    assert!(refused, "the reload was not refused");
    let line = p
        .stderr
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("reload failed"))
        .cloned()
        .unwrap();
    assert!(
        line.contains(&format!("member {}/", c.url())) && line.contains("duplicate"),
        "{line}"
    );
    let after = view(m).await;
    assert_eq!(
        after["balancers"][0]["lbmethod"], before["balancers"][0]["lbmethod"],
        "the scheduler changed"
    );
    assert!(member(&after, &b.url()).is_some(), "b left: {after}");
    assert_eq!(
        member(&after, &a.url()).unwrap()["loadfactor"],
        1,
        "{after}"
    );
    assert!(member(&after, &c.url()).is_some(), "{after}");
    assert_eq!(
        after["balancers"][0]["members"].as_array().unwrap().len(),
        3,
        "{after}"
    );
    let c2 = client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        seen.insert(get(&c2, &p.url("/"), None).await.2);
    }
    assert!(seen.contains("b"), "b takes no traffic: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_file_is_reported_and_the_balancer_keeps_serving() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&["--listen", "127.0.0.1:0", "--member", &a.url()]);
    let c = client();
    assert_eq!(get(&c, &p.url("/"), None).await.2, "a");
    hup(&p);
    let told = eventually(10, || async { stderr_count(&p, "nothing to reload") == 1 }).await;
    assert!(told, "SIGHUP without a file was not reported");
    // A fresh connection: the process is still there and serving.
    assert_eq!(get(&client(), &p.url("/"), None).await.2, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_health_check_leaves_the_file_comes_back_up() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = Dir::new("hc-removed");
    let path = dir.file("balancer.toml");
    // a fails its check (/status/500 answers 500).
    write_app(
        &path,
        "",
        &[
            format!("{},hcmethod=GET,hcuri=/status/500,hcinterval=1", a.url()),
            b.url(),
        ],
    );
    let (p, m) = Proxy::from_file_managed(&path);
    let down = eventually(10, || async {
        member(&view(m).await, &a.url()).unwrap()["status"]
            .as_str()
            .unwrap()
            .contains("HcFl")
    })
    .await;
    assert!(down, "a never failed its check");
    // The check leaves a's line (and its loadfactor changes): no check, no verdict.
    for line in [a.url(), format!("{},loadfactor=2", a.url())] {
        write_app(&path, "", &[line.clone(), b.url()]);
        hup(&p);
        let up = eventually(10, || async {
            let v = view(m).await;
            let ma = member(&v, &a.url()).unwrap();
            ma["health"] == "up" && !ma["status"].as_str().unwrap().contains("HcFl")
        })
        .await;
        assert!(up, "{line}: a is still down: {}", view(m).await);
        let c = client();
        let served = eventually(10, || async { get(&c, &p.url("/"), None).await.2 == "a" }).await;
        assert!(served, "{line}: a takes no traffic");
        // Checked and down again for the next round.
        write_app(
            &path,
            "",
            &[
                format!("{},hcmethod=GET,hcuri=/status/500,hcinterval=1", a.url()),
                b.url(),
            ],
        );
        hup(&p);
        let down = eventually(10, || async {
            member(&view(m).await, &a.url()).unwrap()["status"]
                .as_str()
                .unwrap()
                .contains("HcFl")
        })
        .await;
        assert!(down, "a's check did not come back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_the_manager_set_survive_a_reload_that_changes_the_line() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let dir = Dir::new("flags-kept");
    let path = dir.file("balancer.toml");
    write_app(&path, "", &[a.url(), b.url(), c.url()]);
    let (p, m) = Proxy::from_file_managed(&path);
    let set = |url: String, status: &'static str| async move {
        let s = act(m, &format!(r#""member":"{url}","status":"{status}""#)).await;
        assert_eq!(s, 200, "{url} {status}");
    };
    set(b.url(), "+S").await;
    set(c.url(), "+H").await;
    let flags = |v: &serde_json::Value, url: &str| member(v, url).unwrap()["flags"].clone();
    let v = view(m).await;
    assert_eq!(flags(&v, &b.url())["stopped"], true, "{v}");
    assert_eq!(flags(&v, &c.url())["hot_standby"], true, "{v}");

    // Every line changes, none of their statuses.
    write_app(
        &path,
        "",
        &[
            format!("{},loadfactor=2", a.url()),
            format!("{},loadfactor=2", b.url()),
            format!("{},route=c", c.url()),
        ],
    );
    hup(&p);
    let reloaded = eventually(10, || async {
        member(&view(m).await, &a.url()).unwrap()["loadfactor"] == 2
    })
    .await;
    assert!(reloaded, "the reload did not apply");
    let v = view(m).await;
    let fb = flags(&v, &b.url());
    assert!(
        fb["stopped"] == true && fb["disabled"] == false,
        "b is no longer stopped: {v}"
    );
    assert_eq!(flags(&v, &c.url())["hot_standby"], true, "{v}");
    let client = client();
    for _ in 0..6 {
        assert_eq!(get(&client, &p.url("/"), None).await.2, "a");
    }

    // A line whose status changes takes the file's flags.
    write_app(
        &path,
        "",
        &[
            format!("{},loadfactor=2", a.url()),
            format!("{},loadfactor=2,status=+D", b.url()),
            format!("{},route=c", c.url()),
        ],
    );
    hup(&p);
    let disabled = eventually(10, || async {
        flags(&view(m).await, &b.url())["disabled"] == true
    })
    .await;
    assert!(
        disabled,
        "the file's status did not apply: {}",
        view(m).await
    );
    assert_eq!(flags(&view(m).await, &b.url())["stopped"], false);
}

/// How many stdout lines of `p` contain `text`.
fn stdout_count(p: &Proxy, text: &str) -> usize {
    p.stdout
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_warns_that_manager_changes_need_a_restart() {
    let a = Backend::start("a").await;
    let dir = Dir::new("manager-changes");
    let path = dir.file("balancer.toml");
    let write = |remote: bool, hosts: &str| {
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\nmanager = \"127.0.0.1:0\"\nmanager_remote = {remote}\n\
                 manager_hosts = [{hosts}]\n[[balancer]]\nname = \"app\"\nmembers = [\"{}\"]\n",
                a.url()
            ),
        )
        .unwrap();
    };
    write(false, "\"lb1.test\"");
    // --abortonclose, --manager-host and --manager are the command line's: a reload of the
    // file keeps them, silently.
    let p = Proxy::start(&[
        "--config",
        path.to_str().unwrap(),
        "--abortonclose",
        "--manager-host",
        "cli.test",
        "--manager",
        "127.0.0.1:0",
    ]);
    hup(&p);
    let done = eventually(10, || async { stdout_count(&p, "reloaded") == 1 }).await;
    assert!(done, "the first reload did not finish");
    assert_eq!(
        stderr_count(&p, "need a restart"),
        0,
        "a warning for an unchanged file: {:?}",
        p.stderr.lock().unwrap()
    );

    let warning = "manager, manager_remote and manager_hosts changes need a restart";
    for (n, (remote, hosts)) in [(false, "\"lb2.test\""), (true, "\"lb1.test\"")]
        .into_iter()
        .enumerate()
    {
        write(remote, hosts);
        hup(&p);
        let done = eventually(10, || async { stdout_count(&p, "reloaded") == n + 2 }).await;
        assert!(done, "reload {} did not finish", n + 2);
        assert_eq!(
            stderr_count(&p, warning),
            n + 1,
            "{:?}",
            p.stderr.lock().unwrap()
        );
    }
    // The names the manager started with still hold, the file's and the command line's.
    let m = p.manager.unwrap();
    for host in ["lb1.test", "cli.test"] {
        let req = hyper::Request::get(format!("http://{m}/api"))
            .header("host", host)
            .body(balancer_support::full(""))
            .unwrap();
        let r = client().request(req).await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
}
