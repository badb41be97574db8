//! The balancer manager in a real browser: headless chromium driven over WebDriver (plain
//! HTTP + JSON, no extra crate) loads the page, ticks a member's D box and submits the form;
//! traffic to that member stops. A screenshot of the page is kept under
//! `target/tmp/balancer-manager.png`.
//!
//! Skipped, with the reason printed, when `chromedriver` or `chromium` is not installed.

mod balancer_support;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use balancer_support::{Backend, Proxy, client, get};
use http_body_util::BodyExt;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver in its own process group; the whole group (chromium included) is killed
/// and chromedriver reaped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct WebDriver {
    base: String,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        balancer_support::Body,
    >,
}

impl WebDriver {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(balancer_support::full(
                body.map(|b| b.to_string()).unwrap_or_default(),
            ))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
            .await
            .expect("webdriver timed out")
            .expect("webdriver request failed");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        v
    }

    async fn find(&self, session: &str, css: &str) -> String {
        let v = self
            .call(
                "POST",
                &format!("/session/{session}/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v["value"][ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn click(&self, session: &str, css: &str) {
        let id = self.find(session, css).await;
        let v = self
            .call(
                "POST",
                &format!("/session/{session}/element/{id}/click"),
                Some(json!({})),
            )
            .await;
        assert!(v["value"].is_null(), "click {css}: {v}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_page_disables_a_member_in_a_real_browser() {
    for (bin, what) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
        if !std::path::Path::new(bin).exists() {
            eprintln!("skipped: {bin} not found (install Debian's {what})");
            return;
        }
    }
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let (p, manager) = Proxy::managed(&[a.url(), b.url()]);
    let c = client();
    for _ in 0..4 {
        get(&c, &p.url("/"), None).await;
    }
    assert!(a.hits() > 0 && b.hits() > 0);

    let driver = Driver::start();
    let wd = WebDriver {
        base: format!("http://127.0.0.1:{}", driver.port),
        http: client(),
    };
    let mut ready = false;
    for _ in 0..100 {
        let status = tokio::time::timeout(Duration::from_secs(2), async {
            let req = hyper::Request::get(format!("{}/status", wd.base))
                .body(balancer_support::full(""))
                .unwrap();
            wd.http.request(req).await
        })
        .await;
        if let Ok(Ok(r)) = status {
            if r.status().is_success() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "chromedriver did not come up");

    let profile = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chromium-profile-{}", std::process::id()));
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": CHROMIUM,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1400,900", format!("--user-data-dir={}", profile.display())]
    }}}});
    let v = wd.call("POST", "/session", Some(caps)).await;
    let session = v["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {v}"))
        .to_string();

    let url = format!("http://{manager}/");
    wd.call(
        "POST",
        &format!("/session/{session}/url"),
        Some(json!({"url": url})),
    )
    .await;
    let title = wd
        .call("GET", &format!("/session/{session}/title"), None)
        .await;
    assert_eq!(title["value"], "Balancer Manager");
    // Member 0 is a: tick D and submit its form.
    wd.click(&session, "#form-default-0 input[name=D]").await;
    wd.click(&session, "#form-default-0 input[type=submit]")
        .await;
    // The page comes back with the message and member 0 shown disabled.
    let mut shown = false;
    for _ in 0..50 {
        let src = wd
            .call("GET", &format!("/session/{session}/source"), None)
            .await;
        let src = src["value"].as_str().unwrap_or("").to_string();
        if src.contains("id=\"msg\"") && src.contains("Dis") {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown, "the page did not show the member disabled");
    let shot = wd
        .call("GET", &format!("/session/{session}/screenshot"), None)
        .await;
    let png = base64_decode(shot["value"].as_str().unwrap_or(""));
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("balancer-manager.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot saved to {}", path.display());
    wd.call("DELETE", &format!("/session/{session}"), None)
        .await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);

    // Traffic to a stopped.
    let before = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&c, &p.url("/"), None).await.2, "b");
    }
    assert_eq!(a.hits(), before);
}
