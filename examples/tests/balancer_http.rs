//! lb-balancer end to end: the binary, real HTTP backends on loopback, a hyper client and raw
//! sockets.

mod balancer_support;

use std::time::Duration;

use balancer_support::{
    Backend, Proxy, client, eventually, first_member_busy, get, manager_view, member_view, raw,
    run_to_exit,
};
use bytes::Bytes;
use http_body_util::BodyExt;

fn member(b: &Backend, extra: &str) -> String {
    if extra.is_empty() {
        b.url()
    } else {
        format!("{},{extra}", b.url())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byrequests_follows_loadfactor_3_to_1() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "loadfactor=3"), member(&b, "loadfactor=1"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--lbmethod",
        "byrequests",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    for _ in 0..80 {
        assert_eq!(get(&c, &p.url("/"), None).await.0, 200);
    }
    assert!(
        !p.scheduler_missing(),
        "byrequests fell back to another scheduler"
    );
    assert_eq!((a.hits(), b.hits()), (60, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bybusyness_favours_the_idle_member() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--lbmethod",
        "bybusyness",
        "--member",
        &a.url(),
        "--member",
        &b.url(),
    ]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !p.scheduler_missing(),
        "bybusyness fell back to another scheduler"
    );
    let c = client();
    // Three slow requests in flight: they spread 2/1 or 1/2; the member with fewer gets the
    // next fast ones while the slow ones last.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            let u = p.url("/slow?ms=1500");
            tokio::spawn(async move { get(&c, &u, None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a0, b0) = (a.hits(), b.hits());
    for _ in 0..6 {
        get(&c, &p.url("/"), None).await;
    }
    let (da, db) = (a.hits() - a0, b.hits() - b0);
    for s in slow {
        s.await.unwrap();
    }
    // The member with two slow requests is busier: the other must get most fast requests.
    assert!(da.abs_diff(db) >= 2, "fast requests spread {da}/{db}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routeid_cookie_sticks_and_is_set_only_when_the_route_changes() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "route=r1"), member(&b, "route=r2"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "ROUTEID",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    let (s, set, body) = get(&c, &p.url("/"), None).await;
    assert_eq!(s, 200);
    let set = set.expect("first response sets the route cookie");
    let route = if body == "a" { "r1" } else { "r2" };
    assert_eq!(set, format!("ROUTEID=.{route}; Path=/"));
    let cookie = format!("ROUTEID=.{route}");
    for _ in 0..10 {
        let (s, set, b2) = get(&c, &p.url("/"), Some(&cookie)).await;
        assert_eq!((s, b2.as_str()), (200, body.as_str()));
        assert!(
            set.is_none(),
            "cookie set again although the route did not change"
        );
    }
    // An unknown route: balanced, and the cookie is set.
    let (_, set, _) = get(&c, &p.url("/"), Some("ROUTEID=.nosuch")).await;
    assert!(set.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_parameter_route_wins_over_the_cookie() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "route=r1"), member(&b, "route=r2"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "JSESSIONID|jsessionid",
        "--scolonpathdelim",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    for _ in 0..4 {
        let (_, _, body) = get(
            &c,
            &p.url("/x?jsessionid=abc.r2"),
            Some("JSESSIONID=abc.r1"),
        )
        .await;
        assert_eq!(body, "b");
        let (_, _, body) = get(&c, &p.url("/x;jsessionid=abc.r1"), None).await;
        assert_eq!(body, "a");
        let (_, _, body) = get(&c, &p.url("/x"), Some("JSESSIONID=abc.r2")).await;
        assert_eq!(body, "b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_the_routed_member_dies_and_503_with_nofailover() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "route=r1"), member(&b, "route=r2"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "ROUTEID",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let strict = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "ROUTEID",
        "--nofailover",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    assert_eq!(get(&c, &p.url("/"), Some("ROUTEID=.r1")).await.2, "a");
    a.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Fresh connections to a now fail: the request moves to b and the cookie follows.
    let (s, set, body) = get(&c, &p.url("/"), Some("ROUTEID=.r1")).await;
    assert_eq!((s, body.as_str()), (200, "b"));
    assert_eq!(set.as_deref(), Some("ROUTEID=.r2; Path=/"));
    let (s, _, body) = get(&c, &strict.url("/"), Some("ROUTEID=.r1")).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("nofailover"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxattempts_counts_failovers_as_apache_does() {
    let a = Backend::start("a").await;
    // Nothing listens here: every connection is refused.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    // The dead member is in the first set, so every request tries it first.
    let dead = format!("http://{gone},lbset=0");
    let live = member(&a, "lbset=1");
    let c = client();
    for (maxattempts, first) in [(Some("1"), 200), (None, 200), (Some("0"), 502)] {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--member",
            &dead,
            "--member",
            &live,
        ];
        if let Some(n) = maxattempts {
            args.extend(["--maxattempts", n]);
        }
        let p = Proxy::start(&args);
        let (s, _, body) = get(&c, &p.url("/"), None).await;
        assert_eq!(s, first, "maxattempts {maxattempts:?}: {body}");
        // The dead member is in error now: the next request goes to the live one.
        let (s, _, body) = get(&c, &p.url("/"), None).await;
        assert_eq!(
            (s, body.as_str()),
            (200, "a"),
            "maxattempts {maxattempts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_standby_only_when_every_other_member_is_down() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let s = Backend::start("standby").await;
    let ms = member(&s, "status=+H");
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &a.url(),
        "--member",
        &b.url(),
        "--member",
        &ms,
    ]);
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &p.url("/"), None).await.0, 200);
    }
    assert_eq!(s.hits(), 0);
    a.stop();
    b.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "standby");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_sticky_traffic_only() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "route=r1,status=+N"), member(&b, "route=r2"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "ROUTEID",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    for _ in 0..6 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "b");
        assert_eq!(get(&c, &p.url("/"), Some("ROUTEID=.r1")).await.2, "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failonstatus_puts_a_member_in_error_for_its_retry_time() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let ma = member(&a, "retry=2");
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--failonstatus",
        "500",
        "--member",
        &ma,
        "--member",
        &b.url(),
    ]);
    let c = client();
    a.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    // Round robin reaches a within two requests; its 500 is passed on and a goes in error.
    let mut saw_500 = false;
    for _ in 0..2 {
        saw_500 |= get(&c, &p.url("/"), None).await.0 == 500;
    }
    assert!(saw_500);
    a.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "b");
    }
    assert_eq!(a.hits(), before);
    // After retry=2 seconds a takes requests again.
    let back = eventually(6, || async { get(&c, &p.url("/"), None).await.2 == "a" }).await;
    assert!(back, "member never came back after its retry time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_member_out_and_bring_it_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let ma = member(
        &a,
        "hcmethod=GET,hcuri=/health,hcinterval=100ms,hcfails=2,hcpasses=2",
    );
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &ma,
        "--member",
        &b.url(),
    ]);
    let c = client();
    a.health.store(503, std::sync::atomic::Ordering::SeqCst);
    let out = eventually(10, || async {
        let mut all_b = true;
        for _ in 0..4 {
            all_b &= get(&c, &p.url("/"), None).await.2 == "b";
        }
        all_b
    })
    .await;
    assert!(out, "member with failing health check still gets traffic");
    a.health.store(200, std::sync::atomic::Ordering::SeqCst);
    let back = eventually(10, || async { get(&c, &p.url("/"), None).await.2 == "a" }).await;
    assert!(back, "member did not come back after passing its checks");
    // Both changes are logged at the default level, naming the member by its address.
    let address = a.url().trim_start_matches("http://").to_string();
    let logged = |what: &str| {
        p.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(what) && l.contains(&address))
    };
    assert!(
        eventually(5, || async { logged("health check: up") }).await,
        "{:?}",
        p.stderr.lock().unwrap()
    );
    assert!(
        logged("health check: down"),
        "{:?}",
        p.stderr.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_form_and_json_change_behaviour() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (p, m) = Proxy::managed(&[a.url(), b.url()]);
    let c = client();
    let (_, _, page) = get(&c, &format!("http://{m}/"), None).await;
    assert!(page.contains("balancer://default") && page.contains(&a.url()));
    let nonce = page
        .split("name=\"nonce\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();

    // Without the nonce: refused.
    let post = |body: String| {
        let c = c.clone();
        async move {
            let req = hyper::Request::post(format!("http://{m}/"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(balancer_support::full(body))
                .unwrap();
            c.request(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(post("b=default&w=0&flags=1&D=on".into()).await, 403);
    assert_eq!(
        post(format!(
            "nonce={nonce}&b=default&w=0&flags=1&D=on&lf=1&ls=0&wr="
        ))
        .await,
        303
    );
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "b");
    }
    assert_eq!(a.hits(), before);

    // JSON: enable a again and disable b.
    let api = |body: String| {
        let c = c.clone();
        async move {
            let req = hyper::Request::post(format!("http://{m}/api"))
                .header("content-type", "application/json")
                .body(balancer_support::full(body))
                .unwrap();
            let r = c.request(req).await.unwrap();
            let s = r.status().as_u16();
            let body = r.into_body().collect().await.unwrap().to_bytes();
            (s, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (s, body) = api(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":"0","status":"-D"}}"#
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = api(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":"1","status":"+D"}}"#
    ))
    .await;
    assert_eq!(s, 200);
    for _ in 0..4 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "a");
    }
    let (s, body) = api(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":"1","loadfactor":500}}"#
    ))
    .await;
    assert_eq!(s, 400, "{body}");
    let (_, _, metrics) = get(&c, &format!("http://{m}/metrics"), None).await;
    assert!(
        metrics.contains("lb_member_requests_total{balancer=\"default\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_checks_every_field_before_changing_a_member() {
    let a = Backend::start("a").await;
    let (_p, m) = Proxy::managed(&[a.url()]);
    let c = client();
    let view = || manager_view(m);
    let api = view().await;
    let nonce = api["nonce"].as_str().unwrap().to_string();
    // The API lists members by number.
    assert_eq!(api["balancers"][0]["members"][0]["id"], 0);
    // (loadfactor, lbset, disabled) of the member.
    let member = || async {
        let v = view().await;
        let m = &v["balancers"][0]["members"][0];
        (
            m["loadfactor"].as_u64().unwrap(),
            m["lbset"].as_u64().unwrap(),
            m["flags"]["disabled"].as_bool().unwrap(),
        )
    };
    let send = |path: &'static str, ctype: &'static str, body: String| async move {
        manager_request(m, "POST", path, &[("content-type", ctype)], body).await
    };
    let form = |body: String| async {
        let (s, loc, _) = send("/", "application/x-www-form-urlencoded", body).await;
        assert_eq!(s, 303);
        let loc = loc.expect("no location");
        let (_, _, page) = get(&c, &format!("http://{m}{loc}"), None).await;
        page.split("id=\"msg\">")
            .nth(1)
            .and_then(|s| s.split("</p>").next())
            .unwrap_or_default()
            .to_string()
    };
    let json = |body: String| send("/api", "application/json", body);

    // One bad field in a form: nothing is applied, the message names it and its value.
    let msg = form(format!(
        "nonce={nonce}&b=default&w=0&lf=3&ls=500&wr=&flags=1&D=on"
    ))
    .await;
    assert!(msg.contains("ls") && msg.contains("500"), "{msg}");
    assert_eq!(member().await, (1, 0, false));
    let msg = form(format!(
        "nonce={nonce}&b=default&w=0&lf=abc&ls=0&flags=1&D=on"
    ))
    .await;
    assert!(msg.contains("lf") && msg.contains("abc"), "{msg}");
    assert_eq!(member().await, (1, 0, false));

    // The same through the JSON API: 400 naming the field, nothing applied.
    let (s, _, body) = json(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":"0","loadfactor":3,"lbset":500,"status":"+D"}}"#
    ))
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("lbset") && body.contains("500"), "{body}");
    let (s, _, body) = json(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":"0","loadfactor":"abc","status":"+D"}}"#
    ))
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("loadfactor") && body.contains("abc"),
        "{body}"
    );
    assert_eq!(member().await, (1, 0, false));

    // A missing nonce fails the forgery check like a wrong one.
    let (s, _, body) =
        json(r#"{"balancer":"default","member":"0","status":"+D"}"#.to_string()).await;
    assert_eq!(s, 403, "{body}");

    // Members are numbers in the API, so a number names one.
    let (s, _, body) = json(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":0,"loadfactor":3,"lbset":2,"status":"+D"}}"#
    ))
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(member().await, (3, 2, true));
    let (s, _, body) = json(format!(
        r#"{{"nonce":"{nonce}","balancer":"default","member":true}}"#
    ))
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("member id"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_removed_and_forwarding_headers_added() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--forwarded",
        "--member",
        &a.url(),
    ]);
    let head = "GET /headers HTTP/1.1\r\nHost: front.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Kept: yes\r\n\r\n";
    let out = raw(p.addr, head.as_bytes()).await;
    let out = out.to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 200"), "{out}");
    for gone in [
        "x-secret:",
        "keep-alive: timeout",
        "proxy-connection:",
        "te: trailers",
        "upgrade:",
    ] {
        assert!(!out.contains(gone), "{gone} reached the backend:\n{out}");
    }
    assert!(out.contains("x-kept: yes"));
    assert!(
        out.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1"),
        "{out}"
    );
    assert!(out.contains("x-forwarded-host: front.test"));
    assert!(out.contains("x-forwarded-proto: http"));
    assert!(
        out.contains("forwarded: for=127.0.0.1;proto=http;host=\"front.test\""),
        "{out}"
    );
    assert!(
        out.contains(&format!("host: {}", a.addr)),
        "Host should be the member's without preservehost"
    );
    assert!(out.contains("via: 1.1 lb"));

    // An absolute-form target names the host, whatever Host says (RFC 9112 section 3.2.2).
    let head =
        "GET http://target.test/headers HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n";
    let out = raw(p.addr, head.as_bytes()).await.to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 200"), "{out}");
    assert!(out.contains("x-forwarded-host: target.test"), "{out}");
    assert!(!out.contains("other.test"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preservehost_and_proxypassreverse() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--preservehost",
        "--member",
        &a.url(),
    ]);
    let out = raw(
        p.addr,
        b"GET /headers HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.to_ascii_lowercase().contains("host: front.test"),
        "{out}"
    );
    let out = raw(
        p.addr,
        b"GET /redirect HTTP/1.1\r\nHost: front.test:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.to_ascii_lowercase()
            .contains("location: http://front.test:8080/landing"),
        "{out}"
    );
    // HTTP/1.0 without Host: no front host to name, so the Location is made relative
    // rather than left with the member's address.
    let out = raw(p.addr, b"GET /redirect HTTP/1.0\r\n\r\n").await;
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("\r\nlocation: /landing\r\n"), "{out}");
    assert!(!out.contains(&a.url()), "{out}");
}

