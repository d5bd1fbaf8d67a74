//! A validator process: commonware's tokio runtime, authenticated p2p on the ports of
//! `network.json`, the consensus engine, the SQL store and the HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use commonware_cryptography::ChaCha20Poly1305;
use commonware_cryptography::secp256r1::standard::PublicKey;
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager as _, AddressableTrackedPeers};
use commonware_runtime::{Metrics as _, Quota, Runner as _, Supervisor as _, tokio as cw_tokio};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::ordered::Map;
use commonware_utils::{NZU32, NZUsize, TryCollect as _};

use crate::api::{self, Api};
use crate::bulk_reads::{BulkLimits, BulkReads};
use crate::consensus::engine::{
    Channels, PeerTracker, Timing, ValidatorConfig, channel, start_validator,
};
use crate::consensus::keys;
use crate::error::Error;
use crate::files::{RegistryDir, read_key};
use crate::http_server::{self, ServeLimits};
use crate::ledger::Ledger;
use crate::mempool::Limits;
use crate::store::{FaultPoint, SqlStore};

/// Largest p2p message: a full block plus framing.
const MAX_MESSAGE: u32 = 20 * 1024 * 1024;

/// How to run one validator.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The registry directory.
    pub dir: RegistryDir,
    /// Which validator this is.
    pub index: usize,
    /// Database URL (default: SQLite in the validator's data directory).
    pub db: Option<String>,
    /// HTTP listen address (default: from `network.json`).
    pub listen: Option<SocketAddr>,
    /// Consensus timing.
    pub timing: Timing,
    /// Gossip client transactions to the other validators (default on).
    pub gossip: bool,
    /// Stop when notified, instead of on SIGINT/SIGTERM: for embedding the node in another
    /// program, which then owns the signals.
    pub stop: Option<Arc<tokio::sync::Notify>>,
    /// Print nothing on start and stop.
    pub quiet: bool,
    /// Per-client allowances, caches and queue of the bulk reads (sync, status lists, blocks).
    pub bulk_limits: BulkLimits,
}

