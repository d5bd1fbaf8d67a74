//! The kiosk's command line (feature `cli`): `civis kiosk …` and the kiosk's own binary
//! `civis-kiosk`, which links the reader side of the card protocol only — not the card applet,
//! not the virtual card's vpcd host (`cargo build -p civis-verifier --features cli,nfc --bin
//! civis-kiosk`).

use std::path::PathBuf;

use crate::intake::check_accreditation;
use crate::policy::KioskPolicy;
use crate::store::KioskStore;
use crate::sync::{SyncError, SyncStep, sync_store_with};
use anyhow::{Context, Result};
use civis_core::Timestamp;
use civis_core::cbor::CborForm as _;
use civis_core::chain::state::Genesis;
use civis_core::mdoc::citizen;
use civis_core::mdoc::json::name_spaced_to_json;
use civis_core::mdoc::{DeviceRequest, DeviceResponse, SessionTranscript};
use civis_core::verify::Verdict;
use civis_registry_client::Client;
use clap::Subcommand;
use serde_json::json;

/// Exit code for usage errors (bad flags, unreadable files), as in sysexits.h.
pub const EXIT_USAGE: i32 = 64;
/// Exit code when no registry could be reached (`EX_UNAVAILABLE`).
const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code when a bundle was refused (`EX_DATAERR`).
const EXIT_REFUSED: i32 = 65;

/// E-voting commands of a polling station (`civis evote …`).
#[derive(Debug, Subcommand)]
pub enum EvoteCommand {
    /// Counts of an election's authentications in a station's database: how many, how many
    /// distinct voters (pseudonyms), and every pseudonym seen more than once with the stations
    /// that saw it. One JSON line.
    TallyAuth {
        /// The election id.
        #[arg(long)]
        election: String,
        /// The station's (kiosk's) database.
        #[arg(long, default_value = "kiosk.db")]
        db: PathBuf,
    },
    /// Sign this station's records of an election for the other stations: its pseudonyms and
    /// times, signed with its kiosk key, its accreditation attached (`civis evote import` checks
    /// both against the chain). Writes FILE.
    Export {
        /// The election id.
        #[arg(long)]
        election: String,
        /// The station's database.
        #[arg(long, default_value = "kiosk.db")]
        db: PathBuf,
        /// The station's kiosk key (JWK).
        #[arg(long)]
        reader_key: PathBuf,
        /// The station's accreditation statement (governance-signed, on chain).
        #[arg(long)]
        accreditation: PathBuf,
        /// The registry's genesis.json (the chain the records are for).
        #[arg(long)]
        genesis: PathBuf,
        /// Where to write the signed records.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import another station's signed records (`civis evote export`), after checking the
    /// signature and that the signer is accredited for e-voting on the synced chain; prints the
    /// records added and the double authentications they reveal. Nothing is imported from a
    /// file that fails a check.
    Import {
        /// The signed records.
        #[arg(long)]
        file: PathBuf,
        /// The registry's genesis.json.
        #[arg(long)]
        genesis: PathBuf,
        /// This station's database (synced with `civis kiosk sync`).
        #[arg(long, default_value = "kiosk.db")]
        db: PathBuf,
    },
}

/// Run an e-voting command; returns the exit code.
pub fn run_evote(cmd: EvoteCommand) -> i32 {
    let result = match cmd {
        EvoteCommand::TallyAuth { election, db } => tally_auth(election, db),
        EvoteCommand::Export {
            election,
            db,
            reader_key,
            accreditation,
            genesis,
            out,
        } => export_records(&election, &db, &reader_key, &accreditation, &genesis, &out),
        EvoteCommand::Import { file, genesis, db } => import_records(&file, &genesis, &db),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            0
        }
        Err(e) => {
            eprintln!("error: {}", crate::kiosk::tame(&format!("{e:#}")));
            if e.downcast_ref::<DataError>().is_some() {
                EXIT_REFUSED
            } else {
                EXIT_USAGE
            }
        }
    }
}

/// Records refused for what they hold (exit 65), not for how the command was called.
#[derive(Debug)]
struct DataError(String);

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataError {}

