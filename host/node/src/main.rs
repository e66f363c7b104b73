//! `wallance`: the one binary. Everything is in the library
//! (`wallance::cli` parses the command line and runs it).

fn main() -> anyhow::Result<()> {
    wallance::cli::main()
}
