//! Bounded under attack.
//!
//! 1. A non-member records every Wallance sample while the network trades,
//!    then replays it - exact and mutated copies - at a high rate for 30 s.
//!    Each node's memory and CPU are sampled from /proc once a second, and a
//!    legitimate purchase must commit meanwhile. The attacker is Eclipse
//!    Cyclone DDS from Python (`tests/flood_attacker.py`), so this needs a
//!    Python with `cyclonedds`, like the interop test:
//!
//!    ```text
//!    python3 -m venv /tmp/cyc && /tmp/cyc/bin/pip install cyclonedds
//!    WALLANCE_INTEROP_PYTHON=/tmp/cyc/bin/python \
//!        cargo test -p wallance --test flood -- --ignored --nocapture
//!    ```
//!
//! 2. A raw rustdds participant floods malformed samples (one kind per
//!    malformed reason) at nodes running with their default log filter and
//!    stderr in a file: the log stays a few lines, without colour codes or
//!    ERROR lines through a clean stop, and `/metrics` counts the flood by
//!    reason. Runs by default.

mod net;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use net::*;
use serde::Serialize;
use serde_json::{Value, json};
use wallance_dds::netns::{Loopback, test_inside};
use wallance_dds::{TopicId, wire};

/// How long the attacker replays (`WALLANCE_FLOOD_SECONDS` overrides).
const FLOOD_S: u64 = 30;
/// What it aims for, in samples per second over all topics
/// (`WALLANCE_FLOOD_RATE` overrides).
const TARGET_RATE: u64 = 3_000;
/// The attacker records at least this long: every node's periodic digest
/// (every 5 s) is in the recording.
const RECORD_S: u64 = 7;
/// The RSS baseline is taken this far into the flood.
const BASELINE_S: usize = 5;
/// A node's RSS at the end may exceed its baseline by this fraction...
/// Measured (debug build, 2 cores, load 4-8): RSS rises ~1.5 MB/s while the
/// first replays fill the nodes' bounded caches, then levels off within
/// 10-30 s. From the 5 s baseline to the end: +8.8 MB (+18 %) at 3 000/s for
/// 30 s, +9.7 MB (+23 %) at 8 000/s for 30 s, and at most +12.5 MB (+29 %)
/// at 8 000/s for 90 s, oscillating around a plateau from 30 s on. With the
/// default 75 000 samples after the baseline, a leak of more than ~220 bytes
/// per replayed sample fails the bound.
const RSS_GROWTH: f64 = 0.25;
/// ...or by this much, whichever is larger.
const RSS_SLACK_KB: u64 = 16 * 1024;
/// What a node may log from the start of the replay flood to its stop: its
/// own purchases' lines. Measured 0.8-1.5 KB per node (30 s at 3 000/s);
/// 4-45 KB before rustdds' lines were off by default.
const REPLAY_LOG_BOUND: u64 = 16 * 1024;
/// Legitimate purchases during the flood: (seconds into it, buyer index).
/// Node-1 (index 0) is the provider; both buyers are other members.
const PURCHASES: [(usize, usize); 2] = [(BASELINE_S, 3), (15, 1)];

