//! DDS latency and throughput on loopback, inside a private network namespace.
//!
//! `cargo run --release -p wallance-dds --example dds_bench [-- --samples N]`
//!
//! Re-executes itself under `unshare -n` (loopback with multicast only), then:
//! - one-way latency of opaque 72/96/144-byte samples, raw rustdds
//!   participant to participant (the paper's vote sizes);
//! - one-way latency of our signed vote through `Transport` (reader thread,
//!   decoding, inbox: what the daemon sees);
//! - round trip of a signed vote (A -> B -> A through two `Transport`s);
//! - throughput: signed votes sent as fast as `send` accepts.
//!
//! One sample at a time for latency (the next is sent once the previous
//! arrived), so figures are latencies, not queueing. Prints a table and JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustdds::mio1::{Events, Interest, Poll, Token};
use rustdds::{CDRDeserializerAdapter, DomainParticipantBuilder, TopicKind};
use serde::{Deserialize, Serialize};
use wallance_core::Keypair;
use wallance_core::msg::{Message, Vote};
use wallance_dds::netns::{self, Isolation, Loopback};
use wallance_dds::{Receiving, TopicId, Transport, TransportConfig, wire};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Opaque {
    /// First 8 bytes: the sample index, little endian; the rest filler.
    payload: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
struct Summary {
    name: String,
    bytes: usize,
    samples: usize,
    avg_us: f64,
    min_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    /// The figure this row is compared with.
    anchor: &'static str,
}

/// RTPS framing around one sample, as rustdds sends it on loopback: no
/// INFO_TS, and no HEARTBEAT since every topic is best effort (a reliable
/// DATA carried a 32-byte one: 224-byte datagrams, seen with tcpdump; best
/// effort: 192 when votes had a topic of their own, seen with
/// `strace -e sendto`).
const RTPS_HEADER: usize = 20;
/// A vote's serialized sample on its topic: the encapsulation header, then
/// the `wallance::Consensus` struct (the union's member index, padding to
/// 8, the vote's 144 bytes of CDR).
fn sample_bytes(v: &Vote) -> anyhow::Result<usize> {
    let msg = wire::ConsensusMessage::Vote(wire::Vote::from(v));
    Ok(4 + wire::to_cdr(&wire::Consensus { msg })?.len())
}

const DATA_OVERHEAD: usize = 24;

const PAPER: &str = "paper Table II (Pi 3, WiFi): avg 1660, min 1400, max 5980";
const TARGET_ONE_WAY: &str = "target p50 <= 50 (loopback); paper avg 1660";
const RUSTDDS_RTT: &str = "rustdds measured here before: p50 50-100";
const OWN_READER: &str = "the floor for Transport, whose participant reads its own topics";

fn summarize(name: &str, bytes: usize, mut ns: Vec<u64>, anchor: &'static str) -> Summary {
    ns.sort_unstable();
    let us = |v: u64| v as f64 / 1_000.0;
    let pct = |p: f64| us(ns[((ns.len() - 1) as f64 * p).round() as usize]);
    Summary {
        name: name.into(),
        bytes,
        samples: ns.len(),
        avg_us: ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1_000.0,
        min_us: us(ns[0]),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: us(ns[ns.len() - 1]),
        anchor,
    }
}

fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// One-way latency of `size`-byte opaque samples between two raw participants.
/// With `own_reader`, the writer's participant also reads the topic, as
/// every node's does: rustdds then delivers each sample to it too, through
/// the network path, on the same two cores.
fn opaque_one_way(size: usize, n: usize, warmup: usize, domain: u16, own_reader: bool) -> Result<Summary> {
    let qos = TopicId::Vote.qos(Duration::from_secs(1));
    let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
    let pa = DomainParticipantBuilder::new(domain)
        .with_only_networks(loopback)
        .build()?;
    let pb = DomainParticipantBuilder::new(domain)
        .with_only_networks(loopback)
        .build()?;
    let name = format!("bench_opaque_{size}");
    let ta = pa.create_topic(name.clone(), "bench::Opaque".into(), &qos, TopicKind::NoKey)?;
    let tb = pb.create_topic(name, "bench::Opaque".into(), &qos, TopicKind::NoKey)?;
    let writer = pa
        .create_publisher(&qos)?
        .create_datawriter_no_key_cdr::<Opaque>(&ta, Some(qos.clone()))?;
    let mut reader = pb
        .create_subscriber(&qos)?
        .create_simple_datareader_no_key::<Opaque, CDRDeserializerAdapter<Opaque>>(&tb, Some(qos.clone()))?;

    // Never taken from: its cache keeps the newest samples.
    let _own = match own_reader {
        true => Some(
            pa.create_subscriber(&qos)?
                .create_simple_datareader_no_key::<Opaque, CDRDeserializerAdapter<Opaque>>(&ta, Some(qos.clone()))?,
        ),
        false => None,
    };
    let total = warmup + n;
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let (ack_tx, ack_rx) = mpsc::channel::<u64>();
    let rx_sent_at = sent_at.clone();
    let receiver = std::thread::spawn(move || -> Result<Vec<u64>> {
        let mut poll = Poll::new()?;
        poll.registry().register(&mut reader, Token(0), Interest::READABLE)?;
        let mut events = Events::with_capacity(8);
        let mut lat = Vec::with_capacity(total);
        let mut seen = vec![false; total];
        while lat.len() < total {
            poll.poll(&mut events, Some(Duration::from_millis(20)))?;
            reader.drain_read_notifications();
            while let Some(s) = reader.try_take_one()? {
                let t = now_ns(base);
                let idx = u64::from_le_bytes(s.into_value().payload[..8].try_into()?);
                // A sample re-sent after a loss may arrive twice.
                if std::mem::replace(&mut seen[idx as usize], true) {
                    continue;
                }
                lat.push(t - rx_sent_at[idx as usize].load(Ordering::Relaxed));
                ack_tx.send(idx)?;
            }
        }
        Ok(lat)
    });

    // Opaque payload: a 4-byte sequence length, then `size - 4` bytes, so the
    // CDR sample is exactly `size` bytes.
    let mut payload = vec![0xA5u8; size - 4];
    let started = Instant::now();
    while pa.discovered_readers().len() < 1 + usize::from(own_reader) {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("opaque reader never discovered");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut resent = 0;
    for i in 0..total as u64 {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        // Best effort: a sample lost (or sent before the reader matched this
        // writer) is sent again, as the protocol re-sends; its latency counts
        // from the copy that arrived.
        let got = resend_until_acked(&ack_rx, &mut resent, || {
            sent_at[i as usize].store(now_ns(base), Ordering::Relaxed);
            writer
                .write(
                    Opaque {
                        payload: payload.clone(),
                    },
                    None,
                )
                .map_err(|e| anyhow::anyhow!("write: {e:?}"))
        })
        .context("opaque sample lost")?;
        anyhow::ensure!(got == i, "out of order: {got} != {i}");
    }
    let lat = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    note_resent(&format!("opaque {size} B"), resent);
    let name = match own_reader {
        false => format!("opaque {size} B one-way (raw rustdds)"),
        true => format!("opaque {size} B one-way (raw, writer also reads)"),
    };
    let anchor = if own_reader { OWN_READER } else { PAPER };
    Ok(summarize(&name, size, lat[warmup..].to_vec(), anchor))
}

/// Sends (with `send`), and again every 100 ms until `acks` has an answer,
/// for at most 10 s; counts the extra sends in `resent`.
fn resend_until_acked<T>(
    acks: &mpsc::Receiver<T>,
    resent: &mut u64,
    mut send: impl FnMut() -> Result<()>,
) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send()?;
        match acks.recv_timeout(Duration::from_millis(100)) {
            Ok(t) => return Ok(t),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => *resent += 1,
            Err(e) => bail!("no answer in 10 s: {e}"),
        }
    }
}