/// Run until SIGINT/SIGTERM. Blocks the calling thread (commonware owns the runtime).
pub fn run(opts: NodeOptions) -> Result<(), Error> {
    let genesis = opts.dir.genesis()?;
    let network = opts.dir.network()?;
    let endpoint = network
        .validators
        .get(opts.index)
        .cloned()
        .ok_or_else(|| Error::Config(format!("no validator {} in network.json", opts.index)))?;
    if network.validators.len() < genesis.validators.len() {
        return Err(Error::Config(
            "network.json lists fewer validators than genesis.json".into(),
        ));
    }
    let (key, _) = read_key(&opts.dir.validator_key(opts.index))?;
    let sk = keys::private_key(&key)?;
    let data: PathBuf = opts.dir.validator_data(opts.index);
    crate::files::create_private_dir(&data)?;
    let db = opts
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", data.join("registry.db").display()));
    // Every validator the node may ever need to reach: genesis validators by position, later
    // ones by the key their entry names.
    let peers: Vec<(PublicKey, Address)> = network
        .validators
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = match (&e.key, genesis.validators.get(i)) {
                (Some(k), _) => civis_core::did::multikey_decode(k)
                    .map_err(|err| Error::Config(format!("network.json entry {i}: {err}")))?,
                (None, Some(k)) => k.clone(),
                (None, None) => {
                    return Err(Error::Config(format!(
                        "network.json entry {i} is not a genesis validator and names no key"
                    )));
                }
            };
            keys::public_key(&key).map(|p| (p, Address::from(e.p2p)))
        })
        .collect::<Result<_, _>>()?;
    let n = peers.len();
    let sk_consensus = sk.clone();
    let listen = opts.listen.unwrap_or(endpoint.http);
    let index = opts.index;
    let timing = opts.timing;
    let gossip = opts.gossip;
    let chain_id = genesis.chain_id.clone();
    let crash_at = crash_point()?;
    let stop = opts.stop.clone();
    let quiet = opts.quiet;
    let bulk_limits = opts.bulk_limits;
    let serve_limits = ServeLimits::for_this_process();

    let cfg = cw_tokio::Config::new()
        .with_storage_directory(data.join("consensus"))
        .with_worker_threads(2);
    let outcome: Arc<Mutex<Result<(), Error>>> = Arc::new(Mutex::new(Ok(())));
    let result = Arc::clone(&outcome);
    cw_tokio::Runner::new(cfg).start(|context| async move {
        let fail = |e: Error| {
            if let Ok(mut r) = result.lock() {
                *r = Err(e);
            }
        };
        let mut store = match SqlStore::connect(&db).await {
            Ok(s) => s,
            Err(e) => return fail(e.into()),
        };
        if let Some((point, height)) = crash_at {
            store.crash_at(point, height);
        }
        let ledger = match Ledger::open(genesis, store, Limits::default()).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let p2p = lookup::Config::local(
            Cups::<_, ChaCha20Poly1305>::new(
                Sake {
                    signer: sk.clone(),
                    synchrony_bound: Duration::from_secs(5),
                    max_handshake_age: Duration::from_secs(10),
                    version: sake::Version::V1,
                },
                cups::Version::V1,
            ),
            format!("{chain_id}/p2p").as_bytes(),
            endpoint.p2p,
            NZUsize!(n.max(1)),
            MAX_MESSAGE,
            NZUsize!(1_000),
        );
        let (mut net, oracle) = lookup::Network::new(context.child("network"), p2p);
        let known: Map<_, _> = match peers.into_iter().try_collect() {
            Ok(m) => m,
            Err(_) => return fail(Error::Config("duplicate validator keys".into())),
        };
        let quota = Quota::per_second(NZU32!(10_000));
        let backfill = net.register(channel::BACKFILL, quota);
        let blocks = net.register(channel::BLOCKS, quota);
        let votes = net.register(channel::VOTES, quota);
        let certificates = net.register(channel::CERTIFICATES, quota);
        let simplex_resolver = net.register(channel::SIMPLEX_RESOLVER, quota);
        let transactions = net.register(channel::TRANSACTIONS, quota);
        let _net = net.start();
        let running = start_validator(
            context.child("validator"),
            ValidatorConfig {
                key: sk_consensus,
                namespace: chain_id.as_bytes().to_vec(),
                app: ledger.clone(),
                prefix: format!("validator-{index}"),
                timing,
                tracker: Tracker {
                    oracle: oracle.clone(),
                    known,
                },
                gossip,
            },
            Channels {
                votes,
                certificates,
                simplex_resolver,
                backfill,
                blocks,
                transactions,
            },
            oracle.clone(),
            oracle,
        )
        .await;
        let _running = match running {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let metrics_ctx = Mutex::new(context.child("metrics"));
        let api = Arc::new(Api {
            ledger,
            validator: Some(index),
            metrics: Some(Arc::new(move || {
                metrics_ctx.lock().map(|c| c.encode()).unwrap_or_default()
            })),
            clock: Arc::new(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
            }),
            bulk: BulkReads::new(bulk_limits),
        });
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => return fail(Error::Config(format!("HTTP listen on {listen}: {e}"))),
        };
        if !quiet {
            eprintln!(
                "validator {index}: HTTP on http://{listen}, p2p on {}",
                endpoint.p2p
            );
        }
        // With a stop handle the embedder owns the process's signals (`civis demo` cleans up
        // on Ctrl-C itself); alone, the node stops on SIGINT or SIGTERM.
        let stopped = async move {
            match stop {
                Some(n) => n.notified().await,
                None => shutdown().await,
            }
        };
        if let Err(e) = http_server::serve(listener, api::router(api), serve_limits, stopped).await
        {
            fail(Error::Io(e));
        }
        if !quiet {
            eprintln!("validator {index}: stopping");
        }
    });
    std::mem::replace(
        &mut *outcome.lock().map_err(|_| Error::Config("lock".into()))?,
        Ok(()),
    )
}

/// Tracks each epoch's validators as primary peers and every other validator of
/// `network.json` as secondary, so observers and validators about to join keep receiving blocks.
struct Tracker {
    oracle: lookup::Oracle<PublicKey>,
    known: Map<PublicKey, Address>,
}

impl PeerTracker for Tracker {
    fn track(&mut self, epoch: u64, validators: &[PublicKey]) {
        let (primary, secondary): (Vec<_>, Vec<_>) = self
            .known
            .iter_pairs()
            .map(|(k, a)| (k.clone(), a.clone()))
            .partition(|(k, _)| validators.contains(k));
        if primary.len() < validators.len() {
            tracing::warn!(
                epoch,
                "network.json lacks addresses for some validators of the epoch"
            );
        }
        let primary = Map::from_iter_dedup(primary);
        let secondary = Map::from_iter_dedup(secondary);
        let _ = self
            .oracle
            .track(epoch, AddressableTrackedPeers::new(primary, secondary));
    }
}

/// `CIVIS_CRASH_AT=POINT@HEIGHT` (crash tests only): abort the process at that point of that
/// block's commit.
fn crash_point() -> Result<Option<(FaultPoint, u64)>, Error> {
    let Ok(spec) = std::env::var("CIVIS_CRASH_AT") else {
        return Ok(None);
    };
    let (point, height) = spec
        .split_once('@')
        .ok_or_else(|| Error::Config("CIVIS_CRASH_AT is POINT@HEIGHT".into()))?;
    let height = height
        .parse()
        .map_err(|_| Error::Config("CIVIS_CRASH_AT height is not a number".into()))?;
    Ok(Some((point.parse().map_err(Error::Config)?, height)))
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