#[test]
#[ignore = "needs Python cyclonedds: WALLANCE_INTEROP_PYTHON=python cargo test -p wallance --test flood -- --ignored"]
fn a_replay_flood_leaves_memory_and_cpu_flat_and_purchases_commit() {
    if !test_inside(
        "a_replay_flood_leaves_memory_and_cpu_flat_and_purchases_commit",
        Loopback::Multicast,
    ) {
        return;
    }
    let python = std::env::var("WALLANCE_INTEROP_PYTHON").expect("WALLANCE_INTEROP_PYTHON");
    let env_u64 = |k: &str, default: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let flood_s = env_u64("WALLANCE_FLOOD_SECONDS", FLOOD_S);
    let rate = env_u64("WALLANCE_FLOOD_RATE", TARGET_RATE);
    let started = Instant::now();
    let all = [0, 1, 2, 3];

    // 1. Three of four nodes (a quorum) trade once before the attacker exists.
    let mut net = Net::init(4, 20.0);
    // As deployed: the node's default log filter, stderr to a file.
    for i in 0..3 {
        net.start_default_log(i);
    }
    net.wait_ready(&[0, 1, 2]);
    // `wait_funds` waits for the price plus the voter reward.
    let price = net.price();
    net.wait_funds(1, price);
    let id = net.buy(1, &[]);
    assert_eq!(net.wait_done(1, &id).outcome.map(|o| o.ok), Some(true));

    // 2. The attacker joins and records. Node-4 joins late, so the recording
    //    holds catch-up traffic (heads, fetches) too, and node-3 buys.
    let mut attacker = Attacker::start(&python, flood_s, rate);
    attacker.expect("ready", 30);
    let recording = Instant::now();
    wait("the nodes to discover the attacker", 30, || {
        participants(&net, &[0, 1, 2]) >= 3
    });
    net.start_default_log(3);
    wait("every node to see 3 peers and the attacker", 60, || {
        participants(&net, &all) >= 4
    });
    net.wait_funds(2, price);
    let id = net.buy(2, &[]);
    assert_eq!(net.wait_done(2, &id).outcome.map(|o| o.ok), Some(true));
    net.wait_agree(&all, 30);
    for &(_, buyer) in &PURCHASES {
        net.wait_funds(buyer, price);
    }
    let before: Vec<Value> = all.iter().map(|&i| net.get(i, "/api/status").unwrap()).collect();
    let load_before = loadavg();
    let logged_before: Vec<u64> = net.nodes.iter().map(|n| file_len(&n.log)).collect();

    // 3. Flood, sampling /proc each second; buy during it.
    let recorded_for = recording.elapsed();
    std::thread::sleep(Duration::from_secs(RECORD_S).saturating_sub(recorded_for));
    attacker.send("flood");
    let recorded = attacker.expect("recorded", 30);
    println!("attacker recorded: {recorded}");
    // Both topics reached the attacker: it read our types from the IDL
    // alone (a sync sample type Cyclone took for a keyed one matched
    // nothing, and the flood replayed no sync message at all).
    for topic in ["wallance_consensus", "wallance_sync"] {
        assert!(
            recorded["recorded"][topic].as_u64().unwrap_or(0) > 0,
            "the attacker recorded nothing on {topic}: {recorded}"
        );
    }
    let t0 = Instant::now();
    let pids: Vec<u32> = net.nodes.iter().map(|n| n.child.as_ref().unwrap().id()).collect();
    let tck = clock_ticks();
    let mut rows: Vec<Row> = Vec::new();
    let mut last: Vec<(u64, u64)> = pids.iter().map(|&p| proc_sample(p).unwrap()).collect();
    let mut last_atk = proc_sample(attacker.child.id()).unwrap_or_default();
    let mut last_t = t0;
    let mut waiters = Vec::new();
    let mut done = None;
    let mut next = 1;
    while done.is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(flood_s + 20),
            "the attacker did not finish"
        );
        let mut rate = None;
        while let Ok(v) = attacker.lines.try_recv() {
            match v["event"].as_str() {
                Some("tick") => rate = v["rate"].as_u64(),
                Some("done") => done = Some(v),
                _ => panic!("attacker: {v}"),
            }
        }
        if t0.elapsed() < Duration::from_secs(next) && done.is_none() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        next += 1;
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        last_t = now;
        let mut row = Row {
            t: t0.elapsed().as_secs_f64(),
            rss_kb: Vec::new(),
            cpu_pct: Vec::new(),
            atk_cpu_pct: 0.0,
            atk_rate: rate,
        };
        for (i, n) in net.nodes.iter_mut().enumerate() {
            let status = n.child.as_mut().unwrap().try_wait().unwrap();
            assert!(status.is_none(), "node-{} died during the flood: {status:?}", i + 1);
            let (rss, ticks) = proc_sample(pids[i]).unwrap();
            row.rss_kb.push(rss);
            row.cpu_pct.push((ticks - last[i].1) as f64 / tck / dt * 100.0);
            last[i] = (rss, ticks);
        }
        if let Some((_, ticks)) = proc_sample(attacker.child.id()) {
            row.atk_cpu_pct = ticks.saturating_sub(last_atk.1) as f64 / tck / dt * 100.0;
            last_atk.1 = ticks;
        }
        rows.push(row);
        // Legitimate purchases, each watched by its own thread.
        for &(at, buyer) in &PURCHASES {
            if rows.len() == at {
                let id = net.buy(buyer, &[]);
                let api = net.nodes[buyer].api.clone();
                let asked = Instant::now();
                let deadline = t0 + Duration::from_secs(flood_s + 15);
                waiters.push((
                    buyer,
                    std::thread::spawn(move || watch_purchase(&api, &id, asked, deadline)),
                ));
            }
        }
    }
    let flood_end = t0.elapsed();
    let done = done.unwrap();
    let atk_status = attacker.child.wait().unwrap();
    assert!(atk_status.success(), "attacker failed: {atk_status}");
    let load_after = loadavg();

    // 4. What must hold.
    let mut latencies = Vec::new();
    for (buyer, w) in waiters {
        let (latency, p) = w.join().unwrap();
        let latency =
            latency.unwrap_or_else(|| panic!("node-{}'s purchase during the flood never finished: {p}", buyer + 1));
        assert_eq!(p["outcome"]["ok"], true, "{p}");
        latencies.push(latency.as_millis() as u64);
    }
    let after: Vec<Value> = all.iter().map(|&i| net.get(i, "/api/status").unwrap()).collect();
    net.wait_agree(&all, 30);

    print_table(&rows);
    let rss_med: Vec<f64> = (0..4)
        .map(|i| median(rows.iter().map(|r| r.rss_kb[i] as f64 / 1024.0).collect()))
        .collect();
    let cpu_med: Vec<f64> = (0..4)
        .map(|i| median(rows.iter().map(|r| r.cpu_pct[i]).collect()))
        .collect();
    let base = &rows[BASELINE_S - 1].rss_kb;
    let end = &rows.last().unwrap().rss_kb;
    let delta = |k: &str| -> Vec<u64> {
        (0..4)
            .map(|i| counter(&after[i], k).saturating_sub(counter(&before[i], k)))
            .collect()
    };
    let rejected = delta("rejected");
    let duplicates = delta("duplicates");
    let received = delta("dds_received");
    let sent = delta("messages_sent");
    let summary = json!({
        "flood_s": round2(flood_end.as_secs_f64()),
        "attack_sent": done["sent"],
        "attack_failed_writes": done["failed"],
        "attack_rate_per_s": done["rate"],
        "attack_per_kind": done["per_kind"],
        "attack_per_topic": done["per_topic"],
        "node_dds_received_per_s": received.iter().map(|r| r / flood_s).collect::<Vec<_>>(),
        "node_messages_sent": sent,
        "rejected_delta": rejected,
        "node1_rejected_by_reason": by_reason(&before[0], &after[0]),
        "duplicates_delta": duplicates,
        "rss_mb_baseline": base.iter().map(|k| round2(*k as f64 / 1024.0)).collect::<Vec<_>>(),
        "rss_mb_end": end.iter().map(|k| round2(*k as f64 / 1024.0)).collect::<Vec<_>>(),
        "rss_mb_median": rss_med.iter().map(|v| round2(*v)).collect::<Vec<_>>(),
        "cpu_pct_median": cpu_med.iter().map(|v| round2(*v)).collect::<Vec<_>>(),
        "purchase_latency_ms": latencies,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "wall_s": round2(started.elapsed().as_secs_f64()),
    });
    println!("{summary}");

    for i in 0..4 {
        let bound = base[i] + ((base[i] as f64 * RSS_GROWTH) as u64).max(RSS_SLACK_KB);
        assert!(
            end[i] <= bound,
            "node-{}'s RSS grew under the flood: {} kB after {BASELINE_S} s, {} kB at the end (bound {bound} kB)",
            i + 1,
            base[i],
            end[i]
        );
        assert!(
            rejected[i] + duplicates[i] >= 1_000,
            "node-{} hardly saw the flood: {} rejected, {} duplicates",
            i + 1,
            rejected[i],
            duplicates[i]
        );
    }
    for i in 0..4 {
        net.stop(i);
    }
    for (i, node) in net.nodes.iter().enumerate() {
        let log = std::fs::read(&node.log).unwrap();
        let logged = log.len() as u64 - logged_before[i];
        println!("node-{}: {logged} bytes logged during the flood and the stop", i + 1);
        assert_plain_without_errors(i, &log);
        assert!(
            logged <= REPLAY_LOG_BOUND,
            "node-{} logged {logged} bytes during the flood (bound {REPLAY_LOG_BOUND}):\n{}",
            i + 1,
            head(&log)
        );
    }
}

