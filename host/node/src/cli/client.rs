//! The operator's commands: talk to a node's API, reading its answers into
//! the same view types the API writes them from (`crate::http::view`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;
use wallance_core::UNITS_PER_COIN;

use crate::http::view::{
    ContractState, OutcomeView, PurchaseStatus, PurchaseView, ServiceView, StatusView, WalletView,
};

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
    agent_waiting(Duration::ZERO)
}

/// An agent whose requests may take `wait` more than the usual 10 s (long
/// polls).
fn agent_waiting(wait: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10) + wait))
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

/// GETs `path` and reads the answer as `T`.
pub fn get_as<T: DeserializeOwned>(conn: &Conn, path: &str) -> anyhow::Result<T> {
    get_waiting(conn, path, Duration::ZERO)
}

fn get_waiting<T: DeserializeOwned>(conn: &Conn, path: &str, wait: Duration) -> anyhow::Result<T> {
    let url = url(conn, path);
    let resp = agent_waiting(wait).get(&url).call().map_err(|e| unreachable(conn, e))?;
    let (status, body) = answer(&url, resp)?;
    if !(200..300).contains(&status) {
        bail!("{url}: {status}: {}", body["error"].as_str().unwrap_or("error"));
    }
    serde_json::from_value(body).with_context(|| format!("{url}: an answer this client does not understand"))
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
pub fn coins(units: u64) -> String {
    let text = format!("{}.{:06}", units / UNITS_PER_COIN, units % UNITS_PER_COIN);
    let keep = text.trim_end_matches('0').len().max(text.len() - 4);
    text[..keep].to_string()
}

/// The first `n` characters of an id, for tables.
fn short(id: &str, n: usize) -> &str {
    id.get(..n).unwrap_or(id)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn wallets(conn: &Conn) -> anyhow::Result<()> {
    let wallets: Vec<WalletView> = get_as(conn, "/api/wallets")?;
    if conn.json {
        return print_json(&wallets);
    }
    println!(
        "{:<12} {:>8} {:>10} {:>10} {:>8}  {:<13} last purchase",
        "member", "version", "balance", "spendable", "shares", "state"
    );
    for w in &wallets {
        let last = w.last_commit.as_ref().map_or_else(String::new, |l| {
            format!(
                "{} for {} DCoin ({}…)",
                l.service,
                coins(l.price),
                short(&l.request_id, 8)
            )
        });
        println!(
            "{:<12} {:>8} {:>10} {:>10} {:>8}  {:<13} {}",
            w.name,
            w.version,
            coins(w.balance),
            coins(w.spendable),
            w.shares,
            format!("{}…", short(&w.state, 12)),
            last
        );
    }
    Ok(())
}

pub fn services(conn: &Conn) -> anyhow::Result<()> {
    let services: Vec<ServiceView> = get_as(conn, "/api/services")?;
    if conn.json {
        return print_json(&services);
    }
    println!("{:<20} {:>8} {:<12} contract", "service", "price", "provider");
    for s in &services {
        println!(
            "{:<20} {:>8} {:<12} {}",
            s.name,
            coins(s.price),
            s.provider,
            short(&s.contract_hash, 16)
        );
    }
    Ok(())
}

pub fn produced(conn: &Conn) -> anyhow::Result<()> {
    let list: Vec<OutcomeView> = get_as(conn, "/api/produced")?;
    if conn.json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no outcome produced here yet");
    }
    for o in &list {
        let verdict = if o.ok { "served" } else { "refused (refunded)" };
        println!(
            "{} {} for {} v{}: {verdict}: {}",
            short(&o.request_id, 12),
            o.service,
            o.requester,
            o.version,
            o.body,
        );
        for line in &o.logs {
            println!("    {line}");
        }
    }
    Ok(())
}

pub fn status(conn: &Conn) -> anyhow::Result<()> {
    let s: StatusView = get_as(conn, "/api/status")?;
    if conn.json {
        return print_json(&s);
    }
    println!("{} ({}…), up {} s", s.me, short(&s.id, 8), s.uptime_s);
    println!(
        "  network   {} members, quorum {}, {} DDS peers",
        s.members, s.quorum, s.peers.dds_participants
    );
    let st = &s.stats;
    println!(
        "  consensus {} pending, {} commits, votes {} sent / {} received",
        s.pending, st.commits, st.votes_sent, st.votes_received
    );
    println!(
        "  services  {} on the network; contract runs {} ({} failed)",
        s.services, st.contract_runs, st.contract_failures
    );
    println!(
        "  traffic   {} shares, {} DDS samples ({} malformed), store {} bytes",
        st.shares_received, st.dds_received, st.dds_malformed, st.store_bytes
    );
    if !st.rejected.is_empty() {
        let parts: Vec<String> = st.rejected.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("  rejected  {}", parts.join(", "));
    }
    println!(
        "  contracts {} file(s) in {}",
        s.contracts.len(),
        s.contracts_dir.as_deref().unwrap_or("the contracts folder")
    );
    for c in &s.contracts {
        print_contract(c);
    }
    Ok(())
}

fn print_contract(c: &ContractState) {
    let file = c.file.rsplit('/').next().unwrap_or(&c.file);
    match (c.status.as_str(), &c.service, c.price) {
        ("loaded", Some(service), Some(price)) => {
            println!("    {file}: loaded, service {service} at {} DCoin", coins(price))
        }
        _ => println!("    {file}: REJECTED: {}", c.error.as_deref().unwrap_or("?")),
    }
}

/// Buys and waits until the contract's outcome (or the verdict) is back.
pub fn buy(
    conn: &Conn,
    service: &str,
    provider: Option<&str>,
    price_coins: f64,
    params: &[String],
    wait_s: u64,
) -> anyhow::Result<PurchaseView> {
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
) -> anyhow::Result<PurchaseView> {
    let id = request(conn, service, provider, price_coins, params)?;
    if !conn.json && !quiet {
        println!("request {}… sent, waiting for consensus", short(&id, 12));
    }
    let p = wait_for(conn, &id, wait_s)?;
    if !quiet {
        if conn.json {
            print_json(&p)?;
        } else {
            print_purchase(&p);
        }
    }
    match &p.outcome {
        Some(o) if o.ok => Ok(p),
        Some(o) if !quiet => bail!("the purchase committed but the contract refused: {}", o.body),
        None if !quiet && p.status == PurchaseStatus::Settled => {
            bail!("the purchase committed but no outcome came back; its price was refunded")
        }
        _ => Ok(p),
    }
}

/// Sends a purchase; returns its id once the node has made it durable.
pub fn request(
    conn: &Conn,
    service: &str,
    provider: Option<&str>,
    price_coins: f64,
    params: &[String],
) -> anyhow::Result<String> {
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
    Ok(body["request_id"]
        .as_str()
        .context("no request id in the answer")?
        .to_string())
}

/// Waits (long polls, no polling loop) until purchase `id` has its outcome
/// or verdict at the node, or `wait_s` has passed.
pub fn wait_for(conn: &Conn, id: &str, wait_s: u64) -> anyhow::Result<PurchaseView> {
    let deadline = Instant::now() + Duration::from_secs(wait_s);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // The node holds each poll open for at most 60 s.
        let p: PurchaseView = get_waiting(
            conn,
            &format!("/api/purchases/{id}?wait={}", left.as_secs().max(1)),
            left,
        )?;
        if p.finished() {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            bail!(
                "no outcome after {wait_s} s (status {:?}); follow it with `wallance purchase {id} --wait 60`",
                p.status
            );
        }
    }
}

