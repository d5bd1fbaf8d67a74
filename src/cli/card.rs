//! `civis card serve | readers | info`: the virtual card, and real readers through libnfc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use civis_core::card::TransportKey;
use civis_firmware_bridge::virtual_card::{self, DEFAULT_VPCD, ServeOptions};
use clap::Subcommand;

/// Exit code when a capability was not built in (sysexits.h EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: i32 = 69;

/// Card subcommands.
#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// Run the virtual citizen card behind pcscd's vpcd reader, so PC/SC and libnfc tools see a
    /// real card. A missing state file means a blank, unpersonalized card.
    Serve {
        /// The card's memory (created if absent; written atomically after every change).
        #[arg(long)]
        state: PathBuf,
        /// vpcd's address.
        #[arg(long, default_value = DEFAULT_VPCD)]
        vpcd: SocketAddr,
        /// Batch transport key of a blank card: a file with 64 hex digits (default: the
        /// development key, for test cards only).
        #[arg(long)]
        transport_key: Option<PathBuf>,
        /// Stop when vpcd closes the connection instead of reconnecting.
        #[arg(long)]
        once: bool,
    },
    /// List the readers libnfc can use (built with `--features nfc`).
    Readers,
    /// Show a card's public facts: applet version, personalization state, public key, PIN
    /// tries left (built with `--features nfc`).
    Info {
        /// Reader name: a PC/SC reader name or a libnfc connstring.
        #[arg(long)]
        reader: String,
        /// Seconds to wait for a card in the field.
        #[arg(long, default_value_t = 10)]
        wait: u64,
        /// The batch's transport key file (64 hex digits): opens a locked card's sealed facts.
        /// Without it a locked card shows only that it is locked.
        #[arg(long)]
        transport_key: Option<PathBuf>,
    },
    /// At a counter: unblock (or reset) the PIN with the PUK. The card opens an encrypted
    /// session only for an accredited reader, so the counter signs ReaderAuth with its key and
    /// attaches its governance-signed accreditation; the PUK and the new PIN travel inside the
    /// session (built with `--features nfc`). Prints the card's result and tries left.
    UnblockPin {
        /// Reader name.
        #[arg(long)]
        reader: String,
        /// The counter's reader key (JWK with `d`).
        #[arg(long)]
        reader_key: PathBuf,
        /// Its accreditation statement (the COSE_Sign1 bytes governance signed).
        #[arg(long)]
        accreditation: PathBuf,
        /// An element the accreditation grants (the session's request reads it).
        #[arg(long, default_value = "age_over_18")]
        element: String,
        /// File holding the PUK (first line).
        #[arg(long)]
        puk_file: PathBuf,
        /// File holding the new PIN (first line).
        #[arg(long)]
        new_pin_file: PathBuf,
        /// Seconds to wait for a card in the field.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
}

/// Run a card subcommand; returns the exit code.
pub fn run(cmd: CardCommand) -> i32 {
    let result = match cmd {
        CardCommand::Serve {
            state,
            vpcd,
            transport_key,
            once,
        } => serve(&state, vpcd, transport_key.as_deref(), once),
        CardCommand::Readers => readers(),
        CardCommand::Info {
            reader,
            wait,
            transport_key,
        } => info(&reader, wait, transport_key.as_deref()),
        CardCommand::UnblockPin {
            reader,
            reader_key,
            accreditation,
            element,
            puk_file,
            new_pin_file,
            wait,
        } => unblock_pin(&UnblockArgs {
            reader: &reader,
            reader_key: &reader_key,
            accreditation: &accreditation,
            element: &element,
            puk_file: &puk_file,
            new_pin_file: &new_pin_file,
            wait,
        }),
    };
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<NoNfc>().is_some() => {
            eprintln!("civis card: {e}");
            EXIT_UNAVAILABLE
        }
        Err(e) => {
            // Reader names come from the command line: no escape sequences back out.
            eprintln!(
                "civis card: {}",
                civis_verifier::kiosk::tame(&format!("{e:#}"))
            );
            1
        }
    }
}

fn read_transport_key(path: &Path) -> Result<TransportKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = hex::decode(text.trim()).context("transport key is not hex")?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("transport key must be 32 bytes (64 hex digits)"))?;
    Ok(TransportKey(key))
}

fn serve(state: &Path, vpcd: SocketAddr, transport_key: Option<&Path>, once: bool) -> Result<()> {
    let transport_key = match transport_key {
        Some(p) => read_transport_key(p)?,
        None => virtual_card::development_transport_key(),
    };
    let options = ServeOptions {
        state: state.to_owned(),
        vpcd,
        transport_key,
        reconnect: !once,
    };
    virtual_card::serve(&options, &mut |event| eprintln!("civis card: {event}"))?;
    Ok(())
}

