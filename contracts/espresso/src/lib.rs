//! Espresso: brews a cup on the node's espresso machine for the buyer.
//!
//! Parameters: `size` = `ristretto` (20 ml), `espresso` (40 ml, default),
//! `lungo` (110 ml), or `size-ml` = a number of millilitres (15 to 250).
//! Needs a granted device of kind `espresso-machine`, which answers
//! `status` (`water-ml`, `beans-g`) and `brew` (`size-ml`).
//! Counts cups in storage, in total and per buyer.

use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, coins, devices, format_coins, log, storage};

/// Two DCoin a cup.
const PRICE: u64 = coins(2);
const SIZE_ML_MIN: u32 = 15;
const SIZE_ML_MAX: u32 = 250;

struct Espresso;

impl Contract for Espresso {
    fn info() -> ServiceInfo {
        ServiceInfo::new(
            "espresso",
            PRICE,
            "A cup of espresso from the node's machine (size: ristretto, espresso, lungo)",
            env!("CARGO_PKG_VERSION"),
        )
    }

    fn purchase(purchase: Purchase) -> Result<Outcome, String> {
        if purchase.price < PRICE {
            return Err(format!(
                "a cup costs {} DCoin, {} was paid",
                format_coins(PRICE),
                format_coins(purchase.price)
            ));
        }
        let (size_name, size_ml) = chosen_size(&purchase)?;
        let machine = devices::find("espresso-machine").ok_or("no espresso machine is granted to this service")?;

        // Ask first so the buyer learns why nothing was brewed; the machine
        // checks again when brewing.
        let status = devices::call(&machine.name, "status", &[])?;
        let water_ml = number(&status, "water-ml")?;
        let beans_g = number(&status, "beans-g")?;
        if water_ml == 0 {
            return Err("the machine has no water".into());
        }
        if beans_g == 0 {
            return Err("the machine has no beans".into());
        }
        if water_ml < u64::from(size_ml) {
            return Err(format!(
                "the machine has {water_ml} ml of water, a {size_name} needs {size_ml} ml"
            ));
        }

        let size_text = size_ml.to_string();
        let brewed = devices::call(&machine.name, "brew", &[("size-ml", &size_text)])?;

        let cups_total = storage::get_u64("cups").unwrap_or(0) + 1;
        storage::set_u64("cups", cups_total);
        let buyer_key = format!("cups/{}", purchase.buyer_hex());
        let cups_buyer = storage::get_u64(&buyer_key).unwrap_or(0) + 1;
        storage::set_u64(&buyer_key, cups_buyer);

        log::info(&format!("cup {cups_total}: {size_name} ({size_ml} ml)"));
        Ok(Outcome::new(format!("brewed a {size_ml} ml {size_name}"))
            .with("size-ml", size_ml)
            .with("cup-number", cups_total)
            .with("cups-for-buyer", cups_buyer)
            .with("water-ml-left", number(&brewed, "water-ml")?)
            .with("beans-g-left", number(&brewed, "beans-g")?))
    }
}

fn chosen_size(purchase: &Purchase) -> Result<(&'static str, u32), String> {
    if purchase.param("size-ml").is_some() {
        let size_ml: u32 = purchase.param_parsed("size-ml")?;
        if !(SIZE_ML_MIN..=SIZE_ML_MAX).contains(&size_ml) {
            return Err(format!(
                "size-ml must be between {SIZE_ML_MIN} and {SIZE_ML_MAX}, got {size_ml}"
            ));
        }
        return Ok(("custom cup", size_ml));
    }
    match purchase.param("size").unwrap_or("espresso") {
        "ristretto" => Ok(("ristretto", 20)),
        "espresso" => Ok(("espresso", 40)),
        "lungo" => Ok(("lungo", 110)),
        other => Err(format!("unknown size {other:?}: choose ristretto, espresso or lungo")),
    }
}

fn number(answer: &[(String, String)], key: &str) -> Result<u64, String> {
    devices::field(answer, key)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("the machine's answer lacks a number {key:?}"))
}

wallance_sdk::export_contract!(Espresso);