/// A member that redirects to another member's address (a canonical backend name, an
/// application that knows the whole cluster): the client sees the balancer's URL, as with
/// Apache's `ProxyPassReverse / balancer://name/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxypassreverse_rewrites_the_address_of_any_member() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--lbmethod",
        "byrequests",
        "--member",
        &a.url(),
        "--member",
        &b.url(),
    ]);
    let request = format!(
        "GET /redirect?port={} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
        b.addr.port()
    );
    for _ in 0..4 {
        let out = raw(p.addr, request.as_bytes()).await;
        assert!(
            out.to_ascii_lowercase()
                .contains("\r\nlocation: http://front.test/landing\r\n"),
            "{out}"
        );
        assert!(!out.contains(&b.url()), "{out}");
    }
    // Both answered: a's redirects too were made the balancer's.
    assert_eq!((a.hits(), b.hits()), (2, 2));
}

/// A member added through the balancer manager counts from then on: a redirect to its
/// address is left alone before (it is nobody's member), rewritten after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxypassreverse_covers_a_member_added_at_run_time() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (p, m) = Proxy::managed(&[a.url()]);
    let request = format!(
        "GET /redirect?port={} HTTP/1.0\r\nHost: front.test\r\n\r\n",
        b.addr.port()
    );
    let location = || async {
        let out = raw(p.addr, request.as_bytes()).await;
        out.lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("location: ")
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no location in {out}"))
    };
    assert_eq!(location().await, format!("{}/landing", b.url()));
    let nonce = manager_view(m).await["nonce"].as_str().unwrap().to_string();
    // Added disabled: a keeps answering, and b's address is a member's all the same.
    let action = format!(
        r#"{{"nonce":"{nonce}","balancer":"default","add":"{},status=+D"}}"#,
        b.url()
    );
    let req = hyper::Request::post(format!("http://{m}/api"))
        .header("content-type", "application/json")
        .body(balancer_support::full(action))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(member_view(&manager_view(m).await, &b.url()).is_some());
    // On fresh connections, so on whichever of lb-balancer's worker threads (each with a
    // member cache of its own) takes them.
    for _ in 0..8 {
        assert_eq!(location().await, "http://front.test/landing");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&["--listen", "127.0.0.1:0", "--member", &a.url()]);
    let c = client();
    const SIZE: u64 = 64 << 20;
    // Upload 64 MiB from a generated stream (never held whole).
    let chunk = Bytes::from(vec![b'y'; 256 * 1024]);
    let n = SIZE / chunk.len() as u64;
    let stream = futures_util::stream::iter((0..n).map(move |_| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(chunk.clone()))
    }));
    let body = http_body_util::StreamBody::new(stream).boxed();
    let req = hyper::Request::post(p.url("/upload")).body(body).unwrap();
    let resp = c.request(req).await.unwrap();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&text), format!("a {SIZE}"));
    // Download 64 MiB, counting frames as they come.
    let resp = c
        .request(
            hyper::Request::get(p.url(&format!("/download?bytes={SIZE}")))
                .body(balancer_support::full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f.unwrap().data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(got, SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let (p, m) = Proxy::managed(&[a.url()]);
    let busy = || first_member_busy(m);
    let mut s = open_websocket(p.addr).await;
    for msg in [&b"hello through the tunnel"[..], b"second frame"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    // An open tunnel keeps its member busy (bybusyness and `max` see it), until it closes.
    assert_eq!(busy().await, 1, "an open tunnel is not counted");
    drop(s);
    assert!(
        eventually(10, || async { busy().await == 0 }).await,
        "a closed tunnel is still counted"
    );
}

/// A connection to `addr` upgraded to a WebSocket (the test backend's `/ws` echoes).
async fn open_websocket(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"));
    s
}

/// A tunnel through which nothing passes for the response timeout is closed, which gives
/// its member's busy count back; before, a silent tunnel stayed open for good (the fourth
/// QA pass), and one whose peer vanished without a FIN held it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_after_the_response_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--manager",
        "127.0.0.1:0",
        "--timeout",
        "1",
        "--member",
        &a.url(),
    ]);
    let m = p.manager.unwrap();
    let busy = || first_member_busy(m);
    let mut s = open_websocket(p.addr).await;
    // Traffic keeps it open past the timeout: 6 echoes 300 ms apart.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"ping");
    }
    assert_eq!(busy().await, 1);
    // Then silence: closed, and the member is no longer busy.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent tunnel stayed open");
    assert!(eventually(10, || async { busy().await == 0 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_400_and_a_closed_connection_and_are_never_forwarded() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&["--listen", "127.0.0.1:0", "--member", &a.url()]);
    let shapes: [&[u8]; 9] = [
        // Userinfo in the target (RFC 9110 section 4.2.4), which would go on in
        // X-Forwarded-Host.
        b"GET http://u:p@other.example/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // A coding besides chunked would be dropped, not decoded.
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nHost x\r\n\r\n",
        // RFC 9112 section 3.2: two Host fields, or none in HTTP/1.1.
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",
    ];
    for shape in shapes {
        let out = raw(p.addr, shape).await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{}\n=> {out}",
            String::from_utf8_lossy(shape)
        );
    }
    // A first good request on the same connection is served, the bad one is not.
    let out = raw(
        p.addr,
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("HTTP/1.1 400"), "{out}");
    assert_eq!(a.hits(), 1, "a refused request reached the backend");
    // Neither after a request asking for an upgrade that the backend did not grant, nor
    // after a head whose lines end in a bare LF (as hyper accepts them).
    for first in [
        &b"GET /first HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n"[..],
        b"POST /first HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        // Nor after a chunked body whose trailer line ends in a bare LF: hyper reads the
        // lines up to the next empty CRLF line as trailers, so the guard must too.
        b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\nX-T: a\n\nGET /fake HTTP/1.1\r\nHost: x\r\nContent-Length: 82\r\n\r\n",
    ] {
        let mut sent = first.to_vec();
        sent.extend_from_slice(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        let out = raw(p.addr, &sent).await;
        // CONNECT is refused (405), and what follows is checked as a request.
        let first_status = if first.starts_with(b"CONNECT") {
            "HTTP/1.1 405"
        } else {
            "HTTP/1.1 200"
        };
        assert!(out.starts_with(first_status), "{out}");
        assert!(out.contains("HTTP/1.1 400"), "{out}");
    }
    assert_eq!(a.hits(), 4, "a refused request reached the backend");
    // Oversized head: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    assert!(
        raw(p.addr, big.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    // A request line alone that long: 414, as nginx and Apache answer it.
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let out = raw(p.addr, long.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 414"),
        "{}",
        &out[..out.len().min(200)]
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = raw(
        p.addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(a.hits(), 4);
    // A head size limit below hyper's own floor (8 KiB) holds too, whether the head
    // arrives whole or in pieces.
    let small = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &a.url(),
        "--maxheadsize",
        "1024",
    ]);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    assert!(
        raw(small.addr, head.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    let mut s = tokio::net::TcpStream::connect(small.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&head.as_bytes()[..1500]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(&head.as_bytes()[1500..]).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(a.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_bytes_after_a_bodiless_response_do_not_reach_the_next_request() {
    // A backend that sends a body after a 204 and after the head of a HEAD answer, a moment
    // later, on a kept-alive connection (a common application bug).
    let addr = scripted_member(|_, _, head| {
        let stray = Some((Duration::from_millis(50), &b"hello"[..]));
        if head.starts_with("GET /204 ") {
            (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), stray)
        } else if head.starts_with("HEAD ") {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                stray,
            )
        } else {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                None,
            )
        }
    })
    .await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--member",
        &format!("http://{addr}"),
    ]);
    let c = client();
    for first in [hyper::Method::GET, hyper::Method::HEAD] {
        let path = if first == hyper::Method::GET {
            "/204"
        } else {
            "/h"
        };
        let req = hyper::Request::builder()
            .method(first.clone())
            .uri(p.url(path))
            .body(balancer_support::full(""))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert!(resp.status().is_success(), "{first} {}", resp.status());
        let _ = resp.into_body().collect().await;
        // The stray bytes are on the kept-alive connection by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, _, body) = get(&c, &p.url("/x"), None).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "after {first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_map_to_502_and_504() {
    // A backend that answers garbage.
    let bad = member_replying_once(b"HTTP/1.1 2x0 Nope\r\n\r\n").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &format!("http://{bad}"),
    ]);
    let c = client();
    let (s, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!((s, body.as_str()), (502, "bad response from backend\n"));

    let a = Backend::start("a").await;
    let slow = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--timeout",
        "1",
        "--member",
        &a.url(),
    ]);
    let (s, _, body) = get(&c, &slow.url("/slow?ms=3000"), None).await;
    assert_eq!(s, 504, "{body}");
    assert!(body.contains("response timeout"), "{body}");
    // The log names the member of each failure, which the client is not told.
    let names = |p: &Proxy, member: String, what: &'static str| {
        let stderr = p.stderr.clone();
        move || {
            let found = stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&format!("member {member}: ")) && l.contains(what));
            async move { found }
        }
    };
    assert!(
        eventually(5, names(&p, bad.to_string(), "bad response")).await,
        "no log line names the member of the 502"
    );
    let a_addr = a.url().trim_start_matches("http://").to_string();
    assert!(
        eventually(5, names(&slow, a_addr, "response timeout")).await,
        "no log line names the member of the 504"
    );

    // Nothing listening: connect refused.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &format!("http://{gone}"),
    ]);
    let (s, _, body) = get(&c, &dead.url("/"), None).await;
    // The client learns what failed, not where: the address is for the log, with the
    // member put in error.
    assert_eq!((s, body.as_str()), (502, "backend connect failed\n"));
    let logged = |what: &'static str| {
        let stderr = dead.stderr.clone();
        let gone = gone.to_string();
        move || {
            let found = stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(what) && l.contains(&gone));
            async move { found }
        }
    };
    assert!(
        eventually(5, logged("in error for")).await,
        "no warning that the member is in error"
    );
    assert!(
        eventually(5, logged("backend connect failed")).await,
        "no warning of the failed request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_prefixes_reload_on_sighup_and_bad_files_are_reported() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = std::env::temp_dir().join(format!("lb-balancer-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("balancer.toml");
    let write = |members_b: &str| {
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\n\n[[balancer]]\nname = \"one\"\npath = \"/one\"\nmembers = [\"{}\"]\n\n\
                 [[balancer]]\nname = \"two\"\npath = \"/two\"\nmembers = [{members_b}]\n",
                a.url()
            ),
        )
        .unwrap();
    };
    write(&format!("\"{}\"", a.url()));
    let p = Proxy::start(&["--config", path.to_str().unwrap()]);
    let c = client();
    assert_eq!(get(&c, &p.url("/one/x"), None).await.2, "a");
    assert_eq!(get(&c, &p.url("/two/x"), None).await.2, "a");
    assert_eq!(get(&c, &p.url("/three"), None).await.0, 404);

    // A slow request in flight survives the reload.
    let slow = {
        let c = c.clone();
        let u = p.url("/two/slow?ms=1500");
        tokio::spawn(async move { get(&c, &u, None).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&format!("\"{}\"", b.url()));
    let status = std::process::Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let moved = eventually(10, || async {
        get(&c, &p.url("/two/x"), None).await.2 == "b"
    })
    .await;
    assert!(moved, "reload did not switch balancer two to b");
    assert_eq!(slow.await.unwrap().0, 200);

    // A bad file: one message naming file, line and key; non-zero exit.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[balancer]]\nname = \"x\"\nlbmethod = \"byrequests\"\nnofailover = \"perhaps\"\nmembers = [\"http://127.0.0.1:1\"]\n").unwrap();
    let (code, err) = run_to_exit(&["--config", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("{}:4: nofailover:", bad.display())),
        "{err}"
    );
    let (code, err) = run_to_exit(&["--member", "http://127.0.0.1:1,colour=red"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("colour"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_counters_and_manager_changes_and_applies_the_file() {
    let (a, b, c2) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let dir = std::env::temp_dir().join(format!("lb-balancer-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("balancer.toml");
    let write = |members: &[String]| {
        let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\n\n[[balancer]]\nname = \"app\"\n\
                 members = [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
    };
    write(&[a.url(), b.url()]);
    let (p, m) = Proxy::from_file_managed(&path);
    let c = client();
    let view = || manager_view(m);
    for _ in 0..10 {
        assert_eq!(get(&c, &p.url("/"), None).await.0, 200);
    }
    // The manager disables b.
    let nonce = view().await["nonce"].as_str().unwrap().to_string();
    let b_id = member_view(&view().await, &b.url()).unwrap()["id"].to_string();
    let req = hyper::Request::post(format!("http://{m}/api"))
        .header("content-type", "application/json")
        .body(balancer_support::full(format!(
            r#"{{"nonce":"{nonce}","balancer":"app","member":"{b_id}","status":"+D"}}"#
        )))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status().as_u16(), 200);
    let elected_a = member_view(&view().await, &a.url()).unwrap()["elected"]
        .as_u64()
        .unwrap();
    assert!(elected_a >= 5, "{elected_a}");

    let reload = || {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &p.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
    };
    // The file gains c and changes a's loadfactor; b's line is unchanged.
    write(&[format!("{},loadfactor=3", a.url()), b.url(), c2.url()]);
    reload();
    let reloaded = eventually(10, || async {
        member_view(&view().await, &c2.url()).is_some()
    })
    .await;
    assert!(reloaded, "c never appeared after the reload");
    let v = view().await;
    let (ma, mb) = (
        member_view(&v, &a.url()).unwrap(),
        member_view(&v, &b.url()).unwrap(),
    );
    assert!(ma["elected"].as_u64().unwrap() >= elected_a, "{ma}");
    assert_eq!(ma["loadfactor"], 3, "{ma}");
    assert_eq!(
        mb["flags"]["disabled"], true,
        "the manager's change survives: {mb}"
    );
    let before_b = b.hits();
    for _ in 0..8 {
        let body = get(&c, &p.url("/"), None).await.2;
        assert!(body == "a" || body == "c", "{body}");
    }
    assert_eq!(b.hits(), before_b);

    // b leaves the file: it leaves the balancer.
    write(&[format!("{},loadfactor=3", a.url()), c2.url()]);
    reload();
    let gone = eventually(10, || async {
        member_view(&view().await, &b.url()).is_none()
    })
    .await;
    assert!(gone, "b is still a member after leaving the file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_and_member() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let a = Backend::start_on("a6", "[::1]:0".parse().unwrap()).await;
    let url = format!("http://{}", a.addr);
    let p = Proxy::start(&["--listen", "[::1]:0", "--member", &url]);
    assert!(p.addr.is_ipv6());
    let c = client();
    let (s, _, body) = get(&c, &p.url("/headers"), None).await;
    assert_eq!(s, 200);
    assert!(body.starts_with("a6"));
    assert!(body.contains("x-forwarded-for: ::1"), "{body}");
    // An IPv4 client of a dual-stack listener is named by its IPv4 address, not as
    // ::ffff:a.b.c.d.
    let dual = Proxy::start(&["--listen", "[::]:0", "--member", &url]);
    let v4 = format!("http://127.0.0.1:{}/headers", dual.addr.port());
    let (s, _, body) = get(&c, &v4, None).await;
    assert_eq!(s, 200);
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    assert!(!body.contains("ffff"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_gets_408_and_is_not_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--headtimeout",
        "1",
        "--member",
        &a.url(),
    ]);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    // Slowloris: a head that never ends.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out))
        .await
        .expect("connection not closed")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert_eq!(a.hits(), 0);
    // A bad limit on the command line is refused.
    let (code, err) = run_to_exit(&["--headtimeout", "0", "--member", &a.url()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--headtimeout 0"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failontimeout_puts_the_slow_member_in_error() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--timeout",
        "1",
        "--failontimeout",
        "--workers",
        "1",
        "--member",
        &a.url(),
        "--member",
        &b.url(),
    ]);
    let c = client();
    // Round robin: the first request goes to a, which is too slow.
    let (s, _, body) = get(&c, &p.url("/slow?ms=2500"), None).await;
    assert_eq!(s, 504, "{body}");
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "b");
    }
    assert_eq!(a.hits(), before, "a member in error still got requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_and_failontimeout_puts_the_member_in_error() {
    let s = Backend::start("s").await;
    let a = Backend::start("a").await;
    let standby = member(&a, "status=+H");
    let args = |failontimeout: bool| {
        let mut v = vec!["--listen", "127.0.0.1:0", "--timeout", "1"];
        if failontimeout {
            v.push("--failontimeout");
        }
        v
    };
    let p = Proxy::start(
        &[
            args(false),
            vec!["--member", &s.url(), "--member", &standby],
        ]
        .concat(),
    );
    // The body stops for 3 s after its first part; the timeout is 1 s. The client gets the
    // head and that part, then the connection closes: a chunked body without its last
    // chunk, a Content-Length one short.
    let get = format!("GET /stall?ms=3000 HTTP/1.1\r\nHost: {}\r\n\r\n", p.addr);
    let out = raw(p.addr, get.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("s-start;"), "{out}");
    assert!(
        !out.contains("s-end"),
        "the stalled body was waited for: {out}"
    );
    assert!(!out.ends_with("0\r\n\r\n"), "{out}");
    // A request with a body goes through hyper's client: the same.
    let post = format!(
        "POST /stall?ms=3000&cl=1 HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\r\nabc",
        p.addr
    );
    let out = raw(p.addr, post.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("content-length: 13"), "{out}");
    assert!(out.ends_with("s-start;"), "{out}");
    // A body slower in all than the timeout, but never quiet for that long, comes whole,
    // on either path.
    let drip = "/drip?ms=400&n=6";
    let whole = "s0;s1;s2;s3;s4;s5;";
    assert_eq!(get_body(&p, drip).await, whole);
    let c = client();
    let post = hyper::Request::post(p.url(drip))
        .body(balancer_support::full("abc"))
        .unwrap();
    let resp = c.request(post).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, whole);
    // Without failontimeout, the member stays in use.
    assert_eq!(get_body(&p, "/").await, "s");

    // With it, the stalled member is in error: the hot standby takes the traffic. A stalled
    // body read through hyper's client (a POST), then one read directly (a GET).
    let post = format!(
        "POST /stall?ms=3000 HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\r\nabc",
        p.addr
    );
    for request in [post, get] {
        let p =
            Proxy::start(&[args(true), vec!["--member", &s.url(), "--member", &standby]].concat());
        let out = raw(p.addr, request.as_bytes()).await;
        assert!(out.contains("s-start;") && !out.contains("s-end"), "{out}");
        let before = s.hits();
        for _ in 0..3 {
            assert_eq!(get_body(&p, "/").await, "a");
        }
        assert_eq!(s.hits(), before, "a member in error still got requests");
    }
}

async fn get_body(p: &Proxy, path: &str) -> String {
    get(&client(), &p.url(path), None).await.2
}

/// Members whose settings leave requests without a route nowhere to go: accepted, but
/// lb-balancer says so at start, and such requests get 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_take_no_new_request_are_reported() {
    for (a_keys, b_keys, warning) in [
        (
            "loadfactor=0",
            "loadfactor=0",
            "every member has loadfactor 0",
        ),
        (
            "status=+D",
            "status=+S",
            "every member is disabled (+D) or stopped (+S)",
        ),
    ] {
        let a = Backend::start("a").await;
        let b = Backend::start("b").await;
        let (ma, mb) = (member(&a, a_keys), member(&b, b_keys));
        let p = Proxy::start(&["--listen", "127.0.0.1:0", "--member", &ma, "--member", &mb]);
        let warned = eventually(10, || async {
            p.stderr.lock().unwrap().iter().any(|l| l.contains(warning))
        })
        .await;
        assert!(warned, "{:?}", p.stderr.lock().unwrap());
        assert_eq!(get(&client(), &p.url("/"), None).await.0, 503);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_inserted_cookie() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "route=s1"), member(&b, "route=s2"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--cookie",
        "SRV insert indirect nocache httponly maxage 600",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let out = raw(
        p.addr,
        b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("set-cookie: srv=s"), "{out}");
    assert!(out.contains("; Path=/; Max-Age=600; HttpOnly"), "{out}");
    assert!(lower.contains("cache-control: private"), "{out}");
    // A member's own Cache-Control stays beside it: `private` alone would let a browser
    // store what the member said must not be.
    let out = raw(
        p.addr,
        b"GET /nostore HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(out.contains("set-cookie: srv=s"), "{out}");
    assert!(
        out.contains("cache-control: no-store, max-age=0\r\n"),
        "{out}"
    );
    assert!(out.contains("cache-control: private\r\n"), "{out}");
    // With the cookie: same member, no new cookie, and (indirect) the member never sees it.
    for _ in 0..4 {
        let out = raw(p.addr, b"GET /headers HTTP/1.1\r\nHost: x\r\nCookie: SRV=s2; other=1\r\nConnection: close\r\n\r\n").await;
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(body.starts_with("b\n"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("set-cookie"), "{out}");
        assert!(
            body.contains("cookie: other=1") && !body.contains("SRV"),
            "{body}"
        );
    }
}

/// A client that shuts its sending side down after its request still gets the response, as
/// with HAProxy; with `--abortonclose` the request is given up instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_is_answered_unless_abortonclose() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let url = a.url();
    for (abort, ms) in [(false, 200), (true, 3000)] {
        let mut args = vec!["--listen", "127.0.0.1:0", "--member", &url];
        if abort {
            args.push("--abortonclose");
        }
        let p = Proxy::start(&args);
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let req = format!("GET /slow?ms={ms} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the connection is closed")
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        if abort {
            assert!(out.is_empty(), "{out}");
        } else {
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            assert!(out.ends_with("\r\n\r\na"), "{out}");
        }
    }
}

/// A member's `max` counts the requests of every worker thread: with two workers and
/// `max=1`, the backend never sees two requests at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_max_holds_across_worker_threads() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    let (n, p) = (now.clone(), peak.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (n, p) = (n.clone(), p.clone());
            let svc = hyper::service::service_fn(move |_req| {
                let (n, p) = (n.clone(), p.clone());
                async move {
                    p.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"done")),
                    ))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    let member = format!("http://{backend},max=1");
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--member",
        &member,
    ]);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let addr = p.addr;
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut out = Vec::new();
                tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
                    .await
                    .expect("an answer")
                    .unwrap();
                String::from_utf8_lossy(&out).into_owned()
            })
        })
        .collect();
    let mut answered = 0;
    for t in tasks {
        let out = t.await.unwrap();
        if out.starts_with("HTTP/1.1 200") {
            answered += 1;
        } else {
            assert!(out.starts_with("HTTP/1.1 503"), "{out}");
        }
    }
    assert!(answered >= 1);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "requests at once on a max=1 member"
    );
}