/// What `civis card unblock-pin` was given.
struct UnblockArgs<'a> {
    reader: &'a str,
    reader_key: &'a Path,
    accreditation: &'a Path,
    element: &'a str,
    puk_file: &'a Path,
    new_pin_file: &'a Path,
    wait: u64,
}

fn first_line(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(not(feature = "nfc"))]
fn unblock_pin(_: &UnblockArgs<'_>) -> Result<()> {
    Err(NoNfc.into())
}

#[cfg(feature = "nfc")]
fn unblock_pin(a: &UnblockArgs<'_>) -> Result<()> {
    use civis_core::mdoc::citizen;
    use civis_core::mdoc::{DeviceRequest, ItemsRequest, reader_auth};
    use civis_firmware_bridge::nfc::NfcTransport;
    use civis_firmware_bridge::reader::{CardClient, MdocSession};
    let (key, _) = civis_registry_client::keyfile::read_key(a.reader_key)?;
    let statement = std::fs::read(a.accreditation)
        .with_context(|| format!("cannot read {}", a.accreditation.display()))?;
    let puk = first_line(a.puk_file)?;
    let new_pin = first_line(a.new_pin_file)?;
    let transport = NfcTransport::open(a.reader, std::time::Duration::from_secs(a.wait))?;
    let mut client = CardClient::new(transport);
    let engaged = client.read_engagement()?;
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut rand_core::OsRng);
    let items = ItemsRequest {
        doc_type: citizen::DOC_TYPE.into(),
        name_spaces: vec![(
            citizen::NAMESPACE.into(),
            vec![(a.element.to_owned(), false)],
        )],
        request_info: None,
    };
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![reader_auth::sign_with_accreditation(
            items,
            session.transcript(),
            &key,
            &statement,
        )?],
    };
    session.establish(&mut client, e_reader.public_key(), e_bytes, &request)?;
    let (result, tries) = session.manage(&mut client, "unblock-pin", ("puk", &puk), &new_pin)?;
    let _ = session.end(&mut client);
    println!(
        "{}",
        serde_json::json!({ "result": result, "triesLeft": tries })
    );
    if result == "ok" {
        Ok(())
    } else {
        Err(anyhow!("the card answered {result:?}"))
    }
}

/// The binary was built without the `nfc` feature.
#[derive(Debug)]
struct NoNfc;

impl std::fmt::Display for NoNfc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "this civis was built without NFC reader support; rebuild with \
             `cargo build --release --features nfc` (needs libpcsclite-dev, libclang-dev, cmake)",
        )
    }
}

impl std::error::Error for NoNfc {}

#[cfg(not(feature = "nfc"))]
fn readers() -> Result<()> {
    Err(NoNfc.into())
}

#[cfg(not(feature = "nfc"))]
fn info(_reader: &str, _wait: u64, _transport_key: Option<&Path>) -> Result<()> {
    Err(NoNfc.into())
}

#[cfg(feature = "nfc")]
fn readers() -> Result<()> {
    let names = civis_firmware_bridge::nfc::list_readers()?;
    if names.is_empty() {
        eprintln!("civis card: no readers (is pcscd running? is the reader plugged in?)");
    }
    for n in names {
        println!("{n}");
    }
    Ok(())
}

#[cfg(feature = "nfc")]
fn info(reader: &str, wait: u64, transport_key: Option<&Path>) -> Result<()> {
    use civis_core::card::GetData;
    use civis_firmware_bridge::nfc::NfcTransport;
    use civis_firmware_bridge::reader::CardClient;
    let transport = NfcTransport::open(reader, std::time::Duration::from_secs(wait))?;
    let name = transport.name().to_owned();
    let mut client = CardClient::new(transport);
    let answer = client.get_data()?;
    if let (GetData::Sealed(_), None) = (&answer, transport_key) {
        // What any reader sees of a locked card: nothing that tells it apart.
        let json = serde_json::json!({"reader": name, "state": "locked", "sealed": true});
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let key = transport_key
        .map(civis_issuer::agency::read_transport_key)
        .transpose()?;
    let info = answer.open(key.as_ref())?;
    let json = serde_json::json!({
        "reader": name,
        "applet": info.version,
        "serial": hex::encode(info.serial),
        "state": if info.locked { "locked" } else if info.public_key.is_some() { "personalizing" } else { "blank" },
        "publicKey": info.public_key.as_ref().map(hex::encode),
        "pinTriesLeft": info.pin_tries,
        "pukTriesLeft": info.puk_tries,
        "credentialSlots": info.credentials,
        "governanceRoot": info.has_root,
        "timeFloor": info.time_floor,
    });
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
