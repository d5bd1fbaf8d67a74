//! Deterministic simulation (commonware's deterministic runtime and simulated network) of four
//! validators running Civis's own execution with in-memory stores: transactions finalize; a 2/2
//! partition stops finality without divergence and heals; a validator that crashes mid-run
//! restarts from its store and catches up. Fixed seeds: a failure reproduces exactly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use civis_core::chain::state::Genesis;
use civis_core::chain::tx::Op;
use civis_registry::consensus::engine::{
    Channels, PeerTracker, Timing, ValidatorConfig, channel, start_validator,
};
use civis_registry::consensus::keys;
use civis_registry::ledger::{Application, Ledger};
use civis_registry::mempool::Limits;
use civis_registry::store::{MemoryStore, Store};
use commonware_cryptography::secp256r1::standard::PublicKey;
use commonware_p2p::TrackedPeers;
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Handle, Quota, Runner, Spawner, Supervisor as _, deterministic};
use commonware_utils::ordered::Set;
use commonware_utils::{NZU32, NZUsize};

use common::{Holder, genesis, governance, validator};

const CHAIN: &str = "civis-sim";
const N: usize = 4;
const T0: i64 = 1_780_000_000;

type Node = Ledger<Arc<MemoryStore>>;

fn link() -> Link {
    Link {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        success_rate: commonware_utils::probability!(1.0),
    }
}

fn identities(n: usize) -> Vec<PublicKey> {
    (0..n)
        .map(|i| keys::public_key(validator(i).public_key()).unwrap())
        .collect()
}

/// The simulated network's peer sets: each epoch's validators as primary peers, every node of
/// the simulation as secondary (tracking is global in the simulated network; repeats of an
/// epoch by other nodes are ignored).
struct SimTracker {
    manager: simulated::Manager<PublicKey, deterministic::Context>,
    everyone: Vec<PublicKey>,
}

impl PeerTracker for SimTracker {
    fn track(&mut self, epoch: u64, validators: &[PublicKey]) {
        use commonware_p2p::Manager as _;
        let primary = Set::from_iter_dedup(validators.iter().cloned());
        let secondary = Set::from_iter_dedup(self.everyone.iter().cloned());
        let _ = self
            .manager
            .track(epoch, TrackedPeers::new(primary, secondary));
    }
}

/// Start node `i` of `nodes` on genesis `g` inside its own task (so aborting the task crashes
/// the whole validator).
async fn start_on(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    g: Genesis,
    nodes: usize,
    i: usize,
    store: Arc<MemoryStore>,
    restart: u32,
) -> (Node, Handle<()>) {
    let me = keys::public_key(validator(i).public_key()).unwrap();
    let key = keys::private_key(&validator(i)).unwrap();
    let control = oracle.control(me.clone());
    let quota = Quota::per_second(NZU32!(10_000));
    let votes = control.register(channel::VOTES, quota).await.unwrap();
    let certificates = control
        .register(channel::CERTIFICATES, quota)
        .await
        .unwrap();
    let simplex_resolver = control
        .register(channel::SIMPLEX_RESOLVER, quota)
        .await
        .unwrap();
    let backfill = control.register(channel::BACKFILL, quota).await.unwrap();
    let blocks = control.register(channel::BLOCKS, quota).await.unwrap();
    let transactions = control
        .register(channel::TRANSACTIONS, quota)
        .await
        .unwrap();
    let manager = oracle.manager();
    let tracker_manager = oracle.manager();
    let (tx, rx) = futures::channel::oneshot::channel();
    let handle = context
        .child("node")
        .with_attribute("index", i)
        .with_attribute("restart", restart)
        .spawn(move |ctx| async move {
            let ledger = Ledger::open(g, store, Limits::default()).await.unwrap();
            let _running = start_validator(
                ctx.child("validator"),
                ValidatorConfig {
                    key,
                    namespace: CHAIN.as_bytes().to_vec(),
                    app: ledger.clone(),
                    prefix: format!("validator-{i}"),
                    timing: Timing::default(),
                    tracker: SimTracker {
                        manager: tracker_manager,
                        everyone: identities(nodes),
                    },
                    gossip: true,
                },
                Channels {
                    votes,
                    certificates,
                    simplex_resolver,
                    backfill,
                    blocks,
                    transactions,
                },
                manager,
                control,
            )
            .await
            .unwrap();
            let _ = tx.send(ledger);
            futures::future::pending::<()>().await;
        });
    (rx.await.unwrap(), handle)
}

