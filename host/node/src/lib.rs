//! The Wallance node as a library, in three parts that each change for one
//! reason, over two leaves:
//!
//! - [`daemon`]: one member of a network. The loop that owns the protocol
//!   core and writes the store, the contract worker, the sensor.
//! - [`http`]: what the node shows and accepts on its API address. The
//!   JSON API and its [`http::view`] types, long polls and server-sent
//!   events, Prometheus metrics, the dashboard.
//! - [`cli`]: the operator's commands. The API client (which reads the
//!   same [`http::view`] types), `init`, the local `demo`, the benchmarks
//!   and the simulator command.
//! - Leaves: [`cmd`] (what crosses the channels between threads, and the
//!   clock) and [`config`] (the node's and the network's files).
//!
//! Imports go one way: `cli` → `http::view`, `daemon` → `http`, and all of
//! them → the leaves. The binary (`main.rs`) only parses the command line.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod http;
pub mod logging;
