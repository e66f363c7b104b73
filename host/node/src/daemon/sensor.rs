//! Sensor readings: a virtual sensor by default (as in the paper), a
//! command or a FIFO for a real one.

use std::io::BufRead;
use std::sync::mpsc::{Receiver, channel};

use anyhow::Context;
use tracing::warn;

use crate::config::SensorConfig;

#[derive(Debug)]
pub enum Sensor {
    /// Random walk around 21 °C.
    Virtual {
        value: f64,
        state: u64,
    },
    Command(String),
    /// Lines read by a thread, so a silent FIFO never blocks the node.
    Fifo(Receiver<f64>),
}

impl Sensor {
    pub fn new(config: &SensorConfig) -> anyhow::Result<Self> {
        if let Some(cmd) = &config.command {
            return Ok(Sensor::Command(cmd.clone()));
        }
        if let Some(path) = &config.fifo {
            let file =
                std::fs::File::open(path).with_context(|| format!("cannot open sensor FIFO {}", path.display()))?;
            let (tx, rx) = channel();
            let shown = path.display().to_string();
            std::thread::Builder::new().name("sensor".into()).spawn(move || {
                for line in std::io::BufReader::new(file).lines() {
                    let Ok(line) = line else { break };
                    match line.trim().parse::<f64>() {
                        Ok(v) if v.is_finite() => {
                            if tx.send(v).is_err() {
                                break;
                            }
                        }
                        _ => warn!("sensor FIFO {shown}: {line:?} is not a number, skipped"),
                    }
                }
            })?;
            return Ok(Sensor::Fifo(rx));
        }
        let seed = std::process::id() as u64 ^ crate::cmd::now_ms();
        Ok(Sensor::Virtual {
            value: 21.0,
            state: seed | 1,
        })
    }

    /// The next reading, or `None` when there is none now.
    pub fn read(&mut self) -> Option<f64> {
        match self {
            Sensor::Virtual { value, state } => {
                // xorshift: a sensor's noise needs no cryptographic randomness.
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                let step = ((*state % 1000) as f64 / 1000.0 - 0.5) * 0.2;
                *value = (*value + step).clamp(15.0, 30.0);
                Some((*value * 100.0).round() / 100.0)
            }
            Sensor::Command(cmd) => {
                let out = std::process::Command::new("sh").args(["-c", cmd]).output();
                match out {
                    Ok(o) if o.status.success() => {
                        let text = String::from_utf8_lossy(&o.stdout);
                        match text.trim().parse::<f64>() {
                            Ok(v) if v.is_finite() => Some(v),
                            _ => {
                                warn!("sensor command printed {:?}, not a number", text.trim());
                                None
                            }
                        }
                    }
                    Ok(o) => {
                        warn!("sensor command failed: {}", o.status);
                        None
                    }
                    Err(e) => {
                        warn!("sensor command could not start: {e}");
                        None
                    }
                }
            }
            Sensor::Fifo(rx) => rx.try_iter().last(),
        }
    }
}