impl From<civis_core::evote::RecordsError> for DataError {
    fn from(e: civis_core::evote::RecordsError) -> Self {
        Self(e.to_string())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// A station database that must exist: a mistyped path must not create an empty one.
fn existing_db(db: &std::path::Path) -> Result<()> {
    anyhow::ensure!(db.is_file(), "no station database at {}", db.display());
    Ok(())
}

fn export_records(
    election: &str,
    db: &std::path::Path,
    reader_key: &std::path::Path,
    accreditation: &std::path::Path,
    genesis: &std::path::Path,
    out: &std::path::Path,
) -> Result<serde_json::Value> {
    existing_db(db)?;
    let genesis = genesis_of(genesis)?;
    let (key, _) = civis_registry_client::keyfile::read_key(reader_key)?;
    let statement = std::fs::read(accreditation)
        .with_context(|| format!("cannot read {}", accreditation.display()))?;
    let acc = civis_core::kiosk::statement_unverified(&statement)
        .context("the accreditation statement")?;
    anyhow::ensure!(
        acc.key == *key.public_key(),
        "the key does not match the accreditation's"
    );
    let station = acc.kiosk.to_string();
    let records = runtime()?.block_on(async {
        let store = KioskStore::open(db).await?;
        let r = store.station_records(election, &station).await;
        store.close().await;
        r
    })?;
    let signed = civis_core::evote::StationRecords {
        chain: genesis.chain_id,
        election: election.to_owned(),
        station: station.clone(),
        records: records.iter().map(|a| (a.pseudonym, a.at)).collect(),
    }
    .sign(&key, &statement)?;
    // Written whole or not at all.
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, &signed).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(json!({
        "election": election,
        "station": station,
        "records": records.len(),
        "file": out.display().to_string(),
    }))
}

fn import_records(
    file: &std::path::Path,
    genesis: &std::path::Path,
    db: &std::path::Path,
) -> Result<serde_json::Value> {
    use std::io::Read as _;
    existing_db(db)?;
    let genesis = genesis_of(genesis)?;
    // A regular file only (a device or a FIFO could stream forever or block), read no further
    // than the limit whatever its size says.
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    anyhow::ensure!(
        f.metadata().is_ok_and(|m| m.is_file()),
        "{} is not a regular file",
        file.display()
    );
    let limit = civis_core::evote::MAX_RECORDS_LEN as u64;
    let mut bytes = Vec::new();
    (&mut f)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", file.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= limit,
        "{} is larger than station records may be ({limit} bytes)",
        file.display()
    );
    runtime()?.block_on(async {
        let store = KioskStore::open(db).await?;
        let result = async {
            let stored = store.snapshot(&genesis).await?.ok_or_else(|| {
                anyhow::anyhow!("the station has no snapshot: run `civis kiosk sync`")
            })?;
            let records =
                civis_core::evote::StationRecords::verify(&bytes, &genesis.chain_id, |did| {
                    crate::intake::recorded_statement(&stored.snapshot, did)
                })
                .map_err(DataError::from)?;
            // Only records of an election the chain holds.
            if stored
                .snapshot
                .tree()
                .get(
                    civis_core::chain::table::Table::Election,
                    records.election.as_bytes(),
                )
                .is_none()
            {
                return Err(DataError(format!(
                    "election {:?} is not on the synced chain",
                    records.election
                ))
                .into());
            }
            let auths: Vec<crate::ledger::Authentication> = records
                .records
                .iter()
                .map(|(p, at)| crate::ledger::Authentication {
                    pseudonym: *p,
                    station: records.station.clone(),
                    at: *at,
                })
                .collect();
            let imported = store
                .import_authentications(&records.election, &auths)
                .await?;
            Ok::<_, anyhow::Error>(json!({
                "election": records.election,
                "station": records.station,
                "added": imported.added,
                "known": imported.known,
                "duplicates": imported.duplicates,
            }))
        }
        .await;
        store.close().await;
        result
    })
}

