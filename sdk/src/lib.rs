//! Write Wallance service contracts in plain Rust.
//!
//! A Wallance node sells services (a cup of espresso, an hour of a LoRa
//! radio, some CPU time) to the other members of its network. Each service is
//! a *contract*: a small Rust crate compiled to WebAssembly and dropped into
//! the `contracts/` folder of the node that owns the device. This crate is
//! all a contract author needs: it hides the WebAssembly bindings behind one
//! trait and one macro.
//!
//! # From zero to a running service
//!
//! 1. Install the WebAssembly target once:
//!    `rustup target add wasm32-unknown-unknown`.
//! 2. Create a library crate (or copy `examples/contract-template/`):
//!
//!    ```toml
//!    [package]
//!    name = "hello-service"
//!    version = "0.1.0"
//!    edition = "2024"
//!
//!    [lib]
//!    crate-type = ["cdylib"]
//!
//!    [dependencies]
//!    wallance-sdk = { path = "../../sdk" }
//!
//!    [profile.release]
//!    opt-level = "s"
//!    lto = true
//!    panic = "abort"
//!    ```
//!
//!    and a `.cargo/config.toml` so that a plain `cargo build` builds for
//!    WebAssembly with a small stack:
//!
//!    ```toml
//!    [build]
//!    target = "wasm32-unknown-unknown"
//!
//!    [target.wasm32-unknown-unknown]
//!    rustflags = ["-C", "link-arg=-zstack-size=65536"]
//!    ```
//!
//!    The 64 KiB stack (Rust's default is 1 MiB) keeps the pages a call
//!    touches within what the node keeps resident between calls, which
//!    halves the cost of a call. Deep recursion then stops the contract with
//!    an out-of-bounds trap (the stack sits at the bottom of memory, so an
//!    overflow never overwrites data).
//! 3. Write `src/lib.rs`:
//!
//!    ```
//!    use wallance_sdk::{Contract, Outcome, Purchase, ServiceInfo, log, storage};
//!
//!    struct Hello;
//!
//!    impl Contract for Hello {
//!        fn info() -> ServiceInfo {
//!            ServiceInfo::new("hello", 3, "Greets the buyer", env!("CARGO_PKG_VERSION"))
//!        }
//!
//!        fn purchase(purchase: Purchase) -> Result<Outcome, String> {
//!            let name = purchase.param("name").unwrap_or("stranger");
//!            let greeted = storage::get_u64("greeted").unwrap_or(0) + 1;
//!            storage::set_u64("greeted", greeted);
//!            log::info(&format!("greeting {name}"));
//!            Ok(Outcome::new(format!("hello, {name}")).with("greeted", greeted))
//!        }
//!    }
//!
//!    wallance_sdk::export_contract!(Hello);
//!    # fn main() {}
//!    ```
//! 4. `cargo build --release` gives
//!    `target/wasm32-unknown-unknown/release/hello_service.wasm`.
//! 5. Copy that file into the `contracts/` folder of a running node **as
//!    `hello.wasm`**: a contract file is named after the service it
//!    announces, and the node refuses a file whose name differs (so
//!    `hello_service.wasm` would be refused, with the name to use). The
//!    service's storage and devices belong to that file name, never to
//!    another file that claims it. The node picks the file up within
//!    milliseconds (no restart), checks it, compiles it and announces the
//!    service `hello` at price 3. Replacing the file upgrades the service;
//!    deleting it withdraws it.
//!
//! # What a contract can do
//!
//! Only what the node hands it, listed in the WIT world
//! `wallance:contract/contract` (repository folder `wit/`):
//!
//! - [`log`]: messages the node operator sees (bounded per call): the node
//!   logs them under the service's name and returns them with the outcome;
//! - [`now_ms`]: the consensus time of the purchase, the only clock;
//! - [`storage`]: a key-value store private to the service, persisted by the
//!   node; writes count only if [`Contract::purchase`] returns `Ok`;
//! - [`devices`]: the devices the operator granted to the service.
//!
//! There is no filesystem, network, random source or wall clock: every node
//! that runs the same purchase gets the same result. Every call runs with a
//! fuel budget (a deterministic instruction count), a memory cap and a
//! wall-clock backstop; a contract that exceeds them is stopped and the
//! purchase fails. A panic is reported to the node's log with its message
//! (its first KiB). A call may log 256 lines and 16 KiB; control characters
//! in logs, outcomes and refusal reasons reach the operator escaped.
//!
//! The node checks a contract file's shape before compiling it: at most
//! 10 000 functions, 2 MiB of code (512 KiB in one function, 10 000 locals
//! in one function), two memories, four tables, 1 000 imports, exports,
//! globals, data and element segments, 100 custom sections, 16 MiB in all
//! (`wallance_runtime::ModuleLimits`). A release build of a contract is far
//! below all of them; a debug build with DWARF may not be (strip it).
//!
//! # Why `wasm32-unknown-unknown` and not `wasm32-wasip2`
//!
//! Contracts build as plain core WebAssembly modules for
//! `wasm32-unknown-unknown`; the node turns each module into a component
//! (with the `wit-component` crate) when it loads it. We measured both ways
//! on a small contract: the `wasm32-unknown-unknown` module imports nothing
//! but our WIT interfaces, is half the size and compiles 1.7x faster in the
//! node, while a `wasm32-wasip2` build drags in WASI imports (clocks, random,
//! filesystem, environment) that a contract must not have and that the node
//! would have to stub. The author's path stays one `cargo build`; the target
//! is also the one every Rust install can add without extra tools.
//! A finished component (from any language) is accepted as well.

