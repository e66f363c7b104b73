//! The `wallance` command line: every subcommand, parsed here and run by
//! its module. `node` starts the [`crate::daemon`]; the operator's commands
//! talk to a node's API through [`client`].

pub mod bench;
pub mod bench_gateway;
pub mod bench_net;
pub mod client;
pub mod demo;
pub mod init;
pub mod simulate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::daemon;

#[derive(Debug, Parser)]
#[command(
    name = "wallance",
    version,
    about = "Wallance: a blockchain-free ledger for IoT gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local network of real nodes (separate processes, loopback DDS)
    /// that earns coins and buys an espresso.
    Demo(demo::Args),
    /// Run one node of a network.
    Node {
        #[arg(long)]
        config: PathBuf,
        /// Print one line per commit and outcome on stdout.
        #[arg(long)]
        events: bool,
    },
    /// Write keys and configs for a network of N members.
    Init(init::Args),
    /// Every wallet, as a node holds them.
    Wallets(client::Conn),
    /// The services on the network.
    Services(client::Conn),
    /// The outcomes this node produced as a provider, with the contract's
    /// log lines.
    Produced(client::Conn),
    /// A node's health and counters.
    Status(client::Conn),
    /// Buy a service and wait for the contract's outcome.
    Buy {
        service: String,
        /// Price in DCoin.
        #[arg(long)]
        price: f64,
        /// Parameters for the contract, key=value.
        #[arg(long = "param")]
        params: Vec<String>,
        /// The provider (member name or hex ID). Needed when several
        /// members offer the service: a purchase never goes to whoever
        /// announced the name last or cheapest.
        #[arg(long)]
        provider: Option<String>,
        /// Seconds to wait for the outcome.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// A purchase by its id, as the node recorded it (kept across restarts):
    /// pending, committed, its outcome and its verdict.
    Purchase {
        id: String,
        /// Wait up to this many seconds for its outcome or verdict.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Run a deterministic simulated network and report what it did.
    Simulate(simulate::Args),
    /// Measure the protocol's costs beside the paper's figures.
    Bench(bench::Args),
    /// Measure consensus between real node processes over DDS (in a private
    /// network namespace it creates).
    BenchNet(bench_net::Args),
    /// Measure what a node costs a gateway: SD-card writes and fsyncs per
    /// purchase and per share (by group-commit window), memory, start-up
    /// and binary size (real processes, in a private network namespace).
    BenchGateway(bench_gateway::Args),
}

/// Runs the command line the process was started with.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Node { config, events } => {
            crate::logging::init();
            daemon::run(
                &config,
                daemon::RunOptions {
                    announce_events: events,
                },
            )
        }
        Command::Init(args) => init::run(args),
        Command::Wallets(conn) => client::finish(client::wallets(&conn)),
        Command::Services(conn) => client::finish(client::services(&conn)),
        Command::Produced(conn) => client::finish(client::produced(&conn)),
        Command::Status(conn) => client::finish(client::status(&conn)),
        Command::Buy {
            service,
            price,
            params,
            provider,
            wait,
            conn,
        } => client::finish(client::buy(&conn, &service, provider.as_deref(), price, &params, wait).map(|_| ())),
        Command::Purchase { id, wait, conn } => client::finish(client::purchase(&conn, &id, wait).map(|_| ())),
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchNet(args) => bench_net::run(args),
        Command::BenchGateway(args) => bench_gateway::run(args),
    }
}