/// A node's log in a file: no colour codes, and no ERROR line (a clean stop
/// included).
fn assert_plain_without_errors(i: usize, log: &[u8]) {
    assert!(
        !log.windows(2).any(|w| w == b"\x1b["),
        "node-{}'s log (a file) has ANSI escapes:\n{}",
        i + 1,
        head(log)
    );
    let text = String::from_utf8_lossy(log);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "node-{} logged errors: {errors:#?}", i + 1);
}

/// The first lines of a log, for a failure message.
fn head(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().take(40).collect();
    lines.join("\n")
}

struct Row {
    t: f64,
    rss_kb: Vec<u64>,
    cpu_pct: Vec<f64>,
    atk_cpu_pct: f64,
    atk_rate: Option<u64>,
}

fn print_table(rows: &[Row]) {
    println!(
        "{:>5} | {:>7} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>6} {:>6} | {:>7} {:>6}",
        "t s", "n1 MB", "n2 MB", "n3 MB", "n4 MB", "n1 %", "n2 %", "n3 %", "n4 %", "atk %", "atk/s"
    );
    for r in rows {
        print!("{:>5.1} |", r.t);
        for k in &r.rss_kb {
            print!(" {:>7.1}", *k as f64 / 1024.0);
        }
        print!(" |");
        for c in &r.cpu_pct {
            print!(" {c:>6.1}");
        }
        let rate = r.atk_rate.map(|r| r.to_string()).unwrap_or_default();
        println!(" | {:>7.1} {rate:>6}", r.atk_cpu_pct);
    }
}

