//! PROXY protocol header encode/parse and X-Forwarded-For rewrite costs.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use lb_tcp::proxy_protocol::{ProxyHeader, ProxyVersion};
use lb_tcp::xff::{XffInserter, XffScope};

fn proxy(c: &mut Criterion) {
    let src: SocketAddr = "192.0.2.10:51234".parse().unwrap();
    let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
    let header = ProxyHeader::new(src, dst);
    for (name, version) in [("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)] {
        let mut out = Vec::with_capacity(128);
        c.bench_function(&format!("proxy_{name}_encode"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&header).encode(version, &mut out);
                black_box(out.len())
            })
        });
        let bytes = header.to_vec(version);
        c.bench_function(&format!("proxy_{name}_parse"), |b| {
            b.iter(|| ProxyHeader::parse(black_box(&bytes)).unwrap())
        });
    }
    let request =
        b"GET /index.html HTTP/1.1\r\nHost: example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
    let mut out = Vec::with_capacity(256);
    c.bench_function("xff_insert_request", |b| {
        b.iter(|| {
            let mut x = XffInserter::new("192.0.2.10".parse().unwrap(), XffScope::EveryRequest);
            out.clear();
            x.feed(black_box(request), &mut out);
            black_box(out.len())
        })
    });
}

criterion_group!(benches, proxy);
criterion_main!(benches);