#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::fmt::Display;

// The generated bindings name this crate by absolute path so that the export
// macro works from contract crates; this makes the same path work in here.
extern crate self as wallance_sdk;

#[doc(hidden)]
// Generated by wit-bindgen; its style is not ours to lint.
#[allow(clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wallance:contract/contract",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::wallance_sdk::bindings",
        runtime_path: "::wallance_sdk::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    pub use crate::bindings::Guest;

    /// Installs the panic hook that forwards panic messages to the host log.
    /// Called at the start of every export: a contract instance is fresh for
    /// each call, so there is no earlier place that runs reliably.
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                // The node recognises the "panic: " prefix and reports the
                // message as the cause of the trap that follows.
                crate::log::error(&format!("panic: {info}"));
            }));
        });
    }
}

pub use bindings::wallance::contract::types::{Outcome, Purchase, ServiceInfo};

/// A service contract. Implement it on a unit struct and pass the struct to
/// [`export_contract!`].
pub trait Contract {
    /// What this contract sells. Keep it constant: the node calls it once at
    /// load time, with no purchase, storage or devices in reach.
    fn info() -> ServiceInfo;

    /// Serve one authorized purchase. Return `Err(reason)` to refuse it; the
    /// reason reaches the buyer and storage writes of this call are dropped.
    /// The buyer pays only for service rendered: `Ok` pays the provider the
    /// price; `Err`, a panic, a trap or a limit hit refunds the buyer
    /// (docs/protocol.md, Pay for service rendered).
    fn purchase(purchase: Purchase) -> Result<Outcome, String>;
}

/// Export a type implementing [`Contract`] as this crate's contract. Use it
/// exactly once, in the crate root.
#[macro_export]
macro_rules! export_contract {
    ($contract:ty) => {
        #[doc(hidden)]
        struct __WallanceExport;

        impl $crate::__private::Guest for __WallanceExport {
            fn info() -> $crate::ServiceInfo {
                $crate::__private::install_panic_hook();
                <$contract as $crate::Contract>::info()
            }

            fn purchase(purchase: $crate::Purchase) -> Result<$crate::Outcome, String> {
                $crate::__private::install_panic_hook();
                <$contract as $crate::Contract>::purchase(purchase)
            }
        }

        $crate::bindings::__export_world!(__WallanceExport with_types_in $crate::bindings);
    };
}

/// Integer units in one DCoin: money is never a float (0.2 has no exact
/// binary form, and nodes adding in a different order would disagree).
pub const UNITS_PER_COIN: u64 = 1_000_000;

/// `n` DCoin in units, for prices: `ServiceInfo::new("espresso", coins(2), ..)`.
pub const fn coins(n: u64) -> u64 {
    n * UNITS_PER_COIN
}

/// Units as DCoin for messages: `2`, `0.5`, `1.000001`.
pub fn format_coins(units: u64) -> String {
    let whole = units / UNITS_PER_COIN;
    let frac = units % UNITS_PER_COIN;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl ServiceInfo {
    /// `name` is how buyers address the service (lowercase letters, digits
    /// and '-'); `price` is in integer DCoin units (see [`coins`]).
    pub fn new(
        name: impl Into<String>,
        price: u64,
        description: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        ServiceInfo {
            name: name.into(),
            price,
            description: description.into(),
            version: version.into(),
        }
    }
}

impl Purchase {
    /// The first parameter the buyer passed under `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Parameter `key` parsed as `T`, with a message fit for the buyer when
    /// it is missing or malformed.
    pub fn param_parsed<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let raw = self.param(key).ok_or_else(|| format!("missing parameter {key:?}"))?;
        raw.parse()
            .map_err(|_| format!("parameter {key:?} is malformed: {raw:?}"))
    }

    /// The buyer's public key as lowercase hex.
    pub fn buyer_hex(&self) -> String {
        to_hex(&self.buyer)
    }

    /// The certificate identity as lowercase hex.
    pub fn certificate_hex(&self) -> String {
        to_hex(&self.certificate)
    }
}

