//! How long N participants on one host take to find each other, with and
//! without the loopback multicast flag, inside a private network namespace.
//!
//! `cargo run --release -p wallance-dds --example dds_discovery -- [N] [--no-multicast]`

use std::time::{Duration, Instant};

use anyhow::Result;
use wallance_dds::netns::{self, Isolation, Loopback};
use wallance_dds::{TopicId, Transport, TransportConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lo = if args.iter().any(|a| a == "--no-multicast") {
        Loopback::NoMulticast
    } else {
        Loopback::Multicast
    };
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let lo = match netns::isolate(lo, &arg_refs)? {
        Isolation::Ran(status) => std::process::exit(status.code().unwrap_or(1)),
        Isolation::Inside(lo) => lo,
    };
    let n: usize = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4);

    let started = Instant::now();
    let nodes: Vec<Transport> = (0..n)
        .map(|_| Transport::new(TransportConfig::loopback(0)))
        .collect::<Result<_, _>>()?;
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut full_at = None;
    while Instant::now() < deadline {
        let min = nodes
            .iter()
            .map(|t| {
                TopicId::ALL
                    .iter()
                    .map(|&topic| t.remote_readers(topic))
                    .min()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        if min >= n - 1 {
            full_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen: Vec<usize> = nodes.iter().map(|t| t.remote_readers(TopicId::Vote)).collect();
    println!(
        "{n} participants, loopback {lo:?}: created in {created:?}; full discovery (every node sees \
         every other node's 11 readers): {}; vote readers seen per node: {seen:?}",
        match full_at {
            Some(t) => format!("{t:?}"),
            None => "NOT reached in 30 s".into(),
        }
    );
    Ok(())
}