fn tally_auth(election: String, db: PathBuf) -> Result<serde_json::Value> {
    {
        existing_db(&db)?;
        let rt = runtime()?;
        rt.block_on(async {
            let store = KioskStore::open(&db).await?;
            let tally = store.tally(&election).await;
            store.close().await;
            let t = tally?;
            Ok(json!({
                "election": election,
                "authentications": t.authentications,
                "voters": t.voters,
                "duplicates": t.duplicates.iter().map(|(p, n, stations)| json!({
                    "pseudonym": p.hex(),
                    "count": n,
                    "stations": stations,
                })).collect::<Vec<_>>(),
            }))
        })
    }
}

/// Kiosk commands.
#[derive(Debug, Subcommand)]
pub enum KioskCommand {
    /// Create or advance the kiosk's trust snapshot from the registry (verified with the light
    /// client; a refused bundle leaves the stored snapshot whole).
    Sync {
        /// Registry node URL; several are tried in turn.
        #[arg(long = "registry", required = true)]
        registry: Vec<String>,
        /// The registry's genesis.json, pinned by the kiosk.
        #[arg(long)]
        genesis: PathBuf,
        /// The kiosk's database.
        #[arg(long, default_value = "kiosk.db")]
        db: PathBuf,
    },
    /// Verify a presentation offline for a policy against the kiosk's snapshot; prints the same
    /// JSON verdict line as `civis mdoc verify`, showing only the policy's elements (exit 0
    /// accept, 1 reject, 2 undetermined, 64 usage).
    Verify {
        /// `age-over-18`, `resident-of:DISTRICT`, `service:NAME=ELEMENT,ELEMENT…` or
        /// `evote:ELECTION` (a polling station: records the voter's election pseudonym).
        #[arg(long)]
        policy: String,
        /// Oldest snapshot the verdict may rest on, in seconds (older: undetermined).
        #[arg(long, default_value_t = crate::policy::DEFAULT_MAX_AGE_SECS)]
        max_age: i64,
        /// Read a citizen card in this reader (a PC/SC name or libnfc connstring; build with
        /// `--features nfc`), asking for the policy's elements under the kiosk's ReaderAuth.
        #[arg(long, conflicts_with_all = ["response", "session_transcript", "request"], requires_all = ["reader_key", "accreditation"])]
        reader: Option<String>,
        /// The kiosk's ReaderAuth key (JWK), with `--reader`.
        #[arg(long)]
        reader_key: Option<PathBuf>,
        /// The kiosk's accreditation statement signed by governance, with `--reader`.
        #[arg(long)]
        accreditation: Option<PathBuf>,
        /// Read the resident's PIN from the first line of standard input, with `--reader`: it
        /// goes to the card inside the encrypted session (an `evote:` pseudonym needs it).
        #[arg(long, requires = "reader")]
        pin_stdin: bool,
        /// Seconds to wait for a card, with `--reader` (at most a day).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        wait: u64,
        /// The DeviceResponse (raw CBOR or hex).
        #[arg(
            long,
            required_unless_present = "reader",
            requires = "session_transcript"
        )]
        response: Option<PathBuf>,
        /// SessionTranscriptBytes or the bare SessionTranscript (raw CBOR or hex).
        #[arg(long)]
        session_transcript: Option<PathBuf>,
        /// The DeviceRequest the kiosk sent; without it every disclosed element counts as
        /// requested.
        #[arg(long)]
        request: Option<PathBuf>,
        /// The registry's genesis.json.
        #[arg(long)]
        genesis: PathBuf,
        /// The kiosk's database.
        #[arg(long, default_value = "kiosk.db")]
        db: PathBuf,
    },
    /// Run the kiosk: serve its screen (open it in the kiosk's browser), sync in the background
    /// from the configured registries, and read cards from the configured reader.
    Run {
        /// The kiosk's TOML config (specs/kiosk-screen.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show the stored snapshot and the last syncs.
    Status {
        /// The registry's genesis.json.
        #[arg(long)]
        genesis: PathBuf,
        /// The kiosk's database.
        #[arg(long, default_value = "kiosk.db")]
        db: PathBuf,
    },
}