/// An upload is timed on the client's side: a client that stalls its body gets 408 after
/// the idle timeout, an upload that keeps moving may outlast the response timeout, a client
/// that goes away mid-upload is not the backend's failure, and none of them puts the member
/// in error (the fourth QA pass: they got 504s, or 502s logged against the member, and with
/// `--failontimeout` the member was put in error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_timed_on_the_client_side_and_never_blamed_on_the_member() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--timeout",
        "1",
        "--failontimeout",
        "--forcerecovery",
        "off",
        "--idletimeout",
        "2",
        "--member",
        &a.url(),
    ]);
    let answer = |mut s: tokio::net::TcpStream| async move {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "no answer within 10 s");
        String::from_utf8_lossy(&got).into_owned()
    };
    // 10 of 1000 bytes, then nothing.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let text = answer(s).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("client request body stalled"), "{text}");
    // 20 pieces 150 ms apart: 3 s of upload against a 1 s response timeout.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n",
    )
    .await
    .unwrap();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(&[b'u'; 1000]).await.unwrap();
    }
    let text = answer(s).await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("a 20000"), "{text}");
    // A client that goes away half-way through its upload.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'u'; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    // The member was never put in error: with --forcerecovery off it would refuse this.
    let c = client();
    let (status, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(!log.contains("in error"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    // With --retryon, a small body of an idempotent request is read whole before the first
    // try, to be sent again: a stall there gets its 408 too.
    let r = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--retryon",
        "502",
        "--idletimeout",
        "2",
        "--member",
        &a.url(),
    ]);
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let text = answer(s).await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
}

