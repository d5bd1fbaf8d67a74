//! `civis issuer …`: run an agency's issuer service and operate it over its API.
//!
//! Exit codes: 0 done; 1 the service or the card refused (its code is printed); 64 usage;
//! 69 the service could not be reached; 77 authentication or authorization refused.

use std::path::PathBuf;

use anyhow::{Context, Result};
use civis_core::issuer_api::{EnrollRequest, StatusRequest};
use civis_issuer::client::{Counter, IssuerClient};
use clap::{Args, Subcommand};

/// `EX_UNAVAILABLE`.
const EXIT_UNAVAILABLE: i32 = 69;
/// `EX_NOPERM`.
const EXIT_NOPERM: i32 = 77;

/// Issuer commands.
#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Write a first config, the agency's keys, a development card batch and an operator token
    /// with every scope (then `civis issuer run --config DIR/issuer.toml`).
    Init(InitArgs),
    /// Run the service until SIGINT.
    Run {
        /// The TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Enroll a resident; prints the resident id.
    Enroll {
        #[command(flatten)]
        api: ApiArgs,
        /// Idempotency key (default: derived from the document number).
        #[arg(long)]
        request_key: Option<String>,
        /// Family name.
        #[arg(long)]
        family_name: String,
        /// Given name.
        #[arg(long)]
        given_name: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: String,
        /// District (one of the agency's).
        #[arg(long)]
        district: String,
        /// Document number.
        #[arg(long)]
        document_number: String,
    },
    /// Personalize the card in a reader for a resident (resumable with the same request key).
    Personalize {
        #[command(flatten)]
        api: ApiArgs,
        /// Reader name: a PC/SC reader name or a libnfc connstring (build with `--features nfc`).
        #[arg(long)]
        reader: String,
        /// Resident id.
        #[arg(long)]
        resident: String,
        /// Card batch.
        #[arg(long)]
        batch: String,
        /// Idempotency key (default: `perso-` and the resident id).
        #[arg(long)]
        request_key: Option<String>,
        /// File holding the resident's PIN (first line), read once; never logged.
        #[arg(long)]
        pin_file: PathBuf,
        /// File holding the PUK.
        #[arg(long)]
        puk_file: PathBuf,
        /// Seconds to wait for a card.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Renew the credential on a locked card in a reader before it expires; the card keeps its
    /// old credential until the new one is whole (resumable with the same request key).
    Renew {
        #[command(flatten)]
        api: ApiArgs,
        /// Reader name: a PC/SC reader name or a libnfc connstring (build with `--features nfc`).
        #[arg(long)]
        reader: String,
        /// Idempotency key: the same one for every retry of this renewal (a locked card shows
        /// no serial to derive one from).
        #[arg(long)]
        request_key: String,
        /// Seconds to wait for a card.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Change or show credential status.
    #[command(subcommand)]
    Status(StatusCommand),
    /// Rotate the agency's issuer key on chain to its pre-committed next key; prints the new
    /// key URL once final.
    RotateKey {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the agency's audit entries as JSON lines.
    Audit {
        #[command(flatten)]
        api: ApiArgs,
        /// Entries after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// Where the service is and who acts.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The issuer service's URL.
    #[arg(long, default_value = "http://127.0.0.1:8480")]
    url: String,
    /// File holding the operator token (e.g. DIR/operator.token).
    #[arg(long)]
    token_file: PathBuf,
}

/// `civis issuer init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to create.
    #[arg(long)]
    dir: PathBuf,
    /// The registry's genesis.json.
    #[arg(long)]
    genesis: PathBuf,
    /// Registry node URLs (repeat for several).
    #[arg(long = "registry", required = true)]
    registry: Vec<String>,
    /// Agency id.
    #[arg(long, default_value = "civil-registry")]
    agency: String,
    /// Agency name.
    #[arg(long, default_value = "Civitas Civil Registry")]
    name: String,
    /// City.
    #[arg(long, default_value = "Civitas")]
    city: String,
    /// Districts (repeat).
    #[arg(long = "district", default_values_t = ["Harbour".to_owned(), "Old Town".to_owned(), "Riverside".to_owned()])]
    districts: Vec<String>,
    /// Database URL (default: SQLite in DIR).
    #[arg(long)]
    database: Option<String>,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: std::net::SocketAddr,
    /// Also configure batch `dev` with the development transport key of virtual cards.
    #[arg(long)]
    dev_batch: bool,
    /// Generate the agency's key on a PKCS#11 token (an HSM) with this module instead of a
    /// key file (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, requires_all = ["pkcs11_token", "pkcs11_pin_file", "pkcs11_label"])]
    pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long)]
    pkcs11_token: Option<String>,
    /// File holding the token's user PIN.
    #[arg(long)]
    pkcs11_pin_file: Option<PathBuf>,
    /// Label of the key pair to create on the token.
    #[arg(long)]
    pkcs11_label: Option<String>,
}

/// Status subcommands.
#[derive(Debug, Subcommand)]
pub enum StatusCommand {
    /// Suspend a credential.
    Suspend(StatusArgs),
    /// Lift a suspension.
    Unsuspend(StatusArgs),
    /// Revoke a credential for good.
    Revoke(StatusArgs),
    /// Suspend every credential of a card batch.
    SuspendBatch {
        #[command(flatten)]
        api: ApiArgs,
        /// The batch.
        #[arg(long)]
        batch: String,
        /// Idempotency key.
        #[arg(long)]
        request_key: String,
    },
    /// Report a card lost: its credentials are suspended at once.
    Lost {
        #[command(flatten)]
        api: ApiArgs,
        /// The card serial (hex).
        #[arg(long)]
        serial: String,
        /// Idempotency key.
        #[arg(long)]
        request_key: String,
    },
    /// Show what the issuer wants and what the chain holds.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        /// Credential id.
        #[arg(long)]
        credential: String,
    },
}