/// Start genesis validator `i` of the four-validator chain.
async fn start(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    i: usize,
    store: Arc<MemoryStore>,
    restart: u32,
) -> (Node, Handle<()>) {
    start_on(context, oracle, genesis(CHAIN, N, T0), N, i, store, restart).await
}

/// A simulated network of `n` validator identities, every pair linked.
async fn linked_network(
    context: &deterministic::Context,
    n: usize,
) -> (Vec<PublicKey>, Oracle<PublicKey, deterministic::Context>) {
    let peers = identities(n);
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: 8 * 1024 * 1024,
            max_peers_per_set: NZUsize!(n),
            disconnect_on_block: true,
            // Two epochs' sets at a hand-over, with room to spare.
            tracked_peer_sets: NZUsize!(4),
        },
        peers.clone(),
    )
    .await;
    network.start();
    for a in &peers {
        for b in &peers {
            if a != b {
                oracle.add_link(a.clone(), b.clone(), link()).await.unwrap();
            }
        }
    }
    (peers, oracle)
}

async fn wait_for(context: &deterministic::Context, nodes: &[&Node], height: u64) {
    for _ in 0..20_000 {
        if nodes.iter().all(|n| n.committed_height() >= height) {
            return;
        }
        context.sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "validators did not reach height {height}: {:?} (proposed, invalid: {:?})",
        nodes
            .iter()
            .map(|n| n.committed_height())
            .collect::<Vec<_>>(),
        nodes
            .iter()
            .map(|n| (
                n.counters()
                    .proposed
                    .load(std::sync::atomic::Ordering::Relaxed),
                n.counters()
                    .invalid_blocks
                    .load(std::sync::atomic::Ordering::Relaxed)
            ))
            .collect::<Vec<_>>()
    );
}

/// Every height all stores hold has the same block everywhere.
async fn same_history(stores: &[Arc<MemoryStore>]) -> u64 {
    let mut common = u64::MAX;
    for s in stores {
        common = common.min(s.height().await.unwrap());
    }
    for h in 1..=common {
        let first = stores[0].block(h).await.unwrap().unwrap().0.header.digest();
        for s in &stores[1..] {
            let other = s.block(h).await.unwrap().unwrap().0.header.digest();
            assert_eq!(first, other, "validators diverged at height {h}");
        }
    }
    common
}