/// Sends `a` votes until `b` takes one, then drains `b`: a best-effort
/// reader drops what a writer sends before the reader has matched it.
fn until_heard(a: &Transport, b: &Transport) -> Result<()> {
    let ping = Message::Vote(Vote::build(&Keypair::from_seed([9; 32]), [9; 32], 0, 1).expect("difficulty 1 solves"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "b never heard a");
        a.send(&ping)?;
        b.recv_batch(&mut got, 64, Duration::from_millis(50));
    }
    while b.recv_batch(&mut got, 1024, Duration::from_millis(200)) > 0 {}
    Ok(())
}

fn note_resent(what: &str, resent: u64) {
    if resent > 0 {
        eprintln!("{what}: {resent} samples sent again after 100 ms without arriving (best effort)");
    }
}

fn votes(key: &Keypair, n: usize) -> Vec<Vote> {
    let base = Vote::build(key, [7; 32], 0, 1).expect("difficulty 1 solves");
    (0..n as u64)
        .map(|i| {
            // Same request, different `remaining`: each its own signed vote.
            Vote::build(key, base.request_id, i, 1).expect("difficulty 1 solves")
        })
        .collect()
}

fn pair(domain: u16, receiving: Receiving) -> Result<(Transport, Transport, Duration)> {
    let config = TransportConfig {
        receiving,
        ..TransportConfig::loopback(domain)
    };
    let a = Transport::new(config.clone())?;
    let b = Transport::new(config)?;
    let started = Instant::now();
    anyhow::ensure!(a.wait_for_readers(1, Duration::from_secs(20)), "discovery");
    anyhow::ensure!(b.wait_for_readers(1, Duration::from_secs(20)), "discovery");
    Ok((a, b, started.elapsed()))
}

