//! Demo upstream: answers every request with a JSON echo of what it received.
//!
//! Usage: echo-upstream [ADDR] [NAME]   (default 127.0.0.1:18080 demo)

use kavach_integration::{Behaviour, EchoServer};

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let name = args.next().unwrap_or_else(|| "demo".into());
    match EchoServer::start_on(&addr, &name, Behaviour::Echo) {
        Ok(server) => {
            println!("echo-upstream {name} listening on {}", server.addr());
            server.wait();
        }
        Err(e) => {
            eprintln!("echo-upstream: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
}