/// `--clienttimeout` times a client's silences in the middle of an exchange apart from the
/// keep-alive timeout, as Apache's `Timeout` and `KeepAliveTimeout` (or HAProxy's `timeout
/// client` and `timeout http-keep-alive`) are: a short `--idletimeout` closes idle
/// connections soon, and an upload may still pause for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_timeout_is_apart_from_the_keep_alive_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--idletimeout",
        "1",
        "--clienttimeout",
        "8",
        "--member",
        &a.url(),
    ]);
    // An upload that pauses for 2 s: twice the keep-alive timeout, a quarter of the client one.
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n0123456789")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.write_all(b"0123456789").await.unwrap();
    let mut head = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await;
    assert!(read.is_ok(), "no answer within 10 s");
    let head = String::from_utf8_lossy(&head).into_owned();
    assert_eq!(head, "HTTP/1.1 200", "the paused upload was cut off");
    // A connection left idle is closed after about the keep-alive timeout, not the client
    // timeout.
    let mut idle = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the idle connection was still open after 10 s"
    );
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}, not after the 1 s keep-alive timeout",
        started.elapsed()
    );
    // A bad value names its flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb-balancer"))
        .args(["--clienttimeout", "0", "--member", &a.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--clienttimeout 0"), "{err}");
}

/// A health check lb-balancer cannot make because it is out of file descriptors says
/// nothing of the member. Before, each such check failed to connect and counted against its
/// member: with every member checked, all of them went down together, and stayed down for
/// `hcpasses` checks after the shortage ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_lb_cannot_make_for_want_of_descriptors_take_no_member_down() {
    use tokio::io::AsyncWriteExt;
    let a = Backend::start("a").await;
    let member = format!(
        "{},hcmethod=GET,hcuri=/health,hcinterval=100ms,hcfails=1,hcpasses=1000",
        a.url()
    );
    let p = Proxy::start_with_nofile(
        "-n 40",
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--member",
            &member,
        ],
    );
    let c = client();
    let (status, _, _) = get(&c, &p.url("/"), None).await;
    assert_eq!(status, 200);
    drop(c);
    // Clients in the middle of a request head take the descriptors, one each, until none is
    // left (lb-balancer accepts a connection once it has data), and more whenever one is
    // freed (a connection of the client above closing late), until a check has failed for
    // want of one (one every 100 ms) and lb-balancer says so.
    let said = || {
        p.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("health check: not counted"))
    };
    let mut clients = Vec::new();
    for _ in 0..400 {
        if said() {
            break;
        }
        if free_descriptors(p.pid(), 40) > 0 && clients.len() < 100 {
            let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            clients.push(s);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(said(), "no check failed for want of descriptors in 10 s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(clients);
    for _ in 0..100 {
        if free_descriptors(p.pid(), 40) > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = client();
    let (status, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "a"),
        "the member was taken down"
    );
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(!log.contains("health check: down"), "{log}");
}

/// Running out of file descriptors is lb-balancer's own shortage: the clients that meet it
/// get 503, and no member is put in error for it (the fourth QA pass: every member was, for
/// its `retry` time, and with `--forcerecovery off` every request got 503 long after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_puts_no_member_in_error() {
    let a = Backend::start("a").await;
    let p = Proxy::start_with_nofile(
        "-n 40",
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--forcerecovery",
            "off",
            "--member",
            &a.url(),
        ],
    );
    let at_rest = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .unwrap()
        .count();
    assert!(at_rest < 30, "{at_rest} descriptors open at rest");
    // More clients at once than there are descriptors left, each needing a second one
    // for its backend.
    let started = tokio::time::Instant::now();
    let addr = p.addr;
    let clients: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move {
                raw(
                    addr,
                    b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in clients {
        answers.push(c.await.unwrap());
    }
    let short = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503 ") && a.contains("out of resources"))
        .count();
    assert!(short > 0, "no request met the shortage: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("HTTP/1.1 503 ") || a.starts_with("HTTP/1.1 200 ")),
        "{answers:?}"
    );
    let (status, _, body) = get(&client(), &p.url("/"), None).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(log.contains("out of local resources"), "{log}");
    assert!(!log.contains("in error"), "{log}");
    // Failed accepts are retried every 50 ms, and the shortage meets every request while
    // it lasts: each is said once a second at most.
    for what in ["accept failed", "out of local resources"] {
        let lines = log.matches(what).count() as u64;
        assert!(
            lines <= started.elapsed().as_secs() + 1,
            "{lines} lines of {what:?} in {:?}: {log}",
            started.elapsed()
        );
    }
}

/// A client that stops reading its response is disconnected after the client timeout (not
/// the much longer keep-alive timeout here), which gives its member's busy count (and `max`
/// slot) back; before, it held them for as long as it kept the connection open (the fourth
/// QA pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_the_client_timeout() {
    use tokio::io::AsyncWriteExt;
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--manager",
        "127.0.0.1:0",
        "--idletimeout",
        "60",
        "--clienttimeout",
        "2",
        "--member",
        &a.url(),
    ]);
    let m = p.manager.unwrap();
    let busy = || first_member_busy(m);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(p.addr).await.unwrap();
    s.write_all(b"GET /download?bytes=1000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read: the response fills the socket buffers and lb-balancer's writes wait.
    assert!(eventually(5, || async { busy().await == 1 }).await);
    assert!(
        eventually(15, || async { busy().await == 0 }).await,
        "the member stayed busy for a client that reads nothing"
    );
    // The connection was closed: what is left to read ends.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await;
    assert!(read.is_ok(), "the connection is still open");
    drop(s);
}

