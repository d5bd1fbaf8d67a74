//! Command-line definitions and dispatch.

mod card;
mod demo;
mod input;
mod issuer;
mod kiosk;
mod mdoc;
mod registry;

use clap::{Parser, Subcommand};

/// Exit code for usage errors (bad flags, unreadable files), as in sysexits.h.
pub const EXIT_USAGE: i32 = 64;

/// Civis: open citizen identity.
#[derive(Debug, Parser)]
#[command(name = "civis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    Kiosk(kiosk::KioskCommand),
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
        Command::Kiosk(cmd) => kiosk::run(cmd),
    }
}

/// Logs for the long-running services (issuer, kiosk): ids, codes and counts only; the filter
/// comes from RUST_LOG (default `info`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .try_init();
}