/// The engine's own finalization certificates verify with `civis_core::chain::cert` alone, from
/// the genesis validator set. With `CIVIS_BLESS=1` the first one is written as the golden vector
/// `specs/vectors/chain/finalization.json` that core's tests pin.
async fn check_real_certificate(store: &MemoryStore) {
    use civis_core::cbor::CborForm as _;
    use civis_core::chain::cert::{Finalization, ValidatorSet};
    let (block, fin) = store
        .latest_certified(i64::MAX as u64)
        .await
        .unwrap()
        .expect("a certified block");
    let g = genesis(CHAIN, N, T0);
    let set = ValidatorSet::new(CHAIN.as_bytes(), g.validators.clone()).unwrap();
    let decoded = Finalization::decode(&fin).unwrap();
    assert_eq!(decoded.proposal.payload, block.header.digest());
    decoded.verify(&set).unwrap();
    assert_eq!(
        decoded.encode(),
        fin,
        "core re-encodes commonware's bytes exactly"
    );
    if std::env::var_os("CIVIS_BLESS").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../specs/vectors/chain/finalization.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let v = serde_json::json!({
            "description": "A finalization certificate made by commonware simplex 2026.10.0 (secp256r1 scheme) in the deterministic 4-validator simulation (registry/tests/simulation.rs, seed 7), over a Civis block header.",
            "namespace": CHAIN,
            "validators": g.validators.iter().map(|k| hex::encode(k.compressed())).collect::<Vec<_>>(),
            "header": hex::encode(block.header.to_vec()),
            "finalization": hex::encode(&fin),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
}

#[test]
fn four_validators_finalize_partition_heal_and_crash_recover() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cfg = deterministic::Config::new()
        .with_seed(7)
        .with_start_time(std::time::UNIX_EPOCH + Duration::from_secs(T0 as u64 + 60))
        .with_timeout(Some(Duration::from_secs(3_600)));
    deterministic::Runner::new(cfg).start(|context| async move {
        let (peers, oracle) = linked_network(&context, N).await;
        let stores: Vec<Arc<MemoryStore>> = (0..N).map(|_| Arc::default()).collect();
        let mut nodes = Vec::new();
        let mut handles = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let (ledger, handle) = start(&context, &oracle, i, Arc::clone(store), 0).await;
            nodes.push(ledger);
            handles.push(handle);
        }

        // Transactions submitted to one validator finalize everywhere.
        let mut gov = governance();
        let issuer = Holder::new("issuer");
        nodes[0].submit(issuer.create(CHAIN).bytes()).unwrap();
        // Order matters (the issuer must exist first): both go to one validator, which gossips
        // them to the others in that order.
        let accredit = nodes[0]
            .submit(
                gov.sign(
                    CHAIN,
                    Op::AccreditIssuer {
                        issuer: issuer.did.clone(),
                        doc_types: vec!["org.civis.citizen.1".into()],
                        until: T0 + 86_400,
                    },
                )
                .bytes(),
            )
            .unwrap();
        // Gossip: the other validators hold it pending well before any block could finalize it.
        context.sleep(Duration::from_millis(60)).await;
        for n in &nodes[1..] {
            assert_eq!(
                n.outcome(&accredit),
                Some(civis_registry::mempool::Outcome::Pending),
                "gossiped to every validator"
            );
        }
        wait_for(&context, &nodes.iter().collect::<Vec<_>>(), 5).await;
        for n in &nodes {
            let (_, state) = n.head();
            assert!(state.did(&issuer.did).is_some(), "issuer DID is on every validator");
            assert!(matches!(
                nodes[0].outcome(&accredit),
                Some(civis_registry::mempool::Outcome::Included(_))
            ));
            assert!(state.did(&gov.did).unwrap().seq == 1);
        }
        same_history(&stores).await;
        check_real_certificate(&stores[0]).await;

        // A 2/2 partition: no side has a quorum (3 of 4), so nothing finalizes.
        let (left, right) = peers.split_at(2);
        for a in left {
            for b in right {
                oracle.remove_link(a.clone(), b.clone()).await.unwrap();
                oracle.remove_link(b.clone(), a.clone()).await.unwrap();
            }
        }
        context.sleep(Duration::from_secs(5)).await;
        let stalled: Vec<u64> = nodes.iter().map(Application::committed_height).collect();
        context.sleep(Duration::from_secs(60)).await;
        let after: Vec<u64> = nodes.iter().map(Application::committed_height).collect();
        assert_eq!(stalled, after, "a minority partition must not finalize");
        same_history(&stores).await;

        // Heal: finality resumes and the histories agree.
        for a in left {
            for b in right {
                oracle.add_link(a.clone(), b.clone(), link()).await.unwrap();
                oracle.add_link(b.clone(), a.clone(), link()).await.unwrap();
            }
        }
        let target = after.iter().max().unwrap() + 5;
        wait_for(&context, &nodes.iter().collect::<Vec<_>>(), target).await;
        same_history(&stores).await;

        // Validator 3 crashes; the other three keep finalizing; it restarts from its store and
        // catches up with the same history.
        let crashed = handles.pop().unwrap();
        crashed.abort();
        let _ = crashed.await;
        nodes.pop();
        context.sleep(Duration::from_millis(10)).await;
        let before_crash = stores[3].height().await.unwrap();
        let mut issuer = issuer;
        nodes[0]
            .submit(
                issuer
                    .sign(
                        CHAIN,
                        Op::CreateStatusList {
                            list: "main".into(),
                            bits: 1,
                            size: 4096,
                        },
                    )
                    .bytes(),
            )
            .unwrap();
        let target = nodes[0].committed_height() + 10;
        wait_for(&context, &nodes.iter().collect::<Vec<_>>(), target).await;
        assert_eq!(stores[3].height().await.unwrap(), before_crash, "a crashed validator commits nothing");
        let (restarted, _handle) = start(&context, &oracle, 3, Arc::clone(&stores[3]), 1).await;
        nodes.push(restarted);
        wait_for(&context, &nodes.iter().collect::<Vec<_>>(), target + 2).await;
        let common = same_history(&stores).await;
        assert!(common >= target);
        eprintln!(
            "partition stalled at {stalled:?}; validator 3 crashed at {before_crash}; all agree up to {common}"
        );
        let uri = civis_core::chain::state::status_uri(&issuer.did, "main");
        let (_, state) = nodes[3].head();
        assert!(state.status_list(&uri).is_some(), "the restarted validator caught up");
        // Checked by the runner: no task may outlive the run holding a context.
        drop(nodes);
        context.auditor().state()
    });
}

