//! The built-in demo: two in-process backends behind a balancer on 127.0.0.1:8080, the
//! manager on 127.0.0.1:8081.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_http::member::MemberSpec;
use tokio::net::TcpListener;

use super::config::{BalancerConf, Config, ConfigError};

/// Starts one demo backend answering which backend it is.
async fn backend(n: u32) -> Result<SocketAddr, ConfigError> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| ConfigError(format!("demo backend: {e}")))?;
    let addr = l.local_addr().map_err(|e| ConfigError(e.to_string()))?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let xff = req
                            .headers()
                            .get("x-forwarded-for")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        let body = format!(
                            "hello from demo backend {n} ({addr}): {} {} (x-forwarded-for: {xff})\n",
                            req.method(),
                            req.uri()
                        );
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo configuration, with its two backends running.
pub(crate) async fn config() -> Result<Config, ConfigError> {
    let mut b = BalancerConf::new("demo");
    b.set("stickysession", "ROUTEID").map_err(ConfigError)?;
    for n in 1..=2 {
        let addr = backend(n).await?;
        let m: MemberSpec = format!("http://{addr},route=b{n},hcmethod=GET,hcinterval=5")
            .parse()
            .map_err(|e: lb_http::Error| ConfigError(e.to_string()))?;
        b.members.push(m);
    }
    Ok(Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        manager: Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
        manager_remote: false,
        manager_hosts: Vec::new(),
        balancers: vec![b],
        file: None,
        limits: Default::default(),
        abort_on_close: false,
        overrides: Default::default(),
    })
}

/// What to do with the demo.
pub(crate) fn banner() -> &'static str {
    "lb-balancer demo: two in-process backends (routes b1, b2) behind balancer://demo\n\
     \n  curl -i http://127.0.0.1:8080/            # alternates between the backends\n  \
     curl -i -b 'ROUTEID=.b2' http://127.0.0.1:8080/   # sticks to b2\n  \
     open http://127.0.0.1:8081/                 # the balancer manager: disable a member, change its factor\n  \
     curl http://127.0.0.1:8081/api              # the same as JSON; /metrics for Prometheus\n\
     \nrun `lb-balancer --help` for the real thing; ctrl-c stops.\n"
}