/// Run a kiosk command; returns the exit code.
pub fn run(cmd: KioskCommand) -> i32 {
    if let KioskCommand::Verify { .. } = &cmd {
        return verify(cmd);
    }
    if let KioskCommand::Run { config } = &cmd {
        return match run_screen(config) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        };
    }
    match execute(cmd) {
        Ok(()) => 0,
        Err(e) => {
            // A registry's error text reaches this line: no escape sequences, no flood.
            eprintln!("error: {}", crate::kiosk::tame(&format!("{e:#}")));
            match e.downcast_ref::<SyncError>() {
                Some(SyncError::Registry(civis_registry_client::Error::Malformed(_)))
                | Some(SyncError::Refused(_)) => EXIT_REFUSED,
                Some(SyncError::Registry(_)) => EXIT_UNAVAILABLE,
                _ => 1,
            }
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn genesis_of(path: &std::path::Path) -> Result<Genesis> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Genesis::from_json(&text)?)
}

fn execute(cmd: KioskCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        match cmd {
            KioskCommand::Sync {
                registry,
                genesis,
                db,
            } => {
                let genesis = genesis_of(&genesis)?;
                let urls: Vec<&str> = registry.iter().map(String::as_str).collect();
                let client = Client::with_nodes(&urls)?;
                let store = KioskStore::open(&db).await?;
                let progress = SyncProgress::new();
                let on_step = |s: SyncStep| progress.step(s);
                let result =
                    sync_store_with(&client, &genesis, &store, now(), Some(&on_step)).await;
                progress.end();
                let kept = store.snapshot(&genesis).await.ok().flatten();
                store.close().await;
                match result {
                    Ok(r) => {
                        println!(
                            "{}",
                            json!({
                                "outcome": "advanced",
                                "from": r.from,
                                "height": r.height,
                                "stateRoot": hex::encode(r.state_root),
                                "headerTime": r.time,
                                "bundleBytes": r.bundle_bytes,
                                "validatorEpoch": r.set_epoch,
                            })
                        );
                        Ok(())
                    }
                    Err(e) => {
                        if let Some(k) = kept {
                            eprintln!(
                                "the kiosk keeps its snapshot at height {} (synced at {})",
                                k.snapshot.header().height,
                                k.synced_at
                            );
                        }
                        Err(e.into())
                    }
                }
            }
            KioskCommand::Verify { .. } | KioskCommand::Run { .. } => {
                anyhow::bail!("handled before")
            }
            KioskCommand::Status { genesis, db } => {
                let genesis = genesis_of(&genesis)?;
                // A mistyped path must not create an empty database and report no snapshot.
                anyhow::ensure!(
                    db.is_file(),
                    "no kiosk database at {}: run `civis kiosk sync` first",
                    db.display()
                );
                let store = KioskStore::open(&db).await?;
                let stored = store.snapshot(&genesis).await?;
                let syncs = store.syncs(10).await?;
                let counts = store.verdict_counts().await?;
                store.close().await;
                let snapshot = stored.map(|s| {
                    let h = s.snapshot.header();
                    json!({
                        "height": h.height,
                        "stateRoot": hex::encode(h.state_root()),
                        "headerTime": h.time,
                        "syncedAt": s.synced_at,
                        "ageSecs": now().saturating_sub(h.time).max(0),
                    })
                });
                let syncs: Vec<_> = syncs
                    .iter()
                    .map(|e| {
                        json!({
                            "at": e.at,
                            "from": e.from,
                            "height": e.height,
                            "bundleBytes": e.bundle_bytes,
                            "outcome": e.outcome,
                            "reason": e.reason,
                        })
                    })
                    .collect();
                let verdicts: serde_json::Map<String, serde_json::Value> =
                    counts.into_iter().map(|(v, n)| (v, json!(n))).collect();
                println!(
                    "{}",
                    json!({ "snapshot": snapshot, "syncs": syncs, "verdicts": verdicts })
                );
                Ok(())
            }
        }
    })
}

