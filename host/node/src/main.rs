//! `wallance`: the one binary. The node daemon, a local demo network, the
//! operator's commands, the simulator and the benchmarks.

mod api;
mod bench;
mod bench_net;
mod client;
mod config;
mod daemon;
mod dashboard;
mod demo;
mod init;
mod logging;
mod metrics;
mod sensor;
mod simulate;
mod view;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "wallance",
    version,
    about = "Wallance: a blockchain-free ledger for IoT gateways"
)]
struct Cli {
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
        #[arg(long, default_value_t = 60)]
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Node { .. }) {
        logging::init();
    }
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Node { config, events } => daemon::run(
            &config,
            daemon::RunOptions {
                announce_events: events,
            },
        ),
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
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchNet(args) => bench_net::run(args),
    }
}
