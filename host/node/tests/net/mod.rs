//! A network of real `wallance node` processes for end-to-end tests.
//! Every test using it runs inside a private network namespace first.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wallance::cli::client::{self, Conn};
use wallance::http::view::PurchaseView;

pub const BIN: &str = env!("CARGO_BIN_EXE_wallance");
pub const ESPRESSO: &str = env!("WALLANCE_ESPRESSO_WASM");
pub const COIN: u64 = 1_000_000;

#[derive(Debug)]
pub struct Node {
    pub config: PathBuf,
    pub api: String,
    pub token: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

#[derive(Debug)]
pub struct Net {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Net {
    /// `wallance init` for `n` members on loopback; node-1 hosts espresso.
    pub fn init(n: usize, sensor_hz: f64) -> Self {
        Self::init_with(n, sensor_hz, true)
    }

    pub fn init_with(n: usize, sensor_hz: f64, loopback: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["init".to_string(), "--nodes".into(), n.to_string(), "--dir".into()];
        args.push(dir.path().display().to_string());
        args.extend([
            "--sensor-hz".into(),
            sensor_hz.to_string(),
            "--domain".into(),
            "7".into(),
        ]);
        if loopback {
            args.push("--loopback".into());
        }
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut nodes = Vec::new();
        for i in 1..=n {
            let config = dir.path().join(format!("node-{i}")).join("node.toml");
            let mut text = std::fs::read_to_string(&config).unwrap();
            let port = free_port();
            let old = text.lines().find(|l| l.starts_with("api_listen")).unwrap().to_string();
            text = text.replace(&old, &format!("api_listen = \"127.0.0.1:{port}\""));
            if i == 1 {
                text.push_str("\n[[devices]]\nname = \"espresso-machine\"\nkind = \"espresso-machine\"\nwater_ml = 5000\nbeans_g = 1000\ngrant = [\"espresso\"]\n");
                std::fs::copy(ESPRESSO, config.parent().unwrap().join("contracts/espresso.wasm")).unwrap();
            }
            std::fs::write(&config, &text).unwrap();
            let token = text
                .lines()
                .find(|l| l.starts_with("api_token"))
                .and_then(|l| l.split('"').nth(1))
                .unwrap()
                .to_string();
            nodes.push(Node {
                log: config.parent().unwrap().join("node.log"),
                config,
                api: format!("http://127.0.0.1:{port}"),
                token,
                child: None,
            });
        }
        Net { dir, nodes }
    }

    pub fn start(&mut self, i: usize) {
        self.start_with(i, &[]);
    }

    /// Starts node `i` (0-based); `prefix` wraps the command (e.g. `ip netns exec ns`).
    pub fn start_with(&mut self, i: usize, prefix: &[&str]) {
        self.spawn(i, prefix, Some("info,rustdds=warn"));
    }

    /// Starts node `i` as an operator would: no `RUST_LOG`, so the node's
    /// own default filter.
    pub fn start_default_log(&mut self, i: usize) {
        self.spawn(i, &[], None);
    }

    /// Starts node `i` with another program: `program[0]` run with the
    /// rest of `program`, then `node --config <its config>`.
    pub fn start_program(&mut self, i: usize, program: &[&str]) {
        self.spawn_program(i, program, Some("info,rustdds=warn"));
    }

    fn spawn(&mut self, i: usize, prefix: &[&str], rust_log: Option<&str>) {
        let mut program = prefix.to_vec();
        program.push(BIN);
        self.spawn_program(i, &program, rust_log);
    }

    fn spawn_program(&mut self, i: usize, program: &[&str], rust_log: Option<&str>) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = Command::new(program[0]);
        cmd.args(&program[1..]);
        cmd.args(["node", "--config"]).arg(&node.config);
        match rust_log {
            Some(filter) => cmd.env("RUST_LOG", filter),
            None => cmd.env_remove("RUST_LOG"),
        };
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        node.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(status)) = c.try_wait() {
                    assert!(status.success(), "node {i} exited with {status} on SIGTERM");
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("node {i} did not stop within 10 s of SIGTERM");
        }
    }

    pub fn get(&self, i: usize, path: &str) -> Option<Value> {
        get(&self.nodes[i].api, path)
    }

    /// Buys espresso on node `i`, returns the request id.
    pub fn buy(&self, i: usize, params: &[(&str, &str)]) -> String {
        let price = self.price();
        let params: serde_json::Map<String, Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let body = serde_json::json!({ "service": "espresso", "price": price, "params": params });
        let (status, v) = post(&self.nodes[i].api, "/api/buy", Some(&self.nodes[i].token), &body);
        assert_eq!(status, 202, "buy refused: {v}");
        v["request_id"].as_str().unwrap().to_string()
    }

    pub fn price(&self) -> u64 {
        let s = self.get(1, "/api/services").unwrap();
        s.as_array().unwrap().iter().find(|s| s["name"] == "espresso").unwrap()["price"]
            .as_u64()
            .unwrap()
    }