/// lb-balancer raises its soft limit on open files to the hard one at start, as HAProxy
/// does: a soft limit of 64 left it refusing clients (the fourth QA pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let a = Backend::start("a").await;
    let p = Proxy::start_with_nofile(
        "-S -n 64 && ulimit -H -n 1000",
        &["--listen", "127.0.0.1:0", "--member", &a.url()],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["1000", "1000"], "{open_files}");
}

/// A member that answers before it has read the whole request body (a streaming echo) and
/// then waits for the rest is waiting on the client: when the client stalls, the response
/// body's timeout must not blame the member (the review of the fourth QA pass's fixes: it
/// put the member in error, and the next request got 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_to_a_member_that_answered_at_once_is_not_the_members_fault() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--timeout",
        "1",
        "--failontimeout",
        "--forcerecovery",
        "off",
        "--idletimeout",
        "3",
        "--member",
        &a.url(),
    ]);
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /echostream HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no end within 10 s");
    let text = String::from_utf8_lossy(&got);
    // The head and the echo went out before the stall; then the connection is cut.
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains("0123456789"), "{text}");
    let (status, _, body) = get(&client(), &p.url("/"), None).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(!log.contains("in error"), "{log}");
}

/// `members` test backends, and lb-balancer in front of them on one worker with `extra`
/// flags under `ulimit -n 40`, with more than 10 descriptors still free.
async fn short_of_descriptors(members: usize, extra: &[&str]) -> (Vec<Backend>, Proxy) {
    let mut backends = Vec::new();
    for i in 0..members {
        backends.push(Backend::start(&format!("b{i}")).await);
    }
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--workers", "1"]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect();
    for b in &backends {
        args.extend(["--member".to_string(), b.url()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proxy::start_with_nofile("-n 40", &args);
    assert!(free_descriptors(p.pid(), 40) > 10);
    (backends, p)
}

/// How many descriptors lb-balancer with `pid` can still open under a limit of `limit`:
/// those it has open numbered below the limit count, not one it inherited above it.
fn free_descriptors(pid: u32, limit: usize) -> usize {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|&fd| fd < limit)
        .count();
    limit - open
}

/// Sends `request` on `s` and reads one response to it (its head and a `Content-Length`
/// body), leaving the connection open; empty when none came within 10 s.
async fn exchange_kept_open(s: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request).await.unwrap();
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_default()
}

/// Idle keep-alive connections to members hold descriptors too: when lb-balancer runs out
/// and cannot open a connection to the member a request goes to, it closes its idle ones
/// (to the other members) and tries once more, as HAProxy gives idle server connections
/// back under descriptor pressure. Before, each request past the limit got 503 while the
/// idle connections kept their descriptors (a QA pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_out_of_descriptors_is_served_by_closing_idle_member_connections() {
    let (backends, p) = short_of_descriptors(40, &["--forcerecovery", "off"]).await;
    // One request after another, each to the next member (byrequests): each leaves an idle
    // connection to its member behind, until those and the client's take every descriptor.
    let mut answers = Vec::new();
    for _ in 0..backends.len() {
        answers.push(
            raw(
                p.addr,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await,
        );
    }
    let served = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200 "))
        .count();
    assert_eq!(served, answers.len(), "{answers:?}");
    // Every member was used, each once.
    assert!(backends.iter().all(|b| b.hits() == 1));
    let log = p.stderr.lock().unwrap().join("\n");
    // Released by the connect that failed, or by the accept before it, whichever met the
    // shortage first (it depends on when the previous client's descriptor was closed).
    assert!(log.contains("idle backend connections"), "{log}");
    assert!(!log.contains("out of local resources"), "{log}");
}

/// When clients kept alive and idle connections to members take every descriptor,
/// lb-balancer's accept fails (Linux's `accept` needs a free descriptor before it looks at
/// the queue): it then closes the idle member connections, and a new client is served.
/// Before, the client waited, unaccepted, for as long as the idle connections stayed (the
/// pool's idle timeout, 90 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_served_when_idle_member_connections_held_the_last_descriptors() {
    let (backends, p) = short_of_descriptors(4, &[]).await;
    // Clients kept alive, one after another, each request to the next member: each of the
    // first four leaves an idle connection to its member (two descriptors), each of the
    // next ones takes one and gives it back (one). Until one takes the last descriptor.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut clients = Vec::new();
    let mut last = false;
    for _ in 0..40 {
        let free = free_descriptors(p.pid(), 40);
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let answer = exchange_kept_open(&mut s, request).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
        clients.push(s);
        if free == 1 {
            last = true;
            break;
        }
    }
    assert!(last, "the clients never took the last descriptor");
    assert!(backends.iter().all(|b| b.hits() > 1));
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let answer = exchange_kept_open(&mut s, request).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
    let log = p.stderr.lock().unwrap().join("\n");
    assert!(
        log.contains("accept failed") && log.contains("idle backend connections"),
        "{log}"
    );
    drop(clients);
}

