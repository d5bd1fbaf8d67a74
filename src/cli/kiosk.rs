//! `civis kiosk …`: the verifier kiosk's commands (issue #12; today: its registry sync and the
//! state of its database).

use std::path::PathBuf;

use anyhow::{Context, Result};
use civis_core::chain::state::Genesis;
use civis_registry_client::Client;
use civis_verifier::store::KioskStore;
use civis_verifier::sync::{SyncError, sync_store};
use clap::Subcommand;
use serde_json::json;

/// Exit code when no registry could be reached (`EX_UNAVAILABLE`).
const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code when a bundle was refused (`EX_DATAERR`).
const EXIT_REFUSED: i32 = 65;

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
    match execute(cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
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
                let result = sync_store(&client, &genesis, &store, now()).await;
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
            KioskCommand::Status { genesis, db } => {
                let genesis = genesis_of(&genesis)?;
                let store = KioskStore::open(&db).await?;
                let stored = store.snapshot(&genesis).await?;
                let syncs = store.syncs(10).await?;
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
                println!("{}", json!({ "snapshot": snapshot, "syncs": syncs }));
                Ok(())
            }
        }
    })
}