/// A validator-set change in the running engine: genesis validators 0–3 with 20-block epochs, and
/// node 4 running as an observer. Governance replaces validator 0 with validator 4; at the end of
/// epoch 0 the old set finalizes the boundary block whose state names the new set, every node
/// starts the epoch-1 engine, and the new set alone keeps the chain going: with validators 0 and 1
/// stopped, the old set has no quorum but the new one does. A validator restarted in epoch 1
/// resumes in it, and a kiosk follows the change from genesis through the sync bundle.
#[test]
fn validator_set_change_hands_over_at_the_epoch_boundary() {
    use civis_core::chain::cert::{Finalization, ValidatorSet};
    use civis_core::chain::light::{KioskSnapshot, SyncError};
    use civis_core::chain::state::is_boundary;
    const NODES: usize = 5;
    const LENGTH: u64 = 20;
    let cfg = deterministic::Config::new()
        .with_seed(11)
        .with_start_time(std::time::UNIX_EPOCH + Duration::from_secs(T0 as u64 + 60))
        .with_timeout(Some(Duration::from_secs(3_600)));
    deterministic::Runner::new(cfg).start(|context| async move {
        let mut g = genesis(CHAIN, N, T0);
        g.epoch_length = LENGTH;
        let (_, oracle) = linked_network(&context, NODES).await;
        let stores: Vec<Arc<MemoryStore>> = (0..NODES).map(|_| Arc::default()).collect();
        let mut nodes = Vec::new();
        let mut handles = Vec::new();
        for (i, store) in stores.iter().enumerate() {
            let (ledger, handle) =
                start_on(&context, &oracle, g.clone(), NODES, i, Arc::clone(store), 0).await;
            nodes.push(ledger);
            handles.push(handle);
        }
        wait_for(&context, &nodes.iter().collect::<Vec<_>>(), 2).await;
        assert!(nodes[0].committed_height() < LENGTH - 1, "the change must land in epoch 0");

        let new_set: Vec<_> = (1..NODES).map(|i| validator(i).public_key().clone()).collect();
        let mut gov = governance();
        let change = gov.sign(
            CHAIN,
            Op::SetValidators {
                validators: new_set.clone(),
                approvals: Vec::new(),
            },
        );
        nodes[0].submit(change.bytes()).unwrap();
        wait_for(&context, &nodes.iter().collect::<Vec<_>>(), LENGTH + 3).await;
        let common = same_history(&stores).await;
        assert!(common > LENGTH);
        for n in &nodes {
            let (head, state) = n.head();
            let record = state.chain_record().unwrap();
            assert_eq!((record.epoch, record.validators.clone()), (1, new_set.clone()));
            assert_eq!(head.epoch, head.height / LENGTH);
        }
        // The boundary block is certified by the old set; a block of epoch 1 by the new one.
        let old = ValidatorSet::new(CHAIN.as_bytes(), g.validators.clone()).unwrap();
        let new = ValidatorSet::new(CHAIN.as_bytes(), new_set.clone()).unwrap();
        let changes = stores[2].epoch_changes(0, common).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].header.height, LENGTH - 1);
        assert!(is_boundary(changes[0].header.height, LENGTH));
        let boundary_fin = Finalization::decode(&changes[0].finalization).unwrap();
        boundary_fin.verify(&old).unwrap();
        assert_eq!(boundary_fin.proposal.epoch, 0);
        let (latest, fin) = stores[2].latest_certified(i64::MAX as u64).await.unwrap().unwrap();
        assert!(latest.header.height >= LENGTH);
        let fin = Finalization::decode(&fin).unwrap();
        assert_eq!(fin.proposal.epoch, 1);
        fin.verify(&new).unwrap();
        // Signers are indexes into the sorted set: when the new member signed, the same
        // certificate cannot verify against the old set. (When only members of both sets
        // signed, at the same sorted positions, it may; kiosks check each epoch against its own
        // set, chain-sync.md §4.2.)
        let newcomer = validator(NODES - 1).public_key().clone();
        let signed_by_newcomer = fin
            .signers
            .iter()
            .any(|&i| new.keys().get(i) == Some(&newcomer));
        if signed_by_newcomer {
            assert!(fin.verify(&old).is_err(), "the old set did not sign epoch 1");
        }

        // Stop validators 0 and 1: the old set (0-3) would be left with 2 of 4, the new set
        // (1-4) keeps 3 of 4 and finalizes.
        for _ in 0..2 {
            handles.remove(0).abort();
        }
        let live: Vec<&Node> = nodes[2..].iter().collect();
        let target = live[0].committed_height() + 10;
        wait_for(&context, &live, target).await;

        // Validator 3 crashes in epoch 1 and restarts into it from its store.
        handles.remove(1).abort();
        context.sleep(Duration::from_millis(10)).await;
        let (restarted, _h) =
            start_on(&context, &oracle, g.clone(), NODES, 3, Arc::clone(&stores[3]), 1).await;
        nodes[3] = restarted;
        let live: Vec<&Node> = nodes[2..].iter().collect();
        let target = live[0].committed_height() + 5;
        wait_for(&context, &live, target).await;
        same_history(&stores[2..]).await;

        // A kiosk at genesis follows the certified change in one bundle; without the change
        // the bundle is refused and the snapshot unchanged.
        let bundle = nodes[2].sync_bundle(None).await.unwrap();
        assert_eq!(bundle.epochs.len(), 1);
        let mut stripped = bundle.clone();
        stripped.epochs.clear();
        let mut kiosk = KioskSnapshot::from_genesis(&g).unwrap();
        assert!(matches!(
            kiosk.apply(&stripped),
            Err(SyncError::Certificate(_) | SyncError::EpochChange(_))
        ));
        assert_eq!(kiosk.header().height, 0);
        kiosk.apply(&bundle).unwrap();
        assert_eq!(kiosk.epoch(), 1);
        assert_eq!(kiosk.validators().keys(), new.keys());
        assert_eq!(kiosk.header().height, bundle.header.height);
        // A delta from there needs no further change.
        let since = kiosk.header().height;
        let target = since + 3;
        wait_for(&context, &live_nodes(&nodes), target).await;
        let delta = nodes[2].sync_bundle(Some(since)).await.unwrap();
        assert!(delta.epochs.is_empty());
        kiosk.apply(&delta).unwrap();
        eprintln!(
            "set changed at the end of block {}; epoch-1 certificate at {}; kiosk at {} in epoch {}",
            changes[0].header.height,
            latest.header.height,
            kiosk.header().height,
            kiosk.header().epoch
        );
        drop(nodes);
        context.auditor().state()
    });
}

fn live_nodes(nodes: &[Node]) -> Vec<&Node> {
    nodes[2..].iter().collect()
}