/// A member that reads each request head on its first 16 connections and writes what
/// `answer(connection, request, head)` gives: a reply, and bytes to send unasked a moment
/// after it. Request bodies are not read: for bodiless requests, or one per connection.
async fn scripted_member<F>(answer: F) -> std::net::SocketAddr
where
    F: Fn(usize, usize, &str) -> (Vec<u8>, Option<(Duration, &'static [u8])>)
        + Send
        + Sync
        + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        for conn in 0..16 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for nth in 0..100 {
                    let end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let (reply, stray) = answer(conn, nth, &head);
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                    if let Some((after, bytes)) = stray {
                        tokio::time::sleep(after).await;
                        if s.write_all(bytes).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A member that answers each request with its path; on its first connection, it sends a
/// second response nobody asked for `delay` after the first (a backend that writes a body
/// after a 204, or more than its Content-Length).
async fn member_with_a_stray_response(delay: Duration) -> std::net::SocketAddr {
    scripted_member(move |conn, nth, head| {
        let path = head.split(' ').nth(1).unwrap_or("?");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
            path.len()
        );
        let stray = (conn == 0 && nth == 0).then_some((
            delay,
            &b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nSTRAY!"[..],
        ));
        (reply.into_bytes(), stray)
    })
    .await
}

/// RFC 9112 section 9.3.2: a response goes to the request it answers. A response that
/// arrived on an idle kept-alive member connection answers no request: taken as the next
/// request's answer, it would give every later client on that connection the response
/// meant for the client before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_response_on_an_idle_member_connection_reaches_no_client() {
    let addr = member_with_a_stray_response(Duration::from_millis(200)).await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--member",
        &format!("http://{addr}"),
    ]);
    let ask = |path: &'static str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        async move { raw(p.addr, req.as_bytes()).await }
    };
    let out = ask("/first").await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("/first"),
        "{out}"
    );
    // The stray response arrives while the connection is idle in the pool.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for path in ["/u1", "/u2", "/u3", "/u4"] {
        let out = ask(path).await;
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with(path),
            "{path} got: {out}"
        );
    }
}

/// A member that reads a request on each of its first four connections, writes `reply` and
/// closes.
async fn member_replying_once(reply: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply).await;
        }
    });
    addr
}

/// RFC 9112 section 6.3: a response with both Transfer-Encoding and Content-Length is an
/// error to a proxy that does not remove the length. Whether the request had a body (hyper's
/// client) or not (the direct one), the client gets 502, never the length with a body of
/// another size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_both_transfer_encoding_and_content_length_is_a_502() {
    let addr = scripted_member(|_, _, _| {
        let both = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n0\r\n\r\n";
        (both.as_bytes().to_vec(), None)
    })
    .await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &format!("http://{addr}"),
    ]);
    for req in [
        &b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    ] {
        let out = raw(p.addr, req).await;
        assert!(
            out.starts_with("HTTP/1.1 502"),
            "{}\n=> {out}",
            String::from_utf8_lossy(req)
        );
    }
}

/// A response the member cuts off in its body reaches the client cut off, and the log says
/// which member did it (at the default level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_off_by_the_member_is_logged() {
    // Closed 93 bytes short.
    let addr = member_replying_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly 7").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--member",
        &format!("http://{addr}"),
    ]);
    // The client gets no complete response: nothing, or the head and a short body, as
    // far as hyper had written when the body failed.
    let out = raw(
        p.addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.len() < 100, "{out}");
    let logged = || {
        p.stderr.lock().unwrap().iter().any(|l| {
            l.contains(&format!(
                "balancer default: member {addr}: response body failed"
            ))
        })
    };
    assert!(
        eventually(5, || async { logged() }).await,
        "{:?}",
        p.stderr.lock().unwrap()
    );
}

/// A browser's cookie jar, as far as `Path` goes (RFC 6265): a cookie is kept per name and
/// path (`Path=` or the request's default path, section 5.1.4), sent back only on request
/// paths it path-matches, longer paths first (section 5.4).
#[derive(Default)]
struct CookieJar(Vec<(String, String, String)>);