/// `civis kiosk sync`'s progress on stderr (stdout keeps the one JSON line): on a terminal a bar
/// redrawn in place while the bundle streams in; otherwise a line per step and per quarter of a
/// large bundle, so logs stay readable.
struct SyncProgress {
    tty: bool,
    /// A bar is on the terminal's last line (an error must start on a line of its own).
    bar_open: std::sync::atomic::AtomicBool,
    /// The last percentage drawn (a terminal) or quarter printed (a log).
    drawn: std::sync::Mutex<Option<u64>>,
}

impl SyncProgress {
    /// A bundle smaller than this arrives at once: no progress for it in a log.
    const LARGE: u64 = 256 * 1024;

    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stderr().is_terminal(),
            bar_open: std::sync::atomic::AtomicBool::new(false),
            drawn: std::sync::Mutex::new(None),
        }
    }

    /// Close the bar's line, if one is open.
    fn end(&self) {
        if self
            .bar_open
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!();
        }
    }

    fn step(&self, step: SyncStep) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        match step {
            SyncStep::Asking { from } => eprintln!(
                "civis kiosk sync: asking the registry for {}",
                from.map_or("the whole state (first sync)".to_owned(), |h| format!(
                    "the changes since height {h}"
                ))
            ),
            SyncStep::Receiving { bytes, total } => {
                let Some(total) = total.filter(|t| *t > 0) else {
                    // No length declared: redraw per tenth of a MiB, not per chunk (a
                    // registry sending one byte at a time must not flood the terminal).
                    let tenth = bytes / (1024 * 1024 / 10);
                    if self.tty && *drawn != Some(tenth) {
                        eprint!("\r  received {:.1} MiB", mib(bytes));
                        self.bar_open
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        *drawn = Some(tenth);
                    }
                    return;
                };
                let pct = (bytes.min(total) * 100) / total;
                if self.tty {
                    if *drawn != Some(pct) {
                        let filled = usize::try_from(pct * 30 / 100).unwrap_or(30);
                        eprint!(
                            "\r  [{}{}] {pct:>3} %  {:.1} / {:.1} MiB",
                            "#".repeat(filled),
                            ".".repeat(30 - filled),
                            mib(bytes),
                            mib(total)
                        );
                        self.bar_open
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        *drawn = Some(pct);
                    }
                } else if total >= Self::LARGE && *drawn != Some(pct / 25) && pct >= 25 {
                    eprintln!(
                        "  received {pct} % ({:.1} of {:.1} MiB)",
                        mib(bytes),
                        mib(total)
                    );
                    *drawn = Some(pct / 25);
                }
            }
            SyncStep::Checking { bytes } => {
                self.end();
                eprintln!(
                    "civis kiosk sync: checking the bundle ({bytes} bytes) with the light client"
                );
            }
            SyncStep::Storing => eprintln!("civis kiosk sync: checked; storing the new snapshot"),
        }
    }
}

fn run_screen(config: &std::path::Path) -> Result<()> {
    let cfg = crate::config::KioskConfig::load(config)?;
    init_logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let on_signal = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            on_signal.notify_waiters();
        });
        let policy = cfg.policy.clone();
        crate::kiosk::run(cfg, stop, |addr| {
            println!(
                "{}",
                json!({ "screen": format!("http://{addr}/"), "policy": policy })
            );
        })
        .await?;
        Ok(())
    })
}

fn verify(cmd: KioskCommand) -> i32 {
    match decide(cmd) {
        Ok((verdict, code, doc_type, shown)) => {
            let out = json!({
                "verdict": verdict.name(),
                "reason": verdict.reason(),
                "code": code,
                "doc_type": doc_type,
                "disclosed": shown,
            });
            println!("{out}");
            match verdict {
                Verdict::Accept(_) => 0,
                Verdict::Reject(_) => 1,
                Verdict::Undetermined(_) => 2,
            }
        }
        Err(e) => {
            // Flags and file contents reach this line: no escape sequences.
            eprintln!(
                "civis kiosk verify: {}",
                crate::kiosk::tame(&format!("{e:#}"))
            );
            EXIT_USAGE
        }
    }
}

