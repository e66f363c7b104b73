//! Devices an operator grants to contracts, and simulated ones for boards
//! without the hardware (and for tests).
//!
//! A device is anything a contract may drive through the node: an espresso
//! machine on a relay board, a LoRa radio on SPI. Contracts address devices
//! by the name the operator gave them and send string commands with
//! key-value arguments; answers are key-value pairs too, so the WIT interface
//! stays stable while device kinds are added.
//!
//! Device calls act on the world immediately: unlike storage writes they are
//! not rolled back when the call later fails. Contracts should check first
//! (`status`) and act last.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A device the node can lend to contracts.
pub trait Device: Send + Sync + fmt::Debug {
    /// What it is: "espresso-machine", "lora", "ble", "zigbee", ...
    fn kind(&self) -> &str;
    /// Runs `command`. `Err` is a refusal or failure with a message for the
    /// buyer (e.g. "no water"); it is returned to the contract, not a trap.
    fn call(&self, command: &str, args: &[(String, String)]) -> Result<Vec<(String, String)>, String>;
}

/// The devices granted to one service, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Devices {
    by_name: BTreeMap<String, Arc<dyn Device>>,
}

impl fmt::Debug for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.by_name.iter().map(|(n, d)| (n, d.kind())))
            .finish()
    }
}

impl Devices {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: impl Into<String>, device: Arc<dyn Device>) -> Self {
        self.insert(name, device);
        self
    }

    pub fn insert(&mut self, name: impl Into<String>, device: Arc<dyn Device>) {
        self.by_name.insert(name.into(), device);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Device>> {
        self.by_name.get(name)
    }

    /// (name, kind) of each device, sorted by name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.by_name
            .iter()
            .map(|(name, device)| (name.clone(), device.kind().to_string()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// One device in the node's config file, e.g.
///
/// ```toml
/// [[device]]
/// name = "espresso"
/// kind = "espresso-machine"
/// water_ml = 1000
/// beans_g = 200
/// grant = ["espresso"]
///
/// [[device]]
/// name = "lora0"
/// kind = "lora"
/// grant = ["radio-rental"]
/// ```
// No `deny_unknown_fields`: serde does not support it together with
// `flatten`, and it rejects every field of the flattened kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct DeviceConfig {
    pub name: String,
    #[serde(flatten)]
    pub kind: SimulatedKind,
    /// Services (by name) allowed to use this device.
    #[serde(default)]
    pub grant: Vec<String>,
}

/// The simulated device kinds this crate ships. A node with real hardware
/// implements [`Device`] itself and adds it to [`DeviceGrants`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SimulatedKind {
    EspressoMachine { water_ml: u64, beans_g: u64 },
    Lora,
    Ble,
    Zigbee,
}

/// All devices of a node and which services each is granted to.
#[derive(Clone, Default)]
pub struct DeviceGrants {
    devices: BTreeMap<String, (Arc<dyn Device>, Vec<String>)>,
}

impl fmt::Debug for DeviceGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.devices.iter().map(|(n, (d, g))| (n, (d.kind().to_string(), g))))
            .finish()
    }
}

impl DeviceGrants {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds simulated devices from the operator's config.
    pub fn from_config(config: &[DeviceConfig]) -> Self {
        let mut grants = DeviceGrants::new();
        for entry in config {
            let device: Arc<dyn Device> = match &entry.kind {
                SimulatedKind::EspressoMachine { water_ml, beans_g } => {
                    Arc::new(EspressoMachine::new(*water_ml, *beans_g))
                }
                SimulatedKind::Lora => Arc::new(Radio::new(RadioKind::Lora)),
                SimulatedKind::Ble => Arc::new(Radio::new(RadioKind::Ble)),
                SimulatedKind::Zigbee => Arc::new(Radio::new(RadioKind::Zigbee)),
            };
            grants.add(entry.name.clone(), device, entry.grant.clone());
        }
        grants
    }

    /// Adds a device granted to the given services.
    pub fn add(&mut self, name: String, device: Arc<dyn Device>, services: Vec<String>) {
        self.devices.insert(name, (device, services));
    }

    pub fn device(&self, name: &str) -> Option<&Arc<dyn Device>> {
        self.devices.get(name).map(|(device, _)| device)
    }

    /// The devices granted to `service`: what the node passes to
    /// `Runtime::invoke` for it.
    pub fn for_service(&self, service: &str) -> Devices {
        let mut devices = Devices::new();
        for (name, (device, services)) in &self.devices {
            if services.iter().any(|s| s == service) {
                devices.insert(name.clone(), device.clone());
            }
        }
        devices
    }
}

fn arg<'a>(args: &'a [(String, String)], key: &str) -> Option<&'a str> {
    args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn parse_arg(args: &[(String, String)], key: &str) -> Result<u64, String> {
    let raw = arg(args, key).ok_or_else(|| format!("missing argument {key:?}"))?;
    raw.parse()
        .map_err(|_| format!("argument {key:?} is not a number: {raw:?}"))
}