impl CookieJar {
    /// Keeps the cookie of a `Set-Cookie` answer to a request for `request_path`.
    fn store(&mut self, request_path: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        let default_path = match request_path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &request_path[..i],
        };
        let path = parts
            .filter_map(|a| a.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case("path"))
            .map_or(default_path, |(_, v)| v);
        self.0.retain(|(n, p, _)| !(n == name && p == path));
        self.0.push((name.into(), path.into(), value.into()));
    }

    /// The `Cookie` field for a request for `path`.
    fn header(&self, path: &str) -> Option<String> {
        let path_match = |cookie_path: &str| {
            path == cookie_path
                || (path.starts_with(cookie_path)
                    && (cookie_path.ends_with('/') || path[cookie_path.len()..].starts_with('/')))
        };
        let mut sent: Vec<_> = self.0.iter().filter(|(_, p, _)| path_match(p)).collect();
        sent.sort_by_key(|(_, p, _)| std::cmp::Reverse(p.len()));
        let pairs: Vec<String> = sent.iter().map(|(n, _, v)| format!("{n}={v}")).collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

/// Two balancers on `/app` and `/api` with one cookie name, as the README's and Apache's
/// `ROUTEID` recipe both suggest: each sets its cookie for its own path, so a browser that
/// uses both keeps both sessions (with `Path=/` for both, each balancer overwrote the
/// other's route on every request). Requests to the mount itself (`/app`) carry the cookie
/// too. The HAProxy inserted cookie is scoped the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_on_two_paths_keep_their_sessions_with_one_cookie_name() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    ];
    let [a, b, c, d] = &backends;
    let dir = balancer_support::Dir::new("two-sticky");
    for api_sticky in ["stickysession = \"ROUTEID\"", "cookie = \"ROUTEID insert\""] {
        let path = dir.write(
            "two.toml",
            &format!(
                "listen = \"127.0.0.1:0\"\n\n[[balancer]]\nname = \"app\"\npath = \"/app/\"\n\
                 stickysession = \"ROUTEID\"\nmembers = [\"{}\", \"{}\"]\n\n\
                 [[balancer]]\nname = \"api\"\npath = \"/api\"\n{api_sticky}\nmembers = [\"{}\", \"{}\"]\n",
                member(a, "route=ra"),
                member(b, "route=rb"),
                member(c, "route=rc"),
                member(d, "route=rd"),
            ),
        );
        let p = Proxy::start(&["--config", &path]);
        let http = client();
        let mut jar = CookieJar::default();
        let mut first: [Option<String>; 2] = [None, None];
        let mut set_cookies = Vec::new();
        for round in 0..4 {
            for (i, path) in ["/app/x", "/api/x"].into_iter().enumerate() {
                let (s, set, body) = get(&http, &p.url(path), jar.header(path).as_deref()).await;
                assert_eq!(s, 200, "{api_sticky}: {path}");
                if let Some(set) = set {
                    jar.store(path, &set);
                    set_cookies.push(set);
                }
                let was = first[i].get_or_insert_with(|| body.clone());
                assert_eq!(
                    &body, was,
                    "{api_sticky}: round {round}: {path} moved; cookies set: {set_cookies:?}"
                );
            }
            // The mount itself gets the cookie back and stays on the member.
            let cookie = jar.header("/app");
            assert!(cookie.is_some(), "{api_sticky}: no cookie sent to /app");
            let (_, set, body) = get(&http, &p.url("/app"), cookie.as_deref()).await;
            assert_eq!(Some(&body), first[0].as_ref(), "{api_sticky}: /app");
            assert!(set.is_none(), "{api_sticky}: /app set {set:?}");
        }
        // One cookie per balancer, each set once, for its own path.
        assert_eq!(set_cookies.len(), 2, "{api_sticky}: {set_cookies:?}");
        assert!(set_cookies[0].ends_with("; Path=/app"), "{set_cookies:?}");
        assert!(set_cookies[1].contains("; Path=/api"), "{set_cookies:?}");
        // `/apple` is neither balancer's: no cookie goes there.
        assert_eq!(jar.header("/apple"), None);
    }
}

/// Sends `method path` to the manager on `m` with `headers`; returns (status, location,
/// body).
async fn manager_request(
    m: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Option<String>, String) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{m}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(balancer_support::full(body)).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("request timed out")
        .unwrap();
    let s = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (s, loc, String::from_utf8_lossy(&body).into_owned())
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");

/// The message a form post's redirect shows on the page.
async fn form_message(m: std::net::SocketAddr, body: String) -> String {
    let (s, loc, text) = manager_request(m, "POST", "/", &[FORM], body).await;
    assert_eq!(s, 303, "{text}");
    let (_, _, page) = get(&client(), &format!("http://{m}{}", loc.unwrap()), None).await;
    page.split("id=\"msg\">")
        .nth(1)
        .and_then(|s| s.split("</p>").next())
        .unwrap_or_default()
        .to_string()
}

/// `(url, route)` of every member of the first balancer.
async fn member_routes(m: std::net::SocketAddr) -> Vec<(String, String)> {
    let v = manager_view(m).await;
    v["balancers"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["url"].as_str().unwrap().to_string(),
                m["route"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The manager refuses to give a member a route another member has, as the command line
/// and the file do: sticky sessions to that route would all go to one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_refuses_a_route_another_member_has() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (_p, m) = Proxy::managed(&[member(&a, "route=a"), member(&b, "route=b")]);
    let nonce = manager_view(m).await["nonce"].as_str().unwrap().to_string();
    let before = member_routes(m).await;
    let dup = format!(
        "duplicate route &quot;a&quot; (also member {}): sticky sessions would all go to one of them",
        a.url()
    );
    // The form: b renamed to a; a member added with route a.
    let msg = form_message(m, format!("nonce={nonce}&b=default&w=1&lf=2&wr=a")).await;
    assert_eq!(msg, dup);
    let msg = form_message(
        m,
        format!("nonce={nonce}&b=default&add=http://127.0.0.1:9,route=a"),
    )
    .await;
    assert_eq!(msg, dup);
    // The JSON API, by route change and by add.
    for action in [
        r#""member":1,"route":"a""#.to_string(),
        r#""add":"http://127.0.0.1:9,route=a""#.to_string(),
    ] {
        let (s, _, body) = manager_request(
            m,
            "POST",
            "/api",
            &[JSON],
            format!(r#"{{"nonce":"{nonce}","balancer":"default",{action}}}"#),
        )
        .await;
        assert_eq!(s, 400, "{action}: {body}");
        assert!(
            body.contains(&format!(
                "duplicate route \\\"a\\\" (also member {})",
                a.url()
            )),
            "{body}"
        );
    }
    assert_eq!(member_routes(m).await, before, "a refused change was made");
    let v = manager_view(m).await;
    assert_eq!(v["balancers"][0]["members"][1]["loadfactor"], 1);
}

/// A misspelt JSON key or an unknown form flag is refused by name and changes nothing,
/// rather than answering success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_refuses_unknown_fields_and_flags_by_name() {
    let a = Backend::start("a").await;
    let (_p, m) = Proxy::managed(&[a.url()]);
    let nonce = manager_view(m).await["nonce"].as_str().unwrap().to_string();
    let (s, _, body) = manager_request(
        m,
        "POST",
        "/api",
        &[JSON],
        format!(
            r#"{{"nonce":"{nonce}","balancer":"default","member":0,"loadfactor":2,"wieght":3}}"#
        ),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("unknown field \\\"wieght\\\""), "{body}");
    let member = || async {
        let v = manager_view(m).await;
        let m = &v["balancers"][0]["members"][0];
        (
            m["loadfactor"].as_u64().unwrap(),
            m["flags"]["disabled"].as_bool().unwrap(),
        )
    };
    assert_eq!(member().await, (1, false));
    // D set, then a form with an unknown flag box: refused, D stays.
    let (s, _, body) = manager_request(
        m,
        "POST",
        "/api",
        &[JSON],
        format!(r#"{{"nonce":"{nonce}","balancer":"default","member":0,"status":"+D"}}"#),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    for (field, wanted) in [
        ("X=on", "unknown flag \"X\""),
        ("weight=3", "unknown form field \"weight\""),
    ] {
        let (s, _, body) = manager_request(
            m,
            "POST",
            "/",
            &[FORM],
            format!("nonce={nonce}&b=default&w=0&lf=4&flags=1&{field}"),
        )
        .await;
        assert_eq!(s, 400, "{body}");
        assert!(body.contains(wanted), "{body}");
    }
    assert_eq!(member().await, (1, true));
}

/// DNS rebinding: a page whose name was pointed at 127.0.0.1 reaches the manager from
/// loopback, but with its own name in Host and Origin. It can read nothing and change
/// nothing; the operator's own requests (an IP address, localhost, a configured name) pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_refuses_a_foreign_host_or_origin() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--manager",
        "127.0.0.1:0",
        "--manager-host",
        "lb1.test",
        "--member",
        &a.url(),
    ]);
    let m = p.manager.unwrap();
    let port = m.port();
    let evil_host = format!("attacker.example:{port}");
    let evil_origin = format!("http://attacker.example:{port}");
    let (s, _, body) = manager_request(
        m,
        "GET",
        "/api",
        &[("host", evil_host.as_str())],
        String::new(),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body.contains("attacker.example") && !body.contains("nonce"),
        "{body}"
    );
    let nonce = manager_view(m).await["nonce"].as_str().unwrap().to_string();
    let action = format!(r#"{{"nonce":"{nonce}","balancer":"default","member":0,"status":"+D"}}"#);
    let own_host = format!("127.0.0.1:{port}");
    let own_origin = format!("http://127.0.0.1:{port}");
    for (headers, wanted) in [
        // The rebinding page: a "simple" cross-site request, no preflight.
        (
            vec![
                ("host", evil_host.as_str()),
                ("origin", evil_origin.as_str()),
                ("content-type", "text/plain"),
            ],
            403,
        ),
        // Our Host, another page's Origin.
        (
            vec![
                ("host", own_host.as_str()),
                ("origin", evil_origin.as_str()),
                JSON,
            ],
            403,
        ),
        // Our Host and Origin, but not JSON.
        (
            vec![
                ("host", own_host.as_str()),
                ("origin", own_origin.as_str()),
                ("content-type", "text/plain"),
            ],
            415,
        ),
    ] {
        let (s, _, body) = manager_request(m, "POST", "/api", &headers, action.clone()).await;
        assert_eq!(s, wanted, "{headers:?}: {body}");
    }
    let form = format!("nonce={nonce}&b=default&w=0&flags=1&D=on");
    let (s, _, _) = manager_request(
        m,
        "POST",
        "/",
        &[
            ("host", evil_host.as_str()),
            ("origin", evil_origin.as_str()),
            FORM,
        ],
        form,
    )
    .await;
    assert_eq!(s, 403);
    let c = client();
    assert_eq!(
        get(&c, &p.url("/"), None).await.0,
        200,
        "a member was disabled"
    );
    // The configured name, localhost and the address pass.
    for host in [
        format!("lb1.test:{port}"),
        format!("localhost:{port}"),
        own_host.clone(),
    ] {
        let (s, _, body) =
            manager_request(m, "GET", "/", &[("host", host.as_str())], String::new()).await;
        assert_eq!(s, 200, "{host}: {body}");
    }
    let origin = format!("http://lb1.test:{port}");
    let host = format!("lb1.test:{port}");
    let (s, _, body) = manager_request(
        m,
        "POST",
        "/api",
        &[("host", host.as_str()), ("origin", origin.as_str()), JSON],
        action,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(get(&c, &p.url("/"), None).await.0, 503);
}

/// An HTTP/2 (prior knowledge) client connection to `p`, its streams' initial window
/// `window` (else hyper's), driven by a task of its own.
async fn h2_client(
    p: &Proxy,
    window: Option<u32>,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(w) = window {
        builder.initial_stream_window_size(w);
    }
    let (send, conn) = builder
        .handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

/// lb-balancer with a client timeout of 2 s before one member; the grace after an HTTP/2
/// stall's GOAWAY (the head timeout) is 2 s too.
async fn with_client_timeout_2() -> (Backend, Proxy) {
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--clienttimeout",
        "2",
        "--headtimeout",
        "2",
        "--member",
        &a.url(),
    ]);
    (a, p)
}

/// Sends, on `send`, a GET of a response far longer than any test reads; its head.
async fn start_download(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    p: &Proxy,
) -> hyper::Response<hyper::body::Incoming> {
    let req = hyper::Request::get(format!("http://{}/download?bytes=1000000000", p.addr))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    send.send_request(req).await.unwrap()
}

/// An HTTP/2 client that opens no flow-control window takes nothing of a response, with
/// nothing waiting on the socket (it still reads frames): after the client timeout it gets
/// GOAWAY, and the head timeout later it is disconnected and the member's connection freed,
/// as an HTTP/1 client that stops reading is. Before, such a stream held its member until
/// the client left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_opens_no_window_is_disconnected_after_the_client_timeout() {
    let a = Backend::start("a").await;
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--manager",
        "127.0.0.1:0",
        "--idletimeout",
        "60",
        "--clienttimeout",
        "2",
        "--headtimeout",
        "2",
        "--member",
        &a.url(),
    ]);
    let m = p.manager.unwrap();
    let busy = || first_member_busy(m);
    // hyper drives the connection (it answers pings and reads every frame) but opens a
    // stream's window only as its body is read, which this test never does.
    let (mut send, conn) = h2_client(&p, None).await;
    let resp = start_download(&mut send, &p).await;
    assert_eq!(resp.status(), 200);
    assert!(eventually(5, || async { busy().await == 1 }).await);
    assert!(
        eventually(15, || async { busy().await == 0 }).await,
        "the member stayed busy for an HTTP/2 client that opens no window"
    );
    // The connection was closed.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection is still open");
    drop(resp);
}

