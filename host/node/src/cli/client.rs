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

/// Ends an operator's command: on error, one line on stderr and exit
/// status 1 (no backtrace: the reason is the node's or ours, not a bug).
pub fn finish(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn url(conn: &Conn, path: &str) -> String {
    format!("{}{path}", conn.api.trim_end_matches('/'))
}

fn unreachable(conn: &Conn, e: ureq::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the node's API at {} ({e}): is `wallance node` running there? \
         Point --api (or WALLANCE_API) at its api_listen",
        conn.api
    )
}

/// Reads a JSON answer; an error status becomes an error with the node's reason.
fn answer(url: &str, mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, Value)> {
    let status = resp.status().as_u16();
    let body: Value = resp
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} answered {status} but not JSON: is this a Wallance node?"))?;
    Ok((status, body))
}

pub fn get(conn: &Conn, path: &str) -> anyhow::Result<Value> {
    let url = url(conn, path);
    let resp = agent().get(&url).call().map_err(|e| unreachable(conn, e))?;
    let (status, body) = answer(&url, resp)?;
    if !(200..300).contains(&status) {
        bail!("{url}: {status}: {}", body["error"].as_str().unwrap_or("error"));
    }
    Ok(body)
}

pub fn post(conn: &Conn, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let url = url(conn, path);
    let mut req = agent().post(&url);
    if let Some(t) = &conn.token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let resp = req.send_json(body).map_err(|e| unreachable(conn, e))?;
    answer(&url, resp)
}

/// DCoin with two decimals, more when the amount needs them.
pub fn coins(v: &Value) -> String {
    let units = v.as_u64().unwrap_or(0);
    let text = format!("{}.{:06}", units / UNITS_PER_COIN, units % UNITS_PER_COIN);
    let keep = text.trim_end_matches('0').len().max(text.len() - 4);
    text[..keep].to_string()
}