/// The verdict, the document's type, and the policy's elements as disclosed (nothing else).
fn decide(cmd: KioskCommand) -> Result<(Verdict, &'static str, Option<String>, serde_json::Value)> {
    let KioskCommand::Verify {
        policy,
        max_age,
        reader,
        reader_key,
        accreditation,
        pin_stdin,
        wait,
        response,
        session_transcript,
        request,
        genesis,
        db,
    } = cmd
    else {
        anyhow::bail!("not a verify command");
    };
    let mut policy = KioskPolicy::parse(&policy)?;
    policy.max_age_secs = max_age.max(0);
    let genesis = genesis_of(&genesis)?;
    if !db.exists() {
        anyhow::bail!(
            "no kiosk database at {}: run `civis kiosk sync` first",
            db.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let store = rt.block_on(KioskStore::open(&db))?;
    let stored = rt.block_on(store.snapshot(&genesis))?;
    let policy_name = policy.name();
    let evote = matches!(policy.rule, crate::policy::Rule::Evote { .. });
    if evote {
        let Some(s) = &stored else {
            anyhow::bail!("the kiosk has no snapshot yet: run `civis kiosk sync`");
        };
        anyhow::ensure!(
            reader.is_some(),
            "an evote: policy reads the card itself: give --reader (a file cannot prove the \
             election the pseudonym was asked for)"
        );
        anyhow::ensure!(
            pin_stdin,
            "an evote: policy needs the voter's PIN: give --pin-stdin (the card releases no \
             pseudonym without it)"
        );
        policy
            .resolve(&s.snapshot, &genesis.chain_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let pin = if pin_stdin {
        use std::io::BufRead as _;
        // A PIN is at most 12 digits: read no more than a short line, whatever is piped in.
        let mut line = String::new();
        std::io::Read::take(std::io::stdin().lock(), 64)
            .read_line(&mut line)
            .context("read the PIN from standard input")?;
        Some(zeroize::Zeroizing::new(
            line.trim_end_matches(['\r', '\n']).to_owned(),
        ))
    } else {
        None
    };
    let mut station = String::from("local");
    let (response, transcript, request) = match (reader, response, session_transcript) {
        (Some(reader), _, _) => {
            let (Some(key), Some(statement)) = (reader_key, accreditation) else {
                anyhow::bail!("--reader needs --reader-key and --accreditation");
            };
            let statement = std::fs::read(&statement)
                .with_context(|| format!("cannot read {}", statement.display()))?;
            // Ask only for what the synced chain lets this kiosk read, before any tap.
            let Some(s) = &stored else {
                anyhow::bail!("the kiosk has no snapshot yet: run `civis kiosk sync`");
            };
            let acc = check_accreditation(&s.snapshot, &statement, &policy, now())?;
            // The station's name in the pseudonym ledger: its kiosk DID, nothing about voters.
            station = acc.kiosk.to_string();
            let tap = read_card(
                &reader,
                wait,
                &policy,
                &key,
                (&statement, &s.snapshot.governance_rotations()),
                pin.as_deref().map(String::as_str),
            )?;
            (tap.response, tap.transcript, Some(tap.request))
        }
        (None, Some(response), Some(transcript)) => {
            let response = read_bytes(&response)?;
            let transcript = SessionTranscript::from_bytes(&read_bytes(&transcript)?)
                .context("session transcript")?;
            let request = request
                .map(|p| read_bytes(&p).and_then(|b| Ok(DeviceRequest::from_slice(&b)?)))
                .transpose()
                .context("request")?;
            (response, transcript, request)
        }
        _ => anyhow::bail!("give --reader, or --response with --session-transcript"),
    };
    let now = Timestamp(now());
    let doc_type = DeviceResponse::from_slice(&response).ok().and_then(|r| {
        r.documents
            .and_then(|d| d.first().map(|d| d.doc_type.clone()))
    });
    // The same judgement as the running kiosk's screen.
    let loaded = stored.map(|s| crate::kiosk::Loaded::of(s.snapshot));
    let (verdict, outcome) = crate::station::judge(
        &policy,
        loaded.as_ref().map(|l| &l.trust),
        &response,
        &transcript,
        request.as_ref(),
        now.0,
    );
    let state_time = loaded.as_ref().map(|l| l.trust.state_time);
    // Counted, never anything about the resident; a polling station records the pseudonym.
    let (verdict, outcome, recorded) = rt.block_on(async {
        let admitted = crate::ledger::admit(&store, &policy, verdict, &station, now_ms()).await;
        let (verdict, outcome, recorded) = match admitted {
            Ok((v, Some(r))) => {
                let mut o = crate::outcome::Outcome::of_verdict(&v, &policy, state_time);
                if matches!(r, crate::ledger::Recorded::Again { .. })
                    && o.kind == crate::outcome::Kind::Accept
                {
                    o.reason = crate::outcome::Reason::Reauthenticated;
                }
                (v, o, Some(r))
            }
            Ok((v, None)) => (v, outcome, None),
            Err(e) => {
                store.close().await;
                return Err(anyhow::Error::from(e));
            }
        };
        let height = loaded.as_ref().map(|l| l.trust.height);
        let logged = store
            .record_outcome(now.0, &policy_name, &outcome, height)
            .await;
        store.close().await;
        logged?;
        Ok((verdict, outcome, recorded))
    })?;
    let mut shown = serde_json::Map::new();
    // What the screen would show: the outcome's elements (from the citizen document).
    if let Verdict::Accept(docs) = &verdict
        && docs.iter().any(|d| d.doc_type == citizen::DOC_TYPE)
        && let serde_json::Value::Object(m) = name_spaced_to_json(&vec![(
            citizen::NAMESPACE.to_owned(),
            outcome.shown.clone(),
        )])
    {
        shown.extend(m);
    }
    if let (Some(r), Some(e)) = (&recorded, policy.election()) {
        shown.insert("election".into(), json!(e.id));
        shown.insert(
            "authentication".into(),
            json!(match r {
                crate::ledger::Recorded::First => "first",
                crate::ledger::Recorded::Again { .. } => "again",
            }),
        );
    }
    Ok((
        verdict,
        outcome.reason.code(),
        doc_type,
        serde_json::Value::Object(shown),
    ))
}

#[cfg(feature = "nfc")]
fn read_card(
    reader: &str,
    wait: u64,
    policy: &KioskPolicy,
    key: &std::path::Path,
    (statement, rotations): (&[u8], &[Vec<u8>]),
    pin: Option<&str>,
) -> Result<crate::intake::Tap> {
    let (key, _) = civis_registry_client::keyfile::read_key(key)?;
    let transport = civis_firmware_bridge::nfc::NfcTransport::open(
        reader,
        std::time::Duration::from_secs(wait),
    )?;
    let mut client = civis_firmware_bridge::reader::CardClient::new(transport);
    Ok(crate::intake::read_card(
        &mut client,
        policy,
        &key,
        statement,
        rotations,
        pin,
        &mut rand_core::OsRng,
    )?)
}

#[cfg(not(feature = "nfc"))]
fn read_card(
    _reader: &str,
    _wait: u64,
    _policy: &KioskPolicy,
    _key: &std::path::Path,
    _statement: (&[u8], &[Vec<u8>]),
    _pin: Option<&str>,
) -> Result<crate::intake::Tap> {
    anyhow::bail!(
        "this civis was built without NFC reader support; rebuild with `--features nfc` \
         (needs libpcsclite-dev, libclang-dev, cmake)"
    )
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

/// Read a file; if its content is hex text (whitespace allowed), decode it.
pub fn read_bytes(path: &std::path::Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(maybe_hex(raw))
}

/// Decode `raw` as hex text when it is entirely hex digits and whitespace, else return it as is.
pub fn maybe_hex(raw: Vec<u8>) -> Vec<u8> {
    let text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = text.strip_prefix(b"0x").unwrap_or(&text);
    if !text.is_empty() && text.len() % 2 == 0 && text.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(bytes) = hex::decode(text) {
            return bytes;
        }
    }
    raw
}
