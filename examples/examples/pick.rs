//! Picks backends from a small balancer and prints where each connection would go.

use std::net::SocketAddr;

use lb_core::{Backend, Balancer, PickContext};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lb = Balancer::builder()
        .backend(Backend::new("127.0.0.1:9001".parse::<SocketAddr>()?))
        .backend(Backend::new("127.0.0.1:9002".parse::<SocketAddr>()?))
        .build()?;
    for n in 0..4 {
        let lease = lb.pick(&PickContext::new())?;
        println!("connection {n} -> {}", lease.backend().address());
    }
    Ok(())
}