pub fn wallets(conn: &Conn) -> anyhow::Result<()> {
    let w = get(conn, "/api/wallets")?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&w)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>8} {:>10} {:>10} {:>8}  {:<13} last purchase",
        "member", "version", "balance", "spendable", "shares", "state"
    );
    for w in w.as_array().into_iter().flatten() {
        let state = w["state"].as_str().unwrap_or("");
        let last = &w["last_commit"];
        let last = if last.is_object() {
            format!(
                "{} for {} DCoin ({}…)",
                last["service"].as_str().unwrap_or("?"),
                coins(&last["price"]),
                &last["request_id"].as_str().unwrap_or("")[..8.min(last["request_id"].as_str().unwrap_or("").len())]
            )
        } else {
            String::new()
        };
        println!(
            "{:<12} {:>8} {:>10} {:>10} {:>8}  {:<13} {}",
            w["name"].as_str().unwrap_or("?"),
            w["version"].as_u64().unwrap_or(0),
            coins(&w["balance"]),
            coins(&w["spendable"]),
            w["shares"].as_u64().unwrap_or(0),
            format!("{}…", &state[..12.min(state.len())]),
            last
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

pub fn produced(conn: &Conn) -> anyhow::Result<()> {
    let p = get(conn, "/api/produced")?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    let list = p.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no outcome produced since this node started");
    }
    for o in list {
        let verdict = if o["ok"] == true {
            "served"
        } else {
            "refused (refunded)"
        };
        println!(
            "{} {} for {} v{}: {verdict}: {}",
            &o["request_id"].as_str().unwrap_or("?")[..12.min(o["request_id"].as_str().unwrap_or("").len())],
            o["service"].as_str().unwrap_or("?"),
            o["requester"].as_str().unwrap_or("?"),
            o["version"].as_u64().unwrap_or(0),
            o["body"].as_str().unwrap_or(""),
        );
        for line in o["logs"].as_array().into_iter().flatten() {
            println!("    {}", line.as_str().unwrap_or(""));
        }
    }
    Ok(())
}

pub fn status(conn: &Conn) -> anyhow::Result<()> {
    let s = get(conn, "/api/status")?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let id = s["id"].as_str().unwrap_or("");
    println!(
        "{} ({}…), up {} s",
        s["me"].as_str().unwrap_or("?"),
        &id[..8.min(id.len())],
        s["uptime_s"]
    );
    println!(
        "  network   {} members, quorum {}, {} DDS peers",
        s["members"], s["quorum"], s["peers"]["dds_participants"]
    );
    let st = &s["stats"];
    println!(
        "  consensus {} pending, {} commits, votes {} sent / {} received",
        s["pending"], st["commits"], st["votes_sent"], st["votes_received"]
    );
    println!(
        "  services  {} on the network; contract runs {} ({} failed)",
        s["services"], st["contract_runs"], st["contract_failures"]
    );
    println!(
        "  traffic   {} shares, {} DDS samples ({} malformed), store {} bytes",
        st["shares_received"], st["dds_received"], st["dds_malformed"], st["store_bytes"]
    );
    if let Some(rejected) = st["rejected"].as_object().filter(|r| !r.is_empty()) {
        let parts: Vec<String> = rejected.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("  rejected  {}", parts.join(", "));
    }
    let contracts = s["contracts"].as_array().cloned().unwrap_or_default();
    println!(
        "  contracts {} file(s) in {}",
        contracts.len(),
        s["contracts_dir"].as_str().unwrap_or("the contracts folder")
    );
    for c in &contracts {
        let file = c["file"].as_str().unwrap_or("?");
        let file = file.rsplit('/').next().unwrap_or(file);
        match c["status"].as_str() {
            Some("loaded") => println!(
                "    {file}: loaded, service {} at {} DCoin",
                c["service"].as_str().unwrap_or("?"),
                coins(&c["price"])
            ),
            _ => println!("    {file}: REJECTED: {}", c["error"].as_str().unwrap_or("?")),
        }
    }
    Ok(())
}

/// Buys and waits until the contract's outcome is back.
pub fn buy(
    conn: &Conn,
    service: &str,
    provider: Option<&str>,
    price_coins: f64,
    params: &[String],
    wait_s: u64,
) -> anyhow::Result<Value> {
    buy_quiet(conn, service, provider, price_coins, params, wait_s, false)
}

/// [`buy`], printing nothing when `quiet` (the demo prints its own lines).
pub fn buy_quiet(
    conn: &Conn,
    service: &str,
    provider: Option<&str>,
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
    if !price_coins.is_finite() || price_coins < 0.0 {
        bail!("--price {price_coins}: expected a number of DCoin, 0 or more");
    }
    let price = (price_coins * UNITS_PER_COIN as f64).round() as u64;
    let (status, body) = post(
        conn,
        "/api/buy",
        &serde_json::json!({ "service": service, "provider": provider, "price": price, "params": map }),
    )?;
    if status != 202 {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        let hint = match status {
            401 => " (pass the node's api_token with --token or WALLANCE_TOKEN)",
            403 => " (set api_token in the node's node.toml and restart it)",
            404 => " (see `wallance services`)",
            409 if reason.contains("providers offer") => " (see `wallance services`, then pass --provider)",
            _ => "",
        };
        bail!("purchase refused ({status}): {reason}{hint}");
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
        // 404 until the node has seen its own request: keep asking.
        if let Ok(p) = get(conn, &format!("/api/purchases/{id}"))
            && p["status"] == "done"
        {
            if quiet {
            } else if conn.json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                println!(
                    "committed in {} ms (wallet version {}), outcome from {}: {}{}",
                    p["commit"]["latency_ms"],
                    p["commit"]["version"],
                    p["outcome"]["provider"].as_str().unwrap_or("?"),
                    if p["outcome"]["ok"] == true { "" } else { "REFUSED: " },
                    p["outcome"]["body"].as_str().unwrap_or("")
                );
            }
            if p["outcome"]["ok"] != true && !quiet {
                bail!(
                    "the purchase committed but the contract refused: {}",
                    p["outcome"]["body"].as_str().unwrap_or("?")
                );
            }
            return Ok(p);
        }
        if started.elapsed() > Duration::from_secs(wait_s) {
            bail!("no outcome after {wait_s} s; follow it with GET /api/purchases/{id}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