/// `wallance purchase <id>`: the node's record of a purchase.
pub fn purchase(conn: &Conn, id: &str, wait_s: u64) -> anyhow::Result<PurchaseView> {
    let p = if wait_s > 0 {
        match wait_for(conn, id, wait_s) {
            Ok(p) => p,
            Err(_) => get_as(conn, &format!("/api/purchases/{id}"))?,
        }
    } else {
        get_as(conn, &format!("/api/purchases/{id}"))?
    };
    if conn.json {
        print_json(&p)?;
    } else {
        print_purchase(&p);
    }
    Ok(p)
}

fn print_purchase(p: &PurchaseView) {
    println!(
        "{} {} from {} for {} DCoin: {:?}",
        short(&p.request_id, 12),
        p.service,
        p.provider,
        coins(p.price),
        p.status
    );
    if let Some(c) = &p.commit {
        println!("  committed in {} ms (wallet version {})", c.latency_ms, c.version);
    }
    if let Some(o) = &p.outcome {
        let after = p.commit.as_ref().map(|c| o.at_ms.saturating_sub(c.at_ms));
        println!(
            "  outcome{}: {}{}",
            after.map_or_else(String::new, |ms| format!(" {ms} ms after the commit")),
            if o.ok { "" } else { "REFUSED: " },
            o.body
        );
    }
    if let Some(v) = &p.verdict {
        println!(
            "  verdict: {}",
            if v.paid {
                "the provider is paid"
            } else {
                "the price is refunded"
            }
        );
    }
}
