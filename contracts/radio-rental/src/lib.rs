//! Radio rental: leases one of the node's radios (LoRa, BLE, ZigBee) to the
//! buyer for a time bought by the price.
//!
//! Parameters:
//! - `radio`: a radio name (`lora0`) or kind (`lora`, `ble`, `zigbee`); with
//!   a kind, the first free radio of that kind is leased.
//! - `action`: `lease` (default) or `status` (who holds which radio until
//!   when; costs the price too, like any purchase).
//!
//! Each DCoin buys a minute: a lease lasts `price * MINUTE_MS_PER_COIN /
//! UNITS_PER_COIN` from the consensus time, or
//! from the end of the buyer's current lease on the same radio (extension).
//! A radio leased to someone else until later is refused: leases never
//! overlap. Leases live in storage as `lease/<radio>` = `<holder>@<until>`.

use wallance_sdk::{
    Contract, Outcome, Purchase, ServiceInfo, UNITS_PER_COIN, coins, devices, format_coins, log, now_ms, storage,
};

/// Minimum price: ten minutes.
const PRICE: u64 = coins(10);
/// One DCoin unit buys one minute.
const MINUTE_MS_PER_COIN: u64 = 60_000;
const RADIO_KINDS: [&str; 3] = ["lora", "ble", "zigbee"];

struct RadioRental;

struct Lease {
    holder: String,
    until_ms: u64,
}

impl Contract for RadioRental {
    fn info() -> ServiceInfo {
        ServiceInfo::new(
            "radio-rental",
            PRICE,
            "Lease a LoRa, BLE or ZigBee radio; one unit buys one minute",
            env!("CARGO_PKG_VERSION"),
        )
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        if purchase.price < PRICE {
            return Err(format!(
                "the minimum price is {} DCoin, {} was paid",
                format_coins(PRICE),
                format_coins(purchase.price)
            ));
        }
        let radios: Vec<devices::DeviceInfo> = devices::list()
            .into_iter()
            .filter(|d| RADIO_KINDS.contains(&d.kind.as_str()))
            .collect();
        if radios.is_empty() {
            return Err("no radio is granted to this service".into());
        }
        let now = now_ms();
        match purchase.param("action").unwrap_or("lease") {
            "status" => Ok(status(&radios, now, Outcome::new("radio leases"))),
            "lease" => lease(&purchase, &radios, now),
            other => Err(format!("unknown action {other:?}: use lease or status")),
        }
    }
}

fn lease(purchase: &Purchase, radios: &[devices::DeviceInfo], now: u64) -> Result<Outcome, String> {
    let wanted = purchase
        .param("radio")
        .ok_or("missing parameter \"radio\" (a name like lora0 or a kind: lora, ble, zigbee)")?;
    let buyer = purchase.buyer_hex();
    let candidates: Vec<&devices::DeviceInfo> =
        radios.iter().filter(|r| r.name == wanted || r.kind == wanted).collect();
    if candidates.is_empty() {
        return Err(format!("no radio named or of kind {wanted:?} here"));
    }
    // Prefer a radio the buyer already holds (extension), then a free one.
    let chosen = candidates
        .iter()
        .find(|r| current_lease(&r.name, now).is_some_and(|l| l.holder == buyer))
        .or_else(|| candidates.iter().find(|r| current_lease(&r.name, now).is_none()));
    let Some(radio) = chosen else {
        let busy: Vec<String> = candidates
            .iter()
            .filter_map(|r| {
                current_lease(&r.name, now)
                    .map(|l| format!("{} held by {} until {}", r.name, short(&l.holder), l.until_ms))
            })
            .collect();
        return Err(format!("no free radio: {}", busy.join("; ")));
    };

    let start = current_lease(&radio.name, now)
        .filter(|l| l.holder == buyer)
        .map_or(now, |l| l.until_ms);
    // u128: price * ms never overflows, and a fraction of a coin buys a
    // fraction of a minute.
    let duration_ms = u64::try_from(
        u128::from(purchase.price) * u128::from(MINUTE_MS_PER_COIN) / u128::from(UNITS_PER_COIN),
    )
    .map_err(|_| "price too large")?;
    let until_ms = start.checked_add(duration_ms).ok_or("lease too long")?;
    let until_text = until_ms.to_string();
    devices::call(&radio.name, "assign", &[("holder", &buyer), ("until-ms", &until_text)])?;
    storage::set_string(&format!("lease/{}", radio.name), &format!("{buyer}@{until_ms}"));
    log::info(&format!("{} leased to {} until {until_ms}", radio.name, short(&buyer)));
    let outcome = Outcome::new(format!("{} is yours until {until_ms}", radio.name))
        .with("radio", &radio.name)
        .with("kind", &radio.kind)
        .with("until-ms", until_ms);
    Ok(outcome)
}

/// Adds one `radio/<name>` entry per radio: `free` or `<holder>@<until>`.
fn status(radios: &[devices::DeviceInfo], now: u64, mut outcome: Outcome) -> Outcome {
    for radio in radios {
        let state = match current_lease(&radio.name, now) {
            Some(lease) => format!("{}@{}", lease.holder, lease.until_ms),
            None => "free".to_string(),
        };
        outcome = outcome.with(format!("radio/{}", radio.name), state);
    }
    outcome
}

/// The lease on `radio` still running at `now`, if any.
fn current_lease(radio: &str, now: u64) -> Option<Lease> {
    let raw = storage::get_string(&format!("lease/{radio}"))?;
    let (holder, until) = raw.split_once('@')?;
    let until_ms: u64 = until.parse().ok()?;
    (until_ms > now).then(|| Lease {
        holder: holder.to_string(),
        until_ms,
    })
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

wallance_sdk::export_contract!(RadioRental);
