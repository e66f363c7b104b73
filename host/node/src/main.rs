//! `wallance`: the one binary. Subcommands run the simulator, the
//! benchmarks and (as they land) the node daemon, the local demo and the
//! operator's commands.

mod bench;
mod simulate;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "wallance", version, about = "Wallance: a blockchain-free ledger for IoT gateways")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a deterministic simulated network and report what it did.
    Simulate(simulate::Args),
    /// Measure the protocol's costs beside the paper's figures.
    Bench(bench::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
