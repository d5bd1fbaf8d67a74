//! Command-line definitions and dispatch.

mod card;
mod demo;
mod input;
mod issuer;
mod mdoc;
mod registry;

use clap::{Parser, Subcommand};

pub use civis_verifier::cli::{EXIT_USAGE, init_logs};

/// Civis: open citizen identity.
#[derive(Debug, Parser)]
#[command(name = "civis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `civis evote …`.
#[derive(Debug, Subcommand)]
enum EvoteCli {
    /// Governance: register an election (eligibility, window, re-authentication policy) on the
    /// registry chain; `civis registry tx … register-election` with e-voting's names.
    Register(registry::ElectionArgs),
    #[command(flatten)]
    Station(civis_verifier::cli::EvoteCommand),
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ISO 18013-5 mdoc tools.
    #[command(subcommand)]
    Mdoc(mdoc::MdocCommand),
    /// The registry chain: run validators, submit transactions, resolve, sync kiosks.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The agency issuer service: run it, enroll, personalize cards, manage status, audit.
    #[command(subcommand)]
    Issuer(issuer::IssuerCommand),
    /// Citizen cards: the virtual card behind pcscd, real readers through libnfc.
    #[command(subcommand)]
    Card(card::CardCommand),
    /// The verifier kiosk: its registry sync and database.
    #[command(subcommand)]
    Kiosk(civis_verifier::cli::KioskCommand),
    /// E-voting: register an election on the chain; a polling station's authentication tally.
    #[command(subcommand)]
    Evote(EvoteCli),
    /// Walk through issuing, presenting and verifying a citizen credential, in-process.
    Demo(demo::DemoArgs),
}

/// Parse the command line and run; returns the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Mdoc(cmd) => mdoc::run(cmd),
        Command::Demo(args) => demo::run(&args),
        Command::Registry(cmd) => registry::run(cmd),
        Command::Card(cmd) => card::run(cmd),
        Command::Issuer(cmd) => issuer::run(cmd),
        Command::Kiosk(cmd) => civis_verifier::cli::run(cmd),
        Command::Evote(EvoteCli::Register(args)) => registry::register_election(args),
        Command::Evote(EvoteCli::Station(cmd)) => civis_verifier::cli::run_evote(cmd),
    }
}
