//! `kill -9` a writer at random moments; every acknowledged commit must be
//! in the file, the file must open, and it must hold exactly the steps
//! 1..=S of the workload for some S no less than the last acknowledged.
//!
//! One binary plays both parts (`harness = false`): started normally it is
//! the parent; re-executed with `WALLANCE_CRASH_CHILD=<path>` it is the
//! writer, printing `ACK <seq>` after each commit returns. Set
//! `WALLANCE_CRASH_SEED` to replay a failing run.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::workload;
use wallance_core::Snapshot;
use wallance_store::Store;

const CHILD_ENV: &str = "WALLANCE_CRASH_CHILD";
const N_MEMBERS: u32 = 1_000;
const ROUNDS: u64 = 12;

fn main() -> Result<()> {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return writer(Path::new(&path));
    }
    let seed = match std::env::var("WALLANCE_CRASH_SEED") {
        Ok(s) => s.parse().context("WALLANCE_CRASH_SEED")?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    println!("crash test seed {seed} (replay with WALLANCE_CRASH_SEED={seed})");
    let started = Instant::now();
    parent(seed).with_context(|| format!("crash test failed, seed {seed}"))?;
    println!("crash test passed in {:.1?}", started.elapsed());
    Ok(())
}

/// Commits workload steps after the last one in the file, forever.
fn writer(path: &Path) -> Result<()> {
    let members = workload::members(N_MEMBERS);
    let (mut store, snap) = Store::open(path, &members)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN {}", snap.share_seq)?;
    out.flush()?;
    for seq in snap.share_seq + 1.. {
        let kv = [("counter".to_string(), b"seq".to_vec(), Some(seq.to_le_bytes().to_vec()))];
        store.commit_with_kv(&workload::decision(seq, &members), &kv)?;
        writeln!(out, "ACK {seq}")?;
        out.flush()?;
    }
    Ok(())
}

fn parent(seed: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("node.redb");
    let members = workload::members(N_MEMBERS);
    let exe = std::env::current_exe()?;
    // The model: steps 1..=applied of the workload.
    let mut model = Snapshot::default();
    let mut applied = 0u64;
    let mut total_acked = 0u64;

    for round in 0..ROUNDS {
        let r = workload::mix(seed ^ round);
        // Some rounds kill the writer before its first commit, even while
        // it creates or opens the file; most let it commit a while.
        let acks_before_kill = if r.is_multiple_of(5) { 0 } else { r % 400 };
        let extra_delay = Duration::from_micros((r >> 20) % 2_000);

        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let mut last_ack = None;
        let mut acks = 0;
        while acks < acks_before_kill {
            let Some(line) = lines.next() else {
                bail!("writer exited early: {:?}", child.wait()?);
            };
            let line = line?;
            if let Some(n) = line.strip_prefix("ACK ") {
                last_ack = Some(n.parse::<u64>()?);
                acks += 1;
            }
        }
        // Land the kill at an arbitrary point of a commit.
        std::thread::sleep(extra_delay);
        child.kill()?; // SIGKILL on Unix
        let status = child.wait()?;
        ensure!(!status.success(), "writer was not killed: {status}");
        // Acknowledgements printed before the kill are still in the pipe.
        for line in lines {
            if let Some(n) = line?.strip_prefix("ACK ") {
                last_ack = Some(n.parse::<u64>()?);
                acks += 1;
            }
        }
        total_acked += acks;

        let t = Instant::now();
        let (store, snap) =
            Store::open(&path, &members).with_context(|| format!("reopen after kill in round {round}"))?;
        let reopen = t.elapsed();
        let in_file = snap.share_seq;
        if let Some(last) = last_ack {
            ensure!(
                in_file >= last,
                "round {round}: step {last} was acknowledged but the file ends at {in_file}"
            );
        }
        // At most the one commit in flight when killed is in but unacknowledged.
        let acked_or_start = last_ack.unwrap_or(applied);
        ensure!(
            in_file <= acked_or_start + 1,
            "round {round}: file at step {in_file}, but only {acked_or_start} were written"
        );
        ensure!(
            in_file >= applied,
            "round {round}: file went back from {applied} to {in_file}"
        );
        while applied < in_file {
            applied += 1;
            model.apply(&workload::decision(applied, &members));
        }
        ensure!(snap == model, "round {round}: file differs from steps 1..={in_file}");
        let counter = store.kv_get("counter", b"seq")?;
        let expected = (in_file > 0).then(|| in_file.to_le_bytes().to_vec());
        ensure!(
            counter == expected,
            "round {round}: contract kv {counter:?} does not match step {in_file}"
        );
        println!(
            "round {round:2}: {acks:3} acks, killed after +{extra_delay:?}; file at step {in_file}, reopened in {reopen:.1?}"
        );
    }
    ensure!(total_acked > 0, "no round committed anything");
    Ok(())
}
