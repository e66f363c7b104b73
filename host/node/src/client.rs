//! The operator's commands: talk to a node's API.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use wallance_core::UNITS_PER_COIN;

#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:7070", env = "WALLANCE_API")]
    pub api: String,
    /// The node's api_token (for buy).
    #[arg(long, env = "WALLANCE_TOKEN")]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn get(conn: &Conn, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", conn.api.trim_end_matches('/'));
    let mut resp = agent()
        .get(&url)
        .call()
        .with_context(|| format!("cannot reach the node at {url}"))?;
    let status = resp.status();
    let body: Value = resp
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", body["error"].as_str().unwrap_or("error"));
    }
    Ok(body)
}

pub fn post(conn: &Conn, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}{path}", conn.api.trim_end_matches('/'));
    let mut req = agent().post(&url);
    if let Some(t) = &conn.token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send_json(body)
        .with_context(|| format!("cannot reach the node at {url}"))?;
    let status = resp.status().as_u16();
    let body: Value = resp
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} did not answer JSON"))?;
    Ok((status, body))
}

pub fn coins(v: &Value) -> String {
    format!("{:.2}", v.as_u64().unwrap_or(0) as f64 / UNITS_PER_COIN as f64)
}

pub fn wallets(conn: &Conn) -> anyhow::Result<()> {
    let w = get(conn, "/api/wallets")?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&w)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>8} {:>10} {:>10} {:>8}  state",
        "member", "version", "balance", "spendable", "shares"
    );
    for w in w.as_array().into_iter().flatten() {
        println!(
            "{:<12} {:>8} {:>10} {:>10} {:>8}  {}",
            w["name"].as_str().unwrap_or("?"),
            w["version"].as_u64().unwrap_or(0),
            coins(&w["balance"]),
            coins(&w["spendable"]),
            w["shares"].as_u64().unwrap_or(0),
            &w["state"].as_str().unwrap_or("")[..12.min(w["state"].as_str().unwrap_or("").len())]
        );
    }
    Ok(())
}

pub fn services(conn: &Conn) -> anyhow::Result<()> {
    let s = get(conn, "/api/services")?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("{:<20} {:>8} {:<12} contract", "service", "price", "provider");
    for s in s.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>8} {:<12} {}",
            s["name"].as_str().unwrap_or("?"),
            coins(&s["price"]),
            s["provider"].as_str().unwrap_or("?"),
            &s["contract_hash"].as_str().unwrap_or("")[..16.min(s["contract_hash"].as_str().unwrap_or("").len())]
        );
    }
    Ok(())
}

pub fn status(conn: &Conn) -> anyhow::Result<()> {
    let s = get(conn, "/api/status")?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "{} ({}…): up {} s, {} members (quorum {}), {} DDS peers, {} pending, {} commits, {} services on the network",
        s["me"].as_str().unwrap_or("?"),
        &s["id"].as_str().unwrap_or("")[..8.min(s["id"].as_str().unwrap_or("").len())],
        s["uptime_s"],
        s["members"],
        s["quorum"],
        s["peers"]["dds_participants"],
        s["pending"],
        s["stats"]["commits"],
        s["services"]
    );
    Ok(())
}

/// Buys and waits until the contract's outcome is back.
pub fn buy(conn: &Conn, service: &str, price_coins: f64, params: &[String], wait_s: u64) -> anyhow::Result<Value> {
    buy_quiet(conn, service, price_coins, params, wait_s, false)
}

/// [`buy`], printing nothing when `quiet` (the demo prints its own lines).
pub fn buy_quiet(
    conn: &Conn,
    service: &str,
    price_coins: f64,
    params: &[String],
    wait_s: u64,
    quiet: bool,
) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for p in params {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--param {p:?}: expected key=value"))?;
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    let price = (price_coins * UNITS_PER_COIN as f64).round() as u64;
    let (status, body) = post(
        conn,
        "/api/buy",
        &serde_json::json!({ "service": service, "price": price, "params": map }),
    )?;
    if status != 202 {
        bail!("purchase refused ({status}): {}", body["error"].as_str().unwrap_or("?"));
    }
    let id = body["request_id"]
        .as_str()
        .context("no request id in the answer")?
        .to_string();
    if !conn.json && !quiet {
        println!("request {}… sent, waiting for consensus", &id[..12]);
    }
    let started = Instant::now();
    loop {
        if let Ok(p) = get(conn, &format!("/api/purchases/{id}"))
            && p["status"] == "done"
        {
            if conn.json && !quiet {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else if !quiet {
                println!(
                    "committed in {} ms (wallet version {}), outcome from {}: {}{}",
                    p["commit"]["latency_ms"],
                    p["commit"]["version"],
                    p["outcome"]["provider"].as_str().unwrap_or("?"),
                    if p["outcome"]["ok"] == true { "" } else { "REFUSED: " },
                    p["outcome"]["body"].as_str().unwrap_or("")
                );
            }
            return Ok(p);
        }
        if started.elapsed() > Duration::from_secs(wait_s) {
            bail!("no outcome after {wait_s} s; follow it with GET /api/purchases/{id}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