/// One credential's status change.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Credential id.
    #[arg(long)]
    credential: String,
    /// Idempotency key.
    #[arg(long)]
    request_key: String,
}

/// Run an issuer subcommand; returns the exit code.
pub fn run(cmd: IssuerCommand) -> i32 {
    match execute(cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<civis_issuer::Error>() {
                Some(civis_issuer::Error::Remote {
                    status: 401 | 403, ..
                }) => EXIT_NOPERM,
                Some(civis_issuer::Error::Unreachable(_)) => EXIT_UNAVAILABLE,
                _ => 1,
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn client(api: &ApiArgs) -> Result<IssuerClient> {
    let token = std::fs::read_to_string(&api.token_file)
        .with_context(|| format!("read {}", api.token_file.display()))?;
    Ok(IssuerClient::new(&api.url, token.trim())?)
}

fn secret_line(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

fn print<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn execute(cmd: IssuerCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        IssuerCommand::Init(a) => {
            let opts = civis_issuer::InitOptions {
                dir: a.dir.clone(),
                agency: a.agency,
                name: a.name,
                city: a.city,
                districts: a.districts,
                registry: a.registry,
                genesis: std::path::absolute(&a.genesis)?,
                database: a.database,
                listen: a.listen,
                batch: a.dev_batch.then(|| {
                    (
                        "dev".to_owned(),
                        civis_firmware_bridge::virtual_card::development_transport_key().0,
                    )
                }),
                pkcs11: match (
                    a.pkcs11_module,
                    a.pkcs11_token,
                    a.pkcs11_pin_file,
                    a.pkcs11_label,
                ) {
                    (Some(module), Some(token), Some(pin_file), Some(label)) => {
                        Some(civis_issuer::config::Pkcs11Config {
                            module,
                            token,
                            pin_file: std::path::absolute(pin_file)?,
                            label,
                            kid: String::new(),
                        })
                    }
                    _ => None,
                },
            };
            let done = rt.block_on(civis_issuer::init(&opts, &mut rand_core::OsRng))?;
            println!("config         {}", done.config.display());
            println!("issuer DID     {}", done.did);
            println!(
                "operator token {} (every scope; shown once)",
                a.dir.join("operator.token").display()
            );
            println!(
                "next: have governance accredit the DID (civis registry tx accredit-issuer --issuer {}), \
                 then `civis issuer run --config {}`",
                done.did,
                done.config.display()
            );
            Ok(())
        }
        IssuerCommand::Run { config } => {
            let config = civis_issuer::Config::load(&config)?;
            crate::cli::init_logs();
            let stop = std::sync::Arc::new(tokio::sync::Notify::new());
            rt.block_on(civis_issuer::serve(config, stop))?;
            Ok(())
        }
        IssuerCommand::Enroll {
            api,
            request_key,
            family_name,
            given_name,
            birth_date,
            district,
            document_number,
        } => {
            let c = client(&api)?;
            let req = EnrollRequest {
                request_key: request_key.unwrap_or_else(|| format!("enroll-{document_number}")),
                family_name,
                given_name,
                birth_date,
                resident_district: district,
                document_number,
            };
            print(&rt.block_on(c.enroll(&req))?)
        }
        IssuerCommand::Personalize {
            api,
            reader,
            resident,
            batch,
            request_key,
            pin_file,
            puk_file,
            wait,
        } => {
            let c = client(&api)?;
            let pin = secret_line(&pin_file)?;
            let puk = secret_line(&puk_file)?;
            let key = request_key.unwrap_or_else(|| format!("perso-{resident}"));
            let counter = Counter {
                request_key: &key,
                resident: &resident,
                batch: &batch,
                pin: &pin,
                puk: &puk,
            };
            personalize(&rt, &c, &reader, wait, &counter)
        }
        IssuerCommand::Renew {
            api,
            reader,
            request_key,
            wait,
        } => renew(&rt, &client(&api)?, &reader, wait, request_key),
        IssuerCommand::Status(s) => status(&rt, s),
        IssuerCommand::RotateKey { api } => {
            let kid = rt.block_on(client(&api)?.rotate_key())?;
            println!("{kid}");
            Ok(())
        }
        IssuerCommand::Audit { api, after, limit } => {
            let c = client(&api)?;
            for e in rt.block_on(c.audit(after, limit))?.entries {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(())
        }
    }
}

fn status(rt: &tokio::runtime::Runtime, s: StatusCommand) -> Result<()> {
    let change = |a: StatusArgs, action: &str| -> Result<()> {
        let c = client(&a.api)?;
        let req = StatusRequest {
            request_key: a.request_key,
            action: action.to_owned(),
        };
        print(&rt.block_on(c.change_status(&a.credential, &req))?)
    };
    match s {
        StatusCommand::Suspend(a) => change(a, "suspend"),
        StatusCommand::Unsuspend(a) => change(a, "unsuspend"),
        StatusCommand::Revoke(a) => change(a, "revoke"),
        StatusCommand::SuspendBatch {
            api,
            batch,
            request_key,
        } => print(&rt.block_on(client(&api)?.suspend_batch(&batch, &request_key))?),
        StatusCommand::Lost {
            api,
            serial,
            request_key,
        } => print(&rt.block_on(client(&api)?.card_lost(&serial, &request_key))?),
        StatusCommand::Show { api, credential } => {
            print(&rt.block_on(client(&api)?.status(&credential))?)
        }
    }
}

#[cfg(not(feature = "nfc"))]
fn renew(
    _rt: &tokio::runtime::Runtime,
    _c: &IssuerClient,
    _reader: &str,
    _wait: u64,
    _request_key: String,
) -> Result<()> {
    anyhow::bail!(
        "this civis was built without NFC reader support; rebuild with `--features nfc` \
         (needs libpcsclite-dev, libclang-dev, cmake)"
    )
}

#[cfg(feature = "nfc")]
fn renew(
    rt: &tokio::runtime::Runtime,
    c: &IssuerClient,
    reader: &str,
    wait: u64,
    key: String,
) -> Result<()> {
    use civis_firmware_bridge::nfc::NfcTransport;
    use civis_firmware_bridge::reader::CardClient;
    let transport = NfcTransport::open(reader, std::time::Duration::from_secs(wait))?;
    let mut card = CardClient::new(transport);
    let step = rt.block_on(c.relay_renewal(&mut card, &key, &mut |s| {
        eprintln!("  {:<16} {} command(s)", s.state, s.commands.len());
    }))?;
    print(&step)
}

#[cfg(not(feature = "nfc"))]
fn personalize(
    _rt: &tokio::runtime::Runtime,
    _c: &IssuerClient,
    _reader: &str,
    _wait: u64,
    _counter: &Counter<'_>,
) -> Result<()> {
    anyhow::bail!(
        "this civis was built without NFC reader support; rebuild with `--features nfc` \
         (needs libpcsclite-dev, libclang-dev, cmake)"
    )
}

#[cfg(feature = "nfc")]
fn personalize(
    rt: &tokio::runtime::Runtime,
    c: &IssuerClient,
    reader: &str,
    wait: u64,
    counter: &Counter<'_>,
) -> Result<()> {
    use civis_firmware_bridge::nfc::NfcTransport;
    use civis_firmware_bridge::reader::CardClient;
    let transport = NfcTransport::open(reader, std::time::Duration::from_secs(wait))?;
    let mut card = CardClient::new(transport);
    let step = rt.block_on(c.relay(&mut card, counter, &mut |s| {
        eprintln!(
            "  {:<16} {} command(s){}",
            s.state,
            s.commands.len(),
            if s.needs.is_empty() {
                ""
            } else {
                ", PIN and PUK asked"
            }
        );
    }))?;
    print(&step)
}