/// One-way latency of signed votes, Transport to Transport.
fn vote_one_way(a: &Transport, b: Transport, all: &[Vote], warmup: usize, name: &str) -> Result<(Summary, Transport)> {
    let total = all.len();
    let base = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let (ack_tx, ack_rx) = mpsc::channel::<u64>();
    let rx_sent_at = sent_at.clone();
    let receiver = std::thread::spawn(move || -> Result<(Vec<u64>, Transport)> {
        let mut lat = Vec::with_capacity(total);
        let mut seen = vec![false; total];
        let mut batch = Vec::new();
        while lat.len() < total {
            b.recv_batch(&mut batch, 1024, Duration::from_secs(10));
            let t = now_ns(base);
            anyhow::ensure!(!batch.is_empty(), "vote lost");
            for m in batch.drain(..) {
                let Message::Vote(v) = m else { bail!("not a vote") };
                if std::mem::replace(&mut seen[v.remaining as usize], true) {
                    continue;
                }
                lat.push(t - rx_sent_at[v.remaining as usize].load(Ordering::Relaxed));
                ack_tx.send(v.remaining)?;
            }
        }
        Ok((lat, b))
    });
    let mut resent = 0;
    for (i, v) in all.iter().enumerate() {
        resend_until_acked(&ack_rx, &mut resent, || {
            sent_at[i].store(now_ns(base), Ordering::Relaxed);
            Ok(a.send(&Message::Vote(*v))?)
        })
        .context("vote lost")?;
    }
    let (lat, b) = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    note_resent(name, resent);
    let size = sample_bytes(&all[0])?;
    Ok((summarize(name, size, lat[warmup..].to_vec(), TARGET_ONE_WAY), b))
}