    /// Waits until every running node sees every other and the service.
    pub fn wait_ready(&self, running: &[usize]) {
        wait("discovery", 60, || {
            running.iter().all(|&i| {
                self.get(i, "/api/status").is_some_and(|s| {
                    s["services"].as_u64().unwrap_or(0) >= 1
                        && s["peers"]["dds_participants"].as_u64().unwrap_or(0) + 1 >= running.len() as u64
                })
            })
        });
    }

    /// Waits until node `i` can spend `units`.
    /// Waits until node `i` can pay a purchase at `price`: the price plus
    /// the voter reward the buyer pays (read from the node's view).
    pub fn wait_funds(&self, i: usize, price: u64) {
        let name = format!("node-{}", i + 1);
        let reward = self
            .get(i, "/api/view")
            .and_then(|v| v["reward_units"].as_u64())
            .unwrap_or(0);
        let units = price + reward;
        wait("funds", 60, || {
            self.get(i, "/api/wallets").is_some_and(|w| {
                w.as_array()
                    .unwrap()
                    .iter()
                    .any(|w| w["name"] == name.as_str() && w["spendable"].as_u64().unwrap_or(0) >= units)
            })
        });
    }

    /// Waits (the CLI's long poll, no polling loop) for purchase `id`'s
    /// outcome at node `i`, and returns the node's record of it.
    pub fn wait_done(&self, i: usize, id: &str) -> PurchaseView {
        let conn = Conn {
            api: self.nodes[i].api.clone(),
            token: None,
            json: false,
        };
        let p = client::wait_for(&conn, id, 60).unwrap_or_else(|e| {
            self.dump_logs();
            panic!("purchase {id} at node {i}: {e:#}")
        });
        assert!(p.outcome.is_some(), "purchase {id} settled without an outcome: {p:?}");
        p
    }

    /// Purchase `id`'s record at node `i` once it holds both its outcome
    /// and its verdict. They arrive in either order: a requester back from
    /// a crash may settle from a relayed quorum before it has asked for
    /// the outcome again, and a record with its outcome may gain its
    /// verdict a few ms later, so [`Net::wait_done`] can return either.
    pub fn wait_complete(&self, i: usize, id: &str) -> PurchaseView {
        let conn = Conn {
            api: self.nodes[i].api.clone(),
            token: None,
            json: false,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = client::wait_for(&conn, id, 60).unwrap_or_else(|e| {
                self.dump_logs();
                panic!("purchase {id} at node {i}: {e:#}")
            });
            if p.outcome.is_some() && p.verdict.is_some() {
                return p;
            }
            if Instant::now() >= deadline {
                self.dump_logs();
                panic!("purchase {id} at node {i}: no outcome and verdict both after 60 s: {p:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Committed fields of every wallet at node `i`.
    pub fn committed(&self, i: usize) -> Option<Vec<(String, u64, String, u64)>> {
        let w = self.get(i, "/api/wallets")?;
        Some(
            w.as_array()?
                .iter()
                .map(|w| {
                    (
                        w["name"].as_str().unwrap_or("").to_string(),
                        w["version"].as_u64().unwrap_or(0),
                        w["state"].as_str().unwrap_or("").to_string(),
                        w["balance"].as_u64().unwrap_or(0),
                    )
                })
                .collect(),
        )
    }

    /// Waits until the given nodes hold identical committed wallets.
    pub fn wait_agree(&self, nodes: &[usize], secs: u64) {
        wait("agreement", secs, || {
            let first = self.committed(nodes[0]);
            first.is_some() && nodes.iter().all(|&i| self.committed(i) == first)
        });
    }

    pub fn version_of(&self, at: usize, member: usize) -> u64 {
        let name = format!("node-{}", member + 1);
        self.get(at, "/api/wallets")
            .and_then(|w| {
                w.as_array()
                    .unwrap()
                    .iter()
                    .find(|w| w["name"] == name.as_str())
                    .cloned()
            })
            .and_then(|w| w["version"].as_u64())
            .unwrap_or(0)
    }

    pub fn dump_logs(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            eprintln!("--- node-{} log tail ---", i + 1);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn get(api: &str, path: &str) -> Option<Value> {
    let mut r = agent().get(&format!("{api}{path}")).call().ok()?;
    if r.status() != 200 {
        return None;
    }
    r.body_mut().read_json().ok()
}

/// A 200 answer's body as text (e.g. `/metrics`).
pub fn get_text(api: &str, path: &str) -> Option<String> {
    let mut r = agent().get(&format!("{api}{path}")).call().ok()?;
    if r.status() != 200 {
        return None;
    }
    r.body_mut().read_to_string().ok()
}

pub fn post(api: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = agent().post(&format!("{api}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.send_json(body).unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

pub fn wait(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sh(cmd: &str) {
    let status = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(status.success(), "`{cmd}` failed: {status}");
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}