/// The Python attacker, killed if the test fails before it exits.
struct Attacker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
}

impl Attacker {
    fn start(python: &str, flood_s: u64, rate: u64) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flood_attacker.py");
        let mut child = Command::new(python)
            .arg(script)
            .args(["7", &flood_s.to_string(), &rate.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python attacker");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "event": "text", "line": line }));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Attacker { child, stdin, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn expect(&self, event: &str, secs: u64) -> Value {
        let v = self
            .lines
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("no {event:?} from the attacker within {secs} s"));
        assert_eq!(v["event"], event, "{v}");
        v
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Follows one purchase (long polls) until it is done or `deadline`; its
/// latency from `asked`.
fn watch_purchase(api: &str, id: &str, asked: Instant, deadline: Instant) -> (Option<Duration>, Value) {
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().clamp(1, 4);
        last = get(api, &format!("/api/purchases/{id}?wait={left}")).unwrap_or(Value::Null);
        if last["status"] == "done" {
            return (Some(asked.elapsed()), last);
        }
        if last.is_null() {
            // Not known yet (or the node is busy answering): ask again.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    (None, last)
}

/// The fewest DDS participants any of `nodes` sees.
fn participants(net: &Net, nodes: &[usize]) -> u64 {
    nodes
        .iter()
        .map(|&i| {
            net.get(i, "/api/status")
                .and_then(|s| s["peers"]["dds_participants"].as_u64())
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0)
}

/// A stats counter from /api/status; maps (rejections by reason) are summed.
fn counter(status: &Value, key: &str) -> u64 {
    let v = &status["stats"][key];
    match v.as_object() {
        Some(m) => m.values().filter_map(Value::as_u64).sum(),
        None => v.as_u64().unwrap_or(0),
    }
}

/// The rise of each rejection reason's counter between two /api/status.
fn by_reason(before: &Value, after: &Value) -> Value {
    let Some(m) = after["stats"]["rejected"].as_object() else {
        return Value::Null;
    };
    m.iter()
        .map(|(k, v)| {
            let was = before["stats"]["rejected"][k].as_u64().unwrap_or(0);
            (k.clone(), json!(v.as_u64().unwrap_or(0).saturating_sub(was)))
        })
        .filter(|(_, v)| v != &json!(0))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// (VmRSS in kB, utime + stime in clock ticks) of a process.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14 and stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((rss, utime + stime))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// How long the malformed flood lasts: past one 10 s log interval, so a
/// summary line is due during it.
const MALFORMED_FLOOD_S: u64 = 12;
/// Malformed samples per second, over all kinds.
const MALFORMED_RATE: u64 = 2_000;
/// The most a node may log during the malformed flood (24 000 samples) and
/// its stop, all lines included. Measured: 2.4 KB, 12 lines about malformed
/// samples (per reason: the first, a count at 10 s, a count at the stop) and
/// the stop. Before the log was rate-limited the same flood wrote one
/// 150-270-byte line per sample, ~4.5 MB.
const MALFORMED_LOG_BOUND: u64 = 16 * 1024;

/// Not a `wallance::Vote`: 10 bytes where 136 are due.
#[derive(Debug, Serialize)]
struct Garbage {
    bytes: [u8; 10],
}

#[test]
fn a_malformed_flood_is_counted_by_reason_and_the_log_stays_short_and_plain() {
    if !test_inside(
        "a_malformed_flood_is_counted_by_reason_and_the_log_stays_short_and_plain",
        Loopback::Multicast,
    ) {
        return;
    }
    let mut net = Net::init(2, 5.0);
    for i in 0..2 {
        net.start_default_log(i);
    }
    net.wait_ready(&[0, 1]);
    let logged_before: Vec<u64> = net.nodes.iter().map(|n| file_len(&n.log)).collect();

    // A non-member writing our topics with our type names and bad contents.
    let raw = rustdds::DomainParticipantBuilder::new(7)
        .with_only_networks([std::net::IpAddr::from([127, 0, 0, 1])])
        .build()
        .expect("raw participant");
    let qos = |t: TopicId| t.qos(Duration::from_secs(1));
    let topic = |t: TopicId| {
        raw.create_topic(t.name().into(), t.spec().topic_type.into(), &qos(t), t.kind())
            .expect("topic")
    };
    let publisher = raw.create_publisher(&qos(TopicId::Vote)).expect("publisher");
    // Garbage on the consensus topic; shares and outcomes on the sync topic.
    let garbage = publisher
        .create_datawriter_no_key_cdr::<Garbage>(
            &topic(TopicId::Vote),
            Some(TopicId::Vote.writer_qos(Duration::from_secs(1))),
        )
        .expect("writer");
    let sync = publisher
        .create_datawriter_no_key_cdr::<wire::Sync>(
            &topic(TopicId::Share),
            Some(TopicId::Share.writer_qos(Duration::from_secs(1))),
        )
        .expect("writer");
    let readers_of = |t: TopicId| {
        raw.discovered_readers()
            .iter()
            .filter(|r| r.subscription_topic_data.topic_name() == t.name())
            .count()
    };
    wait("both nodes' readers", 30, || {
        [TopicId::Vote, TopicId::Share].iter().all(|&t| readers_of(t) >= 2)
    });
    let share = |topic: String| wire::Sync {
        msg: wire::SyncMessage::Share(wire::Share {
            sender: [1; 32],
            seq: 1,
            time_ms: 2,
            topic,
            value: 1.0,
            sig: [0; 64],
        }),
    };
    let outcome = wire::Sync {
        msg: wire::SyncMessage::Outcome(wire::Outcome {
            provider: [1; 32],
            requester: [2; 32],
            request_id: [3; 32],
            version: 1,
            ok: true,
            body: vec![0xff, 0xfe],
            sig: [0; 64],
        }),
    };
    // reason label -> samples written.
    let mut sent: Vec<(&str, u64)> = vec![("undecodable", 0), ("too_long", 0), ("nul_byte", 0), ("not_utf8", 0)];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(MALFORMED_FLOOD_S) {
        let due = t0.elapsed().as_millis() as u64 * MALFORMED_RATE / 1000;
        if n >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let k = (n % 4) as usize;
        let ok = match k {
            0 => garbage.write(Garbage { bytes: [0xAB; 10] }, None).is_ok(),
            1 => sync.write(share("t".repeat(100)), None).is_ok(),
            2 => sync.write(share("a\0b".into()), None).is_ok(),
            _ => sync.write(outcome.clone(), None).is_ok(),
        };
        if ok {
            sent[k].1 += 1;
        }
        n += 1;
    }
    println!("malformed samples written: {sent:?} in {:?}", t0.elapsed());

    // /metrics counts each kind under its reason, on both nodes.
    let counted = |i: usize, reason: &str| -> u64 {
        let text = get_text(&net.nodes[i].api, "/metrics").unwrap_or_default();
        let want = format!("wallance_dds_malformed_samples_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let all_counted = || (0..2).all(|i| sent.iter().all(|&(r, n)| counted(i, r) >= n));
    let started = Instant::now();
    while !all_counted() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..2 {
        let got: Vec<(&str, u64)> = sent.iter().map(|&(r, _)| (r, counted(i, r))).collect();
        println!("node-{} counted {got:?}", i + 1);
        for (&(reason, n), &(_, c)) in sent.iter().zip(&got) {
            // Matched before the flood, on loopback, taken at once: every
            // sample arrives, none twice.
            assert_eq!(c, n, "node-{}: {reason} counted {c} of {n} written", i + 1);
        }
    }
    for i in 0..2 {
        net.stop(i);
    }

    for (i, node) in net.nodes.iter().enumerate() {
        let log = std::fs::read(&node.log).unwrap();
        let text = String::from_utf8_lossy(&log);
        let during = log.len() as u64 - logged_before[i];
        println!(
            "node-{}: {} bytes logged before the flood, {during} during it and the stop",
            i + 1,
            logged_before[i]
        );
        assert_plain_without_errors(i, &log);
        assert!(
            text.contains("node started") && text.contains("stopping:"),
            "{}",
            head(&log)
        );
        let malformed_lines = text.lines().filter(|l| l.contains("malformed DDS sample")).count();
        // Per reason: the first sample, one count per 10 s interval, one at the stop.
        let line_bound = sent.len() * (1 + MALFORMED_FLOOD_S.div_ceil(10) as usize + 1);
        assert!(
            malformed_lines <= line_bound,
            "node-{}: {malformed_lines} malformed-sample lines, bound {line_bound}",
            i + 1
        );
        assert!(
            text.contains("more malformed DDS samples"),
            "node-{}: no count of the suppressed samples",
            i + 1
        );
        assert!(
            during <= MALFORMED_LOG_BOUND,
            "node-{} logged {during} bytes during the flood (bound {MALFORMED_LOG_BOUND}):\n{}",
            i + 1,
            head(&log)
        );
        println!("{text}");
    }
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