/// Round trips: A sends a vote, B's loop sends it straight back.
fn vote_round_trip(a: &Transport, b: Transport, all: &[Vote], warmup: usize, name: &str) -> Result<Summary> {
    let total = all.len();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let echo_done = done.clone();
    let echo = std::thread::spawn(move || -> Result<()> {
        let mut batch = Vec::new();
        while !echo_done.load(Ordering::Relaxed) {
            b.recv_batch(&mut batch, 1024, Duration::from_millis(50));
            for m in batch.drain(..) {
                b.send(&m)?;
            }
        }
        Ok(())
    });
    let mut rtt = Vec::with_capacity(total);
    let mut batch = Vec::new();
    let mut resent = 0u64;
    for v in all {
        let want = Message::Vote(*v);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Best effort: sent again after 100 ms without its echo (either way
        // may lose it); the round trip counts from the copy answered.
        'echoed: loop {
            let t = Instant::now();
            a.send(&want)?;
            while t.elapsed() < Duration::from_millis(100) {
                a.recv_batch(
                    &mut batch,
                    16,
                    Duration::from_millis(100) - t.elapsed().min(Duration::from_millis(100)),
                );
                // Late echoes of earlier votes are dropped.
                if batch.drain(..).any(|m| m == want) {
                    rtt.push(t.elapsed().as_nanos() as u64);
                    break 'echoed;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "echo lost for 10 s");
            resent += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    echo.join().map_err(|_| anyhow::anyhow!("echo panicked"))??;
    note_resent(name, resent);
    let size = sample_bytes(&all[0])?;
    Ok(summarize(name, size, rtt[warmup..].to_vec(), RUSTDDS_RTT))
}

/// Votes received per second with the sender going as fast as `send`
/// accepts, and how many of them best effort lost on the way.
fn vote_throughput(a: &Transport, b: &Transport, all: &[Vote]) -> Result<(f64, usize)> {
    let started = Instant::now();
    let mut received = 0;
    let mut last = started;
    let mut batch = Vec::new();
    for v in all {
        a.send(&Message::Vote(*v))?;
        // Keep the receiving inbox drained meanwhile, as a daemon would.
        let n = b.try_recv_batch(&mut batch, usize::MAX);
        if n > 0 {
            received += n;
            last = Instant::now();
        }
        batch.clear();
    }
    // Until nothing more comes for half a second.
    while received < all.len() {
        let n = b.recv_batch(&mut batch, usize::MAX, Duration::from_millis(500));
        if n == 0 {
            break;
        }
        received += n;
        last = Instant::now();
        batch.clear();
    }
    anyhow::ensure!(received > 0, "throughput: no vote arrived");
    Ok((received as f64 / (last - started).as_secs_f64(), all.len() - received))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match netns::isolate(Loopback::Multicast, &arg_refs)? {
        Isolation::Ran(status) => std::process::exit(status.code().unwrap_or(1)),
        Isolation::Inside(_) => {}
    }
    let n: usize = args
        .iter()
        .position(|a| a == "--samples")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let warmup = 500;
    #[cfg(debug_assertions)]
    eprintln!("NOTE: debug build; run with --release for meaningful numbers");

    let mut rows = Vec::new();
    for (i, size) in [72usize, 96, 144].into_iter().enumerate() {
        rows.push(opaque_one_way(size, n, warmup, 10 + i as u16, false)?);
    }
    // The floor our Transport can reach: a node reads what it writes.
    rows.push(opaque_one_way(144, n, warmup, 13, true)?);

    let key = Keypair::from_seed([42; 32]);
    let all = votes(&key, warmup + n);
    let vote_bytes = sample_bytes(&all[0])?;
    let (a, b, discovery) = pair(0, Receiving::Thread)?;
    let name = "signed vote one-way (Transport)";
    let (one_way, b) = vote_one_way(&a, b, &all, warmup, name)?;
    rows.push(one_way);
    drop((a, b));
    let (a, b, _) = pair(3, Receiving::Direct)?;
    let name = "signed vote one-way (Transport, Direct)";
    let (one_way, b) = vote_one_way(&a, b, &all, warmup, name)?;
    rows.push(one_way);
    drop((a, b));
    let (a, b, _) = pair(1, Receiving::Thread)?;
    let name = "signed vote round trip (Transport)";
    rows.push(vote_round_trip(&a, b, &all, warmup, name)?);
    drop(a);
    let (a, b, _) = pair(4, Receiving::Direct)?;
    let name = "signed vote round trip (Transport, Direct)";
    rows.push(vote_round_trip(&a, b, &all, warmup, name)?);
    drop(a);
    let (a, b, _) = pair(2, Receiving::Thread)?;
    let tput_votes = votes(&key, 100_000.max(n));
    until_heard(&a, &b)?;
    let (throughput, tput_lost) = vote_throughput(&a, &b, &tput_votes)?;

    println!();
    println!("Wallance DDS benchmark: loopback in a private netns, rustdds 0.15, {n} samples (+{warmup} warm-up)");
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  anchor (µs)",
        "measurement", "bytes", "avg µs", "min µs", "p50 µs", "p99 µs", "max µs"
    );
    for r in &rows {
        println!(
            "{:<44} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
            r.name, r.bytes, r.avg_us, r.min_us, r.p50_us, r.p99_us, r.max_us, r.anchor
        );
    }
    println!(
        "{:<44} {:>6} {:>9.0}  samples/s received, {tput_lost} of {} lost (best effort, no flow control); anchor: rustdds measured here before, up to ~200k/s (reliable)",
        "throughput, signed votes (Transport)",
        vote_bytes,
        throughput,
        tput_votes.len()
    );
    println!(
        "{:<44} {:>6}  bytes of serialized sample (4 encapsulation + 4 member index + 4 padding + 144 CDR); RTPS message and UDP payload {} bytes (best effort: no HEARTBEAT); target: <= 220",
        "signed vote size",
        vote_bytes,
        vote_bytes + RTPS_HEADER + DATA_OVERHEAD,
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("host: {cpus} CPUs, load average {}", load.trim());
    println!();
    println!("anchors:");
    println!("  paper Table II (Pi 3 B+, WiFi, vote): avg 1660 µs, min 1400 µs, max 5980 µs");
    println!("  rustdds here before: round trip p50 50-100 µs, up to ~200k samples/s");
    println!("  target: vote one-way p50 <= 50 µs on loopback; signed vote <= 220 bytes on the wire");
    println!("discovery (2 participants, both topics both ways): {discovery:?}");
    println!(
        "(RTPS message = 20 header + 24 DATA submessage + sample; rustdds adds a 32-byte HEARTBEAT \
         to every reliable DATA: 224-byte UDP payloads seen with tcpdump for one vote)"
    );

    let json = serde_json::json!({
        "samples": n,
        "host_cpus": cpus,
        "host_loadavg": load.trim(),
        "warmup": warmup,
        "latency": rows,
        "throughput_votes_per_s": throughput,
        "throughput_votes_lost": tput_lost,
        "throughput_votes_sent": tput_votes.len(),
        "discovery_ms": discovery.as_secs_f64() * 1e3,
        "vote_payload_bytes": vote_bytes,
        "vote_rtps_message_bytes": vote_bytes + RTPS_HEADER + DATA_OVERHEAD,
        "vote_udp_payload_bytes": vote_bytes + RTPS_HEADER + DATA_OVERHEAD,
        "anchors": {
            "paper_table2_pi3_wifi_us": {"avg": 1660.0, "min": 1400.0, "max": 5980.0},
            "rustdds_here_round_trip_p50_us": [50, 100],
            "rustdds_here_max_samples_per_s": 200000,
            "target_vote_one_way_p50_us": 50,
            "target_vote_wire_bytes_max": 220
        }
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
