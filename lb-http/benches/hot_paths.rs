//! Per-request costs of the HTTP layer's pure parts: the head guard's check, the header
//! rewrite, route and hash-key extraction, and the member cache.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Version};
use lb_http::balance::HashKey;
use lb_http::headers::{self, ClientInfo, ForwardedHeaders};
use lb_http::member::{MemberSpec, Members};
use lb_http::sticky::StickyConfig;
use std::hint::black_box;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEAD: &[u8] = b"GET /app/index.html?user=alice HTTP/1.1\r\nHost: example.test\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nCookie: a=1; ROUTEID=.node2; b=2\r\nConnection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("guard: new connection and one head through a pipe", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (mut client, server) = tokio::io::duplex(4096);
                let mut g = Box::pin(lb_http::guard::Guarded::new(server, Default::default()));
                client.write_all(HEAD).await.unwrap();
                let mut buf = [0u8; 512];
                let n = g.read(&mut buf).await.unwrap();
                black_box(n)
            })
        })
    });

    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "example.test"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("x-forwarded-for", "192.0.2.1"),
    ] {
        base.insert(
            http::header::HeaderName::from_static(k),
            HeaderValue::from_static(v),
        );
    }
    let client = ClientInfo {
        addr: "127.0.0.1:40000".parse().unwrap(),
        tls: false,
    };
    c.bench_function(
        "headers: clone, strip hop-by-hop, add forwarding and via",
        |b| {
            b.iter(|| {
                let mut h = base.clone();
                headers::strip_hop_by_hop(&mut h, false);
                headers::add_forwarded(
                    &mut h,
                    ForwardedHeaders::default(),
                    client,
                    Some("example.test"),
                );
                headers::append_via(&mut h, Version::HTTP_11, "lb");
                black_box(h)
            })
        },
    );

    let req = Request::get("/app/index.html?user=alice")
        .header("cookie", "a=1; ROUTEID=.node2; b=2")
        .header("x-user", "alice")
        .body(())
        .unwrap();
    let sticky = StickyConfig::apache("ROUTEID").unwrap();
    c.bench_function("sticky: route from cookie", |b| {
        b.iter(|| black_box(sticky.route_of(black_box(&req))))
    });
    let key: HashKey = "param:user".parse().unwrap();
    c.bench_function("hash key: url_param", |b| {
        b.iter(|| black_box(key.extract(black_box(&req))))
    });

    let spec: MemberSpec = "http://127.0.0.1:9001,route=node1,retry=5,max=100"
        .parse()
        .unwrap();
    let backend = spec.to_backend().unwrap();
    let members = Members::default();
    members.get(lb_core::BackendId(0), &backend).unwrap();
    c.bench_function("member cache: hit", |b| {
        b.iter(|| black_box(members.get(lb_core::BackendId(0), &backend).unwrap()))
    });
    // What the balance layer does: by the member its lease shares.
    let lb = lb_core::Balancer::builder()
        .backend(backend.clone())
        .build()
        .unwrap();
    let members = Members::shared(&lb);
    let lease = lb.pick(&lb_core::PickContext::new()).unwrap();
    members.get_member(lease.shared_member()).unwrap();
    c.bench_function("member cache: hit by lease", |b| {
        b.iter(|| black_box(members.get_member(lease.shared_member()).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
