//! `civis-kiosk`: the verifier kiosk on its own — `sync`, `status`, `verify`, `run`, as
//! `civis kiosk …` has them — built without the card applet or the virtual card's vpcd host.

use clap::Parser;

/// The verifier kiosk: its registry sync, its database, offline verification and its screen.
#[derive(Debug, Parser)]
#[command(name = "civis-kiosk", version, about)]
struct Cli {
    #[command(subcommand)]
    command: civis_verifier::cli::KioskCommand,
}

fn main() {
    let code = match Cli::try_parse() {
        Ok(cli) => civis_verifier::cli::run(cli.command),
        Err(e) => {
            let code = if e.use_stderr() {
                civis_verifier::cli::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            code
        }
    };
    std::process::exit(code);
}