/// The other side of the test above: an HTTP/2 client reading slowly, but reading, keeps
/// its response past the client timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_reading_slowly_keeps_its_response() {
    let (_a, p) = with_client_timeout_2().await;
    // A small window: the response waits for the client after every 16 KiB read.
    let (mut send, conn) = h2_client(&p, Some(16 * 1024)).await;
    let mut body = start_download(&mut send, &p).await.into_body();
    // Five seconds of reads 300 ms apart: two and a half client timeouts, never one
    // without a read.
    let mut read = 0usize;
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("no frame within 5 s")
            .expect("the response ended")
            .expect("the response failed");
        read += frame.into_data().map_or(0, |d| d.len());
    }
    assert!(read > 0);
    assert!(
        !conn.is_finished(),
        "the connection of a reading client was closed"
    );
    conn.abort();
}

/// A request its session routes to a member at its `max` waits for that member, then gets
/// 503: the session is not moved to another member, and its route cookie not rewritten, for
/// a member that is only busy (Apache answers 503 after `acquire`, HAProxy queues on the
/// server). The seventh QA pass found such requests served elsewhere, with
/// `Set-Cookie: ROUTEID=.b`, moving the session for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waits_for_its_busy_member_and_is_not_moved() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (ma, mb) = (member(&a, "route=a,max=1"), member(&b, "route=b"));
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stickysession",
        "ROUTEID",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    let slow = {
        let (c, url) = (c.clone(), p.url("/slow?ms=3000"));
        tokio::spawn(async move { get(&c, &url, Some("ROUTEID=.a")).await })
    };
    assert!(eventually(5, || async { a.hits() == 1 }).await);
    // a is at its max for longer than the wait (1 s).
    let (status, set, body) = get(&c, &p.url("/"), Some("ROUTEID=.a")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("member busy"), "{body}");
    assert_eq!(set, None, "the route cookie was rewritten");
    assert_eq!(b.hits(), 0, "the session went to another member");
    assert_eq!(slow.await.unwrap().0, 200);
    // a has its slot back: the session goes on there.
    let (status, set, body) = get(&c, &p.url("/"), Some("ROUTEID=.a")).await;
    assert_eq!((status, body.as_str(), set), (200, "a", None));
}

/// A request without a session goes to a member with a free slot before waiting for a
/// busy one, and when every member is at its `max` it takes the first slot freed; the wait
/// is the member's `acquire` (milliseconds, as Apache's). Before, the request waited its
/// full wait at each busy member in turn, though another was free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_a_free_member_goes_first_then_the_first_slot_freed() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // `first` always schedules a, when usable: the request meets a busy a first.
    let (ma, mb) = (
        member(&a, "max=1,acquire=8000"),
        member(&b, "max=1,acquire=8000"),
    );
    let p = Proxy::start(&[
        "--listen",
        "127.0.0.1:0",
        "--lbmethod",
        "first",
        "--member",
        &ma,
        "--member",
        &mb,
    ]);
    let c = client();
    let (status, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    let hold = |path: &str| {
        let (c, url) = (c.clone(), p.url(path));
        tokio::spawn(async move { get(&c, &url, None).await })
    };
    let hold_a = hold("/slow?ms=900");
    assert!(eventually(5, || async { a.hits() == 2 }).await);
    // a is at its max: b, free, serves at once (before: the request waited for a's slot,
    // freed within the wait, and a served it).
    let (status, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!((status, body.as_str()), (200, "b"));
    assert_eq!(hold_a.await.unwrap().0, 200);
    let hold_a = hold("/slow?ms=4000");
    assert!(eventually(5, || async { a.hits() == 3 }).await);
    // Both at their max; b frees its slot first.
    let hold_b = hold("/slow?ms=800");
    assert!(eventually(5, || async { b.hits() == 2 }).await);
    let (status, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!((status, body.as_str()), (200, "b"));
    assert_eq!(hold_b.await.unwrap().0, 200);
    assert_eq!(hold_a.await.unwrap().0, 200);
}

/// `acquire=0`: a request does not wait for a slot at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_0_answers_503_at_once_when_the_member_is_busy() {
    let a = Backend::start("a").await;
    let ma = member(&a, "max=1,acquire=0");
    let p = Proxy::start(&["--listen", "127.0.0.1:0", "--member", &ma]);
    let c = client();
    let hold = {
        let (c, url) = (c.clone(), p.url("/slow?ms=3000"));
        tokio::spawn(async move { get(&c, &url, None).await })
    };
    assert!(eventually(5, || async { a.hits() == 1 }).await);
    let (status, _, body) = get(&c, &p.url("/"), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("member busy: no slot free"), "{body}");
    assert_eq!(hold.await.unwrap().0, 200);
}

/// One stream read, another never: the client timeout runs for each response from its own
/// wait, so reading one stream does not keep a stalled one, and its member's connection,
/// open (review 7: any stream taking a frame restarted the wait of all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_never_read_is_timed_while_another_is_read() {
    let (_a, p) = with_client_timeout_2().await;
    let (mut send, conn) = h2_client(&p, Some(16 * 1024)).await;
    let mut read = start_download(&mut send, &p).await.into_body();
    let _stalled = start_download(&mut send, &p).await;
    // Read the first stream every 300 ms for up to 20 s: the connection is closed for the
    // second within a few client timeouts.
    let mut closed = false;
    for _ in 0..66 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match tokio::time::timeout(Duration::from_secs(5), read.frame()).await {
            Ok(Some(Ok(_))) => {}
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a stream never read kept its connection open");
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection is still open");
}