impl Outcome {
    /// An outcome with a message and no structured data yet.
    pub fn new(message: impl Into<String>) -> Self {
        Outcome {
            message: message.into(),
            data: Vec::new(),
        }
    }

    /// Adds one structured result.
    pub fn with(mut self, key: impl Into<String>, value: impl Display) -> Self {
        self.data.push((key.into(), value.to_string()));
        self
    }
}

/// Lowercase hex of `bytes` (kept here so contracts need no extra crate).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// The consensus time of the purchase being served, in milliseconds.
pub fn now_ms() -> u64 {
    bindings::wallance::contract::clock::now_ms()
}

/// Messages for the node operator. The node writes each line to its own log
/// under the service's name (`tracing` target `wallance::contract`, field
/// `service`): `info`, `warn` and `error` at their level, so they show with
/// the node's default filter; `debug` only when the operator asks for debug
/// output. Every line, debug included, also comes back with the call's
/// outcome. The node keeps a bounded number of bytes per call and stops a
/// contract that logs more.
pub mod log {
    use crate::bindings::wallance::contract::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Key-value storage private to this service, persisted by the node.
///
/// Writes are buffered by the node during a call and committed only if
/// [`Contract::purchase`] returns `Ok`. Keys and
/// values have size limits and the service has a quota; exceeding them stops
/// the call.
pub mod storage {
    use crate::bindings::wallance::contract::storage as raw;

    pub fn get(key: &str) -> Option<Vec<u8>> {
        raw::get(key)
    }
    pub fn set(key: &str, value: &[u8]) {
        raw::set(key, value)
    }
    pub fn delete(key: &str) {
        raw::delete(key)
    }
    /// Keys starting with `prefix`, sorted, at most `limit`.
    pub fn keys(prefix: &str, limit: u32) -> Vec<String> {
        raw::keys(prefix, limit)
    }
    /// A UTF-8 string value.
    pub fn get_string(key: &str) -> Option<String> {
        get(key).and_then(|bytes| String::from_utf8(bytes).ok())
    }
    pub fn set_string(key: &str, value: &str) {
        set(key, value.as_bytes())
    }
    /// A `u64` stored as 8 little-endian bytes.
    pub fn get_u64(key: &str) -> Option<u64> {
        let bytes: [u8; 8] = get(key)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    }
    pub fn set_u64(key: &str, value: u64) {
        set(key, &value.to_le_bytes())
    }
}

/// Devices the node operator granted to this service.
///
/// Each call carries an idempotency key the node adds: the purchase id and
/// the call's position among this purchase's calls to that device. If the
/// node crashes after your contract drove a device but before it recorded
/// the purchase as served, it runs the purchase again; the device then
/// answers the repeated calls with its first answers instead of acting
/// twice (no second cup). Keep a purchase deterministic (same calls, same
/// order, same arguments for the same purchase) and this holds for you; a
/// repeated call with other arguments is refused. The node's built-in
/// devices remember recent keys in memory only; see the node's docs for
/// how far this goes across a restart.
pub mod devices {
    use crate::bindings::wallance::contract::devices as raw;

    pub use raw::DeviceInfo;

    /// The devices granted to this service.
    pub fn list() -> Vec<DeviceInfo> {
        raw::granted()
    }

    /// The first granted device of `kind` (e.g. "espresso-machine").
    pub fn find(kind: &str) -> Option<DeviceInfo> {
        list().into_iter().find(|device| device.kind == kind)
    }

    /// Sends `command` to device `name`; the answer is a list of key-value
    /// pairs, `Err` a refusal such as "no water".
    pub fn call(name: &str, command: &str, args: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        let args: Vec<(String, String)> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        raw::call(name, command, &args)
    }

    /// The value of `key` in a device answer.
    pub fn field<'a>(answer: &'a [(String, String)], key: &str) -> Option<&'a str> {
        answer.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }

    #[test]
    fn purchase_params_parse_with_buyer_friendly_errors() {
        let purchase = Purchase {
            buyer: vec![1; 32],
            price: 5,
            consensus_time_ms: 10,
            certificate: vec![2; 32],
            params: vec![("size".into(), "40".into()), ("size".into(), "99".into())],
        };
        assert_eq!(purchase.param("size"), Some("40"));
        assert_eq!(purchase.param_parsed::<u32>("size"), Ok(40));
        assert_eq!(
            purchase.param_parsed::<u32>("cups"),
            Err("missing parameter \"cups\"".to_string())
        );
        assert!(purchase.buyer_hex().starts_with("0101"));
    }

    #[test]
    fn outcome_builder_keeps_order() {
        let outcome = Outcome::new("ok").with("a", 1).with("b", "two");
        assert_eq!(outcome.data, vec![("a".into(), "1".into()), ("b".into(), "two".into())]);
    }
}