/// A simulated espresso machine with a water tank and a bean hopper.
///
/// Commands: `status` → `water-ml`, `beans-g`, `cups`; `brew` with
/// `size-ml` → the same fields after brewing, or `Err("no water")`,
/// `Err("no beans")`. A cup takes its size in water and 7 g of beans
/// (10 g above 60 ml).
#[derive(Debug)]
pub struct EspressoMachine {
    state: Mutex<EspressoState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspressoState {
    pub water_ml: u64,
    pub beans_g: u64,
    pub cups: u64,
}

impl EspressoMachine {
    pub fn new(water_ml: u64, beans_g: u64) -> Self {
        EspressoMachine {
            state: Mutex::new(EspressoState {
                water_ml,
                beans_g,
                cups: 0,
            }),
        }
    }

    pub fn state(&self) -> EspressoState {
        *self.lock()
    }

    /// The operator refills the machine.
    pub fn refill(&self, water_ml: u64, beans_g: u64) {
        let mut state = self.lock();
        state.water_ml += water_ml;
        state.beans_g += beans_g;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EspressoState> {
        // The state is plain numbers updated together; poisoning cannot
        // leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn beans_for(size_ml: u64) -> u64 {
        if size_ml > 60 { 10 } else { 7 }
    }
}

impl Device for EspressoMachine {
    fn kind(&self) -> &str {
        "espresso-machine"
    }

    fn call(&self, command: &str, args: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let mut state = self.lock();
        match command {
            "status" => {}
            "brew" => {
                let size_ml = parse_arg(args, "size-ml")?;
                if size_ml == 0 || size_ml > 500 {
                    return Err(format!("cannot brew {size_ml} ml"));
                }
                if state.water_ml < size_ml {
                    return Err("no water".into());
                }
                let beans_g = Self::beans_for(size_ml);
                if state.beans_g < beans_g {
                    return Err("no beans".into());
                }
                state.water_ml -= size_ml;
                state.beans_g -= beans_g;
                state.cups += 1;
            }
            other => return Err(format!("espresso machine: unknown command {other:?}")),
        }
        Ok(vec![
            ("water-ml".into(), state.water_ml.to_string()),
            ("beans-g".into(), state.beans_g.to_string()),
            ("cups".into(), state.cups.to_string()),
        ])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadioKind {
    Lora,
    Ble,
    Zigbee,
}

impl RadioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RadioKind::Lora => "lora",
            RadioKind::Ble => "ble",
            RadioKind::Zigbee => "zigbee",
        }
    }
}

/// A simulated radio that can be assigned to one buyer until a time.
///
/// Commands: `status` → `kind`, `holder` (hex key or empty), `until-ms`;
/// `assign` with `holder`, `until-ms` → the same; `release`. A real radio
/// would install the holder's key so only they can transmit; the lease
/// rules (no overlap) are the contract's, the radio only obeys.
#[derive(Debug)]
pub struct Radio {
    kind: RadioKind,
    assignment: Mutex<Option<(String, u64)>>,
}

impl Radio {
    pub fn new(kind: RadioKind) -> Self {
        Radio {
            kind,
            assignment: Mutex::new(None),
        }
    }

    /// (holder, until ms) if assigned.
    pub fn assignment(&self) -> Option<(String, u64)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, u64)>> {
        // Replaced as a whole; poisoning cannot leave it half-written.
        self.assignment.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Device for Radio {
    fn kind(&self) -> &str {
        self.kind.as_str()
    }

    fn call(&self, command: &str, args: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let mut assignment = self.lock();
        match command {
            "status" => {}
            "assign" => {
                let holder = arg(args, "holder").ok_or("missing argument \"holder\"")?;
                if holder.is_empty() || holder.len() > 128 {
                    return Err("holder must be 1 to 128 characters".into());
                }
                let until_ms = parse_arg(args, "until-ms")?;
                *assignment = Some((holder.to_string(), until_ms));
            }
            "release" => *assignment = None,
            other => return Err(format!("{} radio: unknown command {other:?}", self.kind())),
        }
        let (holder, until_ms) = assignment.clone().unwrap_or_default();
        Ok(vec![
            ("kind".into(), self.kind().to_string()),
            ("holder".into(), holder),
            ("until-ms".into(), until_ms.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn espresso_machine_refuses_without_water_or_beans() {
        let machine = EspressoMachine::new(50, 10);
        machine.call("brew", &args(&[("size-ml", "40")])).unwrap();
        assert_eq!(
            machine.call("brew", &args(&[("size-ml", "40")])),
            Err("no water".to_string())
        );
        machine.refill(100, 0);
        assert_eq!(
            machine.call("brew", &args(&[("size-ml", "40")])),
            Err("no beans".to_string())
        );
        assert_eq!(machine.state().cups, 1);
    }

    #[test]
    fn grants_come_from_the_operator_config() {
        let config: toml::Value = toml::from_str(
            r#"
            [[device]]
            name = "espresso"
            kind = "espresso-machine"
            water_ml = 1000
            beans_g = 200
            grant = ["espresso"]

            [[device]]
            name = "lora0"
            kind = "lora"
            grant = ["radio-rental", "espresso"]
            "#,
        )
        .unwrap();
        let devices: Vec<DeviceConfig> = config["device"].clone().try_into().unwrap();
        let grants = DeviceGrants::from_config(&devices);
        assert_eq!(
            grants.for_service("espresso").list(),
            vec![
                ("espresso".to_string(), "espresso-machine".to_string()),
                ("lora0".to_string(), "lora".to_string())
            ]
        );
        assert_eq!(grants.for_service("radio-rental").list().len(), 1);
        assert!(grants.for_service("compute").is_empty());
    }
}
