//! A small real network for the operator's-interface tests: `wallance
//! init --loopback`, then one `wallance node` process per member, node-1
//! hosting the espresso contract. Callers must already run inside a private
//! network namespace (`wallance_dds::netns::test_inside`).

#![allow(dead_code)] // each test file uses a different part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_wallance");
pub const STEP: Duration = Duration::from_secs(60);

/// The workspace's target folder (where build.rs put the guest contracts).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A contract built by `host/node/build.rs`.
pub fn guest_wasm(crate_name: &str) -> PathBuf {
    let p = target_dir()
        .join("wasm-guests/wasm32-unknown-unknown/release")
        .join(format!("{crate_name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: `cargo build -p wallance` builds it",
        p.display()
    );
    p
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub api: String,
    pub token: Option<String>,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct Net {
    pub nodes: Vec<Node>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Members whose node.toml gets no api_token (1-based).
    pub without_token: Vec<usize>,
}

impl Net {
    /// Starts `n` nodes and waits until each sees the others and the espresso service.
    pub fn start(n: usize, opts: Options) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wallance-ui-").tempdir()?;
        let out = Command::new(BIN)
            .args([
                "init",
                "--loopback",
                "--sensor-hz",
                "5",
                "--api-port-base",
                "17070",
                "--nodes",
            ])
            .arg(n.to_string())
            .arg("--dir")
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            bail!("wallance init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut nodes = Vec::new();
        for i in 1..=n {
            let name = format!("node-{i}");
            let node_dir = dir.path().join(&name);
            let cfg_path = node_dir.join("node.toml");
            let mut cfg = std::fs::read_to_string(&cfg_path)?;
            let token = cfg
                .lines()
                .find_map(|l| l.strip_prefix("api_token = "))
                .map(|t| t.trim_matches('"').to_string());
            let token = if opts.without_token.contains(&i) {
                cfg = cfg
                    .lines()
                    .filter(|l| !l.starts_with("api_token"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
                None
            } else {
                token
            };
            if i == 1 {
                cfg.push_str(
                    "\n[[devices]]\nname = \"espresso-machine\"\nkind = \"espresso-machine\"\n\
                     water_ml = 1000\nbeans_g = 200\ngrant = [\"espresso\"]\n",
                );
                std::fs::copy(guest_wasm("espresso"), node_dir.join("contracts/espresso.wasm"))?;
            }
            std::fs::write(&cfg_path, cfg)?;
            nodes.push(Node {
                name,
                api: format!("http://127.0.0.1:{}", 17070 + i - 1),
                token,
                dir: node_dir,
            });
        }
        let mut net = Net {
            nodes,
            children: Vec::new(),
            _dir: dir,
        };
        for node in &net.nodes {
            let log = std::fs::File::create(node.dir.join("node.log"))?;
            let child = Command::new(BIN)
                .args(["node", "--config"])
                .arg(node.dir.join("node.toml"))
                .env("RUST_LOG", "info,rustdds=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            net.children.push(child);
        }
        net.wait("every node to see the others and the espresso service", STEP, |net| {
            for node in &net.nodes {
                let s = get(&node.api, "/api/status")?;
                if s["services"].as_u64() < Some(1) || s["peers"]["dds_participants"].as_u64() < Some(n as u64 - 1) {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        Ok(net)
    }

    /// Polls `ok` every 100 ms; on timeout, fails with the nodes' log tails.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last_err = None;
        while started.elapsed() < timeout {
            match ok(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "timed out after {} s waiting for {what} (last error: {last_err:?})\n{}",
            timeout.as_secs(),
            self.log_tails()
        )
    }

    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            out.push_str(&format!("--- {} log tail:\n", n.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// The espresso's listed price, in units.
    pub fn espresso_price(&self) -> anyhow::Result<u64> {
        let services = get(&self.nodes[1].api, "/api/services")?;
        services
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "espresso"))
            .and_then(|s| s["price"].as_u64())
            .context("node-2 does not list espresso")
    }

    /// Waits until `member`'s spendable balance (as node `at` holds it) reaches `units`.
    /// Waits until `member` can pay `price` plus the voter reward a buyer
    /// pays on top of it (read from the node's view).
    pub fn wait_spendable(&self, at: usize, member: &str, price: u64) -> anyhow::Result<()> {
        let reward = get(&self.nodes[at].api, "/api/view")?["reward_units"]
            .as_u64()
            .unwrap_or(0);
        let units = price + reward;
        self.wait(&format!("{member} to earn {units} units"), STEP, |net| {
            Ok(wallet(&net.nodes[at].api, member)?["spendable"].as_u64() >= Some(units))
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET, failing on anything but 2xx.
pub fn get(api: &str, path: &str) -> anyhow::Result<Value> {
    let mut resp = agent().get(format!("{api}{path}")).call()?;
    let status = resp.status();
    let body: Value = resp.body_mut().read_json()?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {body}");
    }
    Ok(body)
}

/// GET returning the status and the raw body.
pub fn get_raw(api: &str, path: &str) -> anyhow::Result<(u16, String, String)> {
    let mut resp = agent().get(format!("{api}{path}")).call()?;
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((resp.status().as_u16(), ctype, resp.body_mut().read_to_string()?))
}

/// POST a raw body with an optional bearer token; returns status and JSON.
pub fn post(api: &str, path: &str, token: Option<&str>, body: &str) -> anyhow::Result<(u16, Value)> {
    let mut req = agent()
        .post(format!("{api}{path}"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send(body)?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string()?;
    let json = serde_json::from_str(&text).with_context(|| format!("{path} answered {status}, not JSON: {text}"))?;
    Ok((status, json))
}

pub fn wallet(api: &str, member: &str) -> anyhow::Result<Value> {
    get(api, "/api/wallets")?
        .as_array()
        .and_then(|a| a.iter().find(|w| w["name"] == member))
        .cloned()
        .with_context(|| format!("no wallet {member}"))
}
