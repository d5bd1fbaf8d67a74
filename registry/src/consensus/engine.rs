//! One validator's consensus stack, generic over the runtime and the network, so that the real
//! node (tokio, authenticated p2p) and the deterministic simulation (simulated p2p) start exactly
//! the same engine: marshal (block dissemination, backfill, finalized archives) under simplex,
//! joined by the `Inline` wrapper, which verifies a block before voting for it.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civis_core::chain::state::{epoch_of, is_boundary};
use commonware_broadcast::buffered;
use commonware_consensus::Heightable as _;
use commonware_consensus::marshal::core::{Actor, Mailbox};
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::Engine;
use commonware_consensus::simplex::config::{
    Config as SimplexConfig, Floor, ForwardPolicy, SkipBudget, SkipPolicy,
};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::types::{Epoch, FixedEpocher, Height, ViewDelta};
use commonware_cryptography::certificate::{Provider, Scoped, Verifier as _};
use commonware_cryptography::secp256r1::standard::{PrivateKey, PublicKey};
use commonware_cryptography::{Digested, Digestible as _, Sha256, Signer as _};
use commonware_p2p::utils::mux::{Builder as _, Muxer};
use commonware_p2p::{Blocker, Provider as PeerProvider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::Acknowledgement as _;
use commonware_utils::vec::NonEmptyVec;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use futures::StreamExt as _;
use futures::future::Either;

use super::Scheme;
use super::app::{Adapter, finalized_channel};
use super::block::ChainBlock;
use super::keys;
use crate::error::Error;
use crate::ledger::Application;

/// The five p2p channels a validator uses, as `(sender, receiver)` pairs.
pub struct Channels<S, R> {
    /// Simplex votes (channel 3).
    pub votes: (S, R),
    /// Simplex certificates (channel 4).
    pub certificates: (S, R),
    /// Simplex certificate fetches (channel 5).
    pub simplex_resolver: (S, R),
    /// Marshal backfill of blocks and finalizations (channel 1).
    pub backfill: (S, R),
    /// Block broadcast (channel 2).
    pub blocks: (S, R),
    /// Mempool gossip (channel 6).
    pub transactions: (S, R),
}

/// Channel ids, the same on every validator.
pub mod channel {
    /// Marshal backfill.
    pub const BACKFILL: u64 = 1;
    /// Block broadcast.
    pub const BLOCKS: u64 = 2;
    /// Simplex votes.
    pub const VOTES: u64 = 3;
    /// Simplex certificates.
    pub const CERTIFICATES: u64 = 4;
    /// Simplex resolver.
    pub const SIMPLEX_RESOLVER: u64 = 5;
    /// Mempool gossip.
    pub const TRANSACTIONS: u64 = 6;
}

/// Timing of the engine.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long to wait for a leader's proposal.
    pub leader_timeout: Duration,
    /// How long to wait for a notarized proposal to certify.
    pub certification_timeout: Duration,
    /// How often to retry after a timeout.
    pub timeout_retry: Duration,
    /// How long an idle leader waits for transactions before proposing an empty block.
    pub idle_block: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            leader_timeout: Duration::from_secs(2),
            certification_timeout: Duration::from_secs(4),
            timeout_retry: Duration::from_secs(3),
            idle_block: Duration::from_millis(500),
        }
    }
}

/// Tells the network which peers an epoch needs: its validators as primary peers, everyone else
/// the node knows as secondary (so observers and future validators keep receiving blocks).
pub trait PeerTracker: Send + 'static {
    /// Start tracking the peer set of `epoch` (called once per epoch, in increasing order).
    fn track(&mut self, epoch: u64, validators: &[PublicKey]);
}

/// Everything a validator's engine needs.
pub struct ValidatorConfig<A, T> {
    /// This validator's signing key (its identity is the public key).
    pub key: PrivateKey,
    /// The consensus namespace (the chain id).
    pub namespace: Vec<u8>,
    /// The application.
    pub app: A,
    /// Storage partition prefix, unique per validator (`[A-Za-z0-9_-]`).
    pub prefix: String,
    /// Timing.
    pub timing: Timing,
    /// Peer-set tracking, once per epoch.
    pub tracker: T,
    /// Gossip client transactions to the other validators (channel 6), so any leader can
    /// include them and they survive the loss of the node that accepted them. Off, a
    /// transaction waits for that node to lead a view.
    pub gossip: bool,
}

/// A running validator: the marshal mailbox and the task handles.
pub struct Running {
    /// Marshal's mailbox (blocks and finalizations by height).
    pub marshal: Mailbox<Scheme, Standard<ChainBlock>>,
    /// Task handles (marshal, broadcast, muxers, epoch loop).
    pub handles: Vec<Handle<()>>,
}

/// Marshal's and simplex's signing schemes by epoch, built on demand from the validator sets
/// the committed chain has decided ([`Application::validators`]): a signer where this node is in
/// the set, a verifier (an observer) where it is not. An epoch not yet decided has no scheme, so
/// its certificates are not accepted before the boundary block that names its set is committed.
#[derive(Clone)]
pub struct EpochSchemes<A> {
    app: A,
    namespace: Arc<[u8]>,
    key: PrivateKey,
    cache: Arc<Mutex<BTreeMap<u64, Arc<Scheme>>>>,
}

impl<A: Application> EpochSchemes<A> {
    /// Schemes for `key` under `namespace`, from `app`'s validator sets.
    pub fn new(app: A, namespace: &[u8], key: PrivateKey) -> Self {
        Self {
            app,
            namespace: namespace.into(),
            key,
            cache: Arc::default(),
        }
    }

    /// The scheme of `epoch`, if its validator set is decided.
    pub fn get(&self, epoch: u64) -> Option<Arc<Scheme>> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = cache.get(&epoch) {
            return Some(Arc::clone(s));
        }
        let set = self.app.validators(epoch)?;
        let participants = keys::participants(&set).ok()?;
        let scheme = Scheme::signer(&self.namespace, participants.clone(), self.key.clone())
            .unwrap_or_else(|| Scheme::verifier(&self.namespace, participants));
        let scheme = Arc::new(scheme);
        cache.insert(epoch, Arc::clone(&scheme));
        Some(scheme)
    }

    /// The validators of `epoch` as consensus identities.
    fn identities(&self, epoch: u64) -> Vec<PublicKey> {
        self.app
            .validators(epoch)
            .unwrap_or_default()
            .iter()
            .filter_map(|k| keys::public_key(k).ok())
            .collect()
    }
}

impl<A: Application> Provider for EpochSchemes<A> {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<Scoped<Scheme>> {
        // A verify-only scheme is still handed out as `Scoped::scheme`: marshal ignores
        // deliveries for scopes it cannot turn into a scheme, and a verifier never signs anyway.
        self.get(epoch.get()).map(Scoped::scheme)
    }

    fn scheme(&self, epoch: Epoch) -> Option<Arc<Scheme>> {
        self.get(epoch.get())
    }
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 64,
        freezer_table_resize_frequency: 10,
        freezer_table_resize_chunk_size: 10,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1024 * 1024,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(1024),
        codec_config,
        replay_buffer: NZUsize!(1024 * 1024),
        freezer_key_write_buffer: NZUsize!(1024 * 1024),
        freezer_value_write_buffer: NZUsize!(1024 * 1024),
        ordinal_write_buffer: NZUsize!(1024 * 1024),
    }
}

/// Start a validator on `context`: marshal (one for the node's life) and, per epoch, a simplex
/// engine on that epoch's sub-channels. The epoch loop commits finalized blocks in order; when
/// it has committed the last block of the running epoch it starts the next epoch's engine (with
/// that block as its genesis and the validator set the block's state names) and stops the old
/// one.
pub async fn start_validator<E, S, R, P, B, A, T>(
    context: E,
    cfg: ValidatorConfig<A, T>,
    channels: Channels<S, R>,
    peers: P,
    blocker: B,
) -> Result<Running, Error>
where
    E: Spawner + Clock + Storage + Metrics + rand_core_010::CryptoRng,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    P: PeerProvider<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
    A: Application,
    T: PeerTracker,
{
    let ValidatorConfig {
        key,
        namespace,
        app,
        prefix,
        timing,
        mut tracker,
        gossip,
    } = cfg;
    let me = key.public_key();
    let length = app.epoch_length();
    let epocher = FixedEpocher::new(
        NonZeroU64::new(length)
            .filter(|l| l.get() > 1)
            .ok_or_else(|| Error::Config("epoch length below 2 blocks".into()))?,
    );
    let schemes = EpochSchemes::new(app.clone(), &namespace, key);
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(256));
    let genesis = ChainBlock::new(app.genesis());
    let genesis_digest = genesis.digest();
    let marshal_cfg = marshal::Config {
        provider: schemes.clone(),
        epocher: epocher.clone(),
        start: Start::Genesis(Digested::precomputed(genesis, genesis_digest)),
        partition_prefix: prefix.clone(),
        mailbox_size: NZUsize!(1024),
        view_retention: ViewDelta::new(10),
        prunable_items_per_section: NZU64!(10),
        page_cache: page_cache.clone(),
        replay_buffer: NZUsize!(1024 * 1024),
        key_write_buffer: NZUsize!(1024 * 1024),
        value_write_buffer: NZUsize!(1024 * 1024),
        block_codec_config: (),
        max_repair: NZUsize!(10),
        max_pending_acks: NZUsize!(1),
        strategy: Sequential,
    };
    let (resolver_rx, resolver) = marshal_resolver::init(
        context.child("resolver"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: marshal_cfg.mailbox_size,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    let (broadcast, buffer) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: marshal_cfg.mailbox_size,
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    let broadcast = broadcast.start(channels.blocks);
    let mut gossip_handles = Vec::new();
    if gossip {
        app.set_gossip(true);
        gossip_handles.extend(super::gossip::start(
            context.child("gossip"),
            channels.transactions.0,
            channels.transactions.1,
            app.clone(),
        ));
    }
    let finalizations = immutable::Archive::init(
        context.child("finalizations_by_height"),
        archive_config(
            &prefix,
            "finalizations-by-height",
            &page_cache,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(|e| Error::Consensus(format!("open the finalizations archive: {e}")))?;
    let blocks = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_config(&prefix, "finalized-blocks", &page_cache, ()),
    )
    .await
    .map_err(|e| Error::Consensus(format!("open the finalized blocks archive: {e}")))?;
    let (actor, mailbox, _floor) =
        Actor::init(context.child("marshal"), finalizations, blocks, marshal_cfg).await;
    let (reporter, mut finalized) = finalized_channel();
    let marshal_handle = actor.start(reporter, buffer, (resolver_rx, resolver));
    let inline = Inline::new(
        context.child("wrapper"),
        Adapter::new(app.clone(), timing.idle_block),
        mailbox.clone(),
        epocher,
    );

    // Votes, certificates and simplex fetches carry their epoch: each epoch's engine gets its
    // own sub-channel (a simplex engine blocks peers that send it another epoch's messages).
    // Messages for an epoch this node has not entered land in the backups and tell it that it
    // is behind.
    let (votes_mux, mut votes, mut votes_backup) = Muxer::builder(
        context.child("votes_mux"),
        channels.votes.0,
        channels.votes.1,
    )
    .with_backup()
    .build();
    let (certs_mux, mut certs, mut certs_backup) = Muxer::builder(
        context.child("certificates_mux"),
        channels.certificates.0,
        channels.certificates.1,
    )
    .with_backup()
    .build();
    let (fetch_mux, mut fetches) = Muxer::new(
        context.child("simplex_resolver_mux"),
        channels.simplex_resolver.0,
        channels.simplex_resolver.1,
    );
    let mux_handles = [votes_mux.start(), certs_mux.start(), fetch_mux.start()];

    // Resume in the epoch after the last committed block; its genesis is the boundary block
    // that ended the previous epoch (durable in marshal's archive before it was committed).
    let first = epoch_of(app.committed_height().saturating_add(1), length);
    let floor = if first == 0 {
        genesis_digest
    } else {
        let boundary = first.saturating_mul(length).saturating_sub(1);
        mailbox
            .get_block(Height::new(boundary))
            .await
            .map(|b| b.digest())
            .ok_or_else(|| {
                Error::Consensus(format!(
                    "boundary block {boundary} is missing from the consensus archive"
                ))
            })?
    };
    if first > 0 {
        // Keep the previous committee reachable while this node catches up.
        tracker.track(
            first.saturating_sub(1),
            &schemes.identities(first.saturating_sub(1)),
        );
    }

    let epochs = context.child("epochs").spawn({
        let app = app.clone();
        let marshal = mailbox.clone();
        move |ctx| async move {
            // Start (or restart) the engine of `epoch` whose genesis is `floor`.
            macro_rules! enter {
                ($epoch:expr, $floor:expr) => {{
                    let epoch: u64 = $epoch;
                    let Some(scheme) = schemes.get(epoch) else {
                        tracing::error!(epoch, "no validator set for the epoch; stopping");
                        return;
                    };
                    tracker.track(epoch, &schemes.identities(epoch));
                    let (Ok(v), Ok(c), Ok(f)) = (
                        votes.register(epoch).await,
                        certs.register(epoch).await,
                        fetches.register(epoch).await,
                    ) else {
                        tracing::error!(epoch, "p2p sub-channels closed; stopping");
                        return;
                    };
                    let engine = Engine::new(
                        ctx.child("simplex").with_attribute("epoch", epoch),
                        SimplexConfig {
                            scheme: (*scheme).clone(),
                            elector: RoundRobin::<Sha256>::default(),
                            blocker: blocker.clone(),
                            automaton: inline.clone(),
                            relay: inline.clone(),
                            reporter: inline.clone(),
                            strategy: Sequential,
                            partition: format!("{prefix}-simplex-{epoch}"),
                            mailbox_size: NZUsize!(1024),
                            epoch: Epoch::new(epoch),
                            floor: Floor::Genesis($floor),
                            replay_buffer: NZUsize!(1024 * 1024),
                            write_buffer: NZUsize!(1024 * 1024),
                            page_cache: page_cache.clone(),
                            leader_timeout: timing.leader_timeout,
                            certification_timeout: timing.certification_timeout,
                            timeout_retry: timing.timeout_retry,
                            view_retention: ViewDelta::new(10),
                            skip: SkipPolicy::Enabled {
                                timeout: timing.certification_timeout + timing.timeout_retry,
                                budget: SkipBudget::Participants,
                            },
                            fetch_timeout: NZDuration!(Duration::from_secs(1)),
                            fetch_retry_delay: Duration::from_millis(100),
                            forward: ForwardPolicy::Disabled,
                            track_historical_votes: false,
                        },
                    );
                    (epoch, engine.start(v, c, f))
                }};
            }
            let mut active = enter!(first, floor);
            let mut last_hint = ctx.current();
            loop {
                let event = {
                    let block = finalized.next();
                    let behind = futures::future::select(
                        Box::pin(votes_backup.recv()),
                        Box::pin(certs_backup.recv()),
                    );
                    match futures::future::select(block, behind).await {
                        Either::Left((block, _)) => Event::Finalized(block),
                        Either::Right((Either::Left((m, _)) | Either::Right((m, _)), _)) => {
                            Event::Behind(m)
                        }
                    }
                };
                match event {
                    Event::Finalized(None) => return,
                    Event::Finalized(Some((block, ack))) => {
                        let height = block.height().get();
                        let boundary = is_boundary(height, length);
                        let finalization =
                            certificate(&ctx, &marshal, &schemes, height, boundary).await;
                        commit(&ctx, &app, &block, finalization).await;
                        let next = epoch_of(height, length).saturating_add(1);
                        if boundary && next > active.0 {
                            let (old_epoch, old) = active;
                            active = enter!(next, block.digest());
                            old.abort();
                            tracing::info!(from = old_epoch, to = next, "entered epoch");
                        }
                        ack.acknowledge();
                    }
                    Event::Behind(Some((epoch, (from, _)))) => {
                        // Peers are in a later epoch: fetch the block that ends ours (with its
                        // certificate) from whoever told us, at most twice a second.
                        let now = ctx.current();
                        let due = now
                            .duration_since(last_hint)
                            .is_ok_and(|d| d >= Duration::from_millis(500));
                        if epoch > active.0 && due {
                            last_hint = now;
                            let end = active
                                .0
                                .saturating_add(1)
                                .saturating_mul(length)
                                .saturating_sub(1);
                            marshal.hint_finalized(Height::new(end), NonEmptyVec::new(from));
                        }
                    }
                    Event::Behind(None) => return,
                }
            }
        }
    });
    // The muxers run as long as the validator's context (dropping a handle does not stop them).
    drop(mux_handles);
    Ok(Running {
        marshal: mailbox,
        handles: [marshal_handle, broadcast, epochs]
            .into_iter()
            .chain(gossip_handles)
            .collect(),
    })
}

enum Event<B, M> {
    Finalized(Option<B>),
    Behind(Option<M>),
}

/// The finalization certificate of `height`, if marshal has one. A boundary block always gets
/// one (leaders re-propose it until it is finalized directly), and kiosks need it to follow the
/// validator set, so for a boundary this waits, asking the epoch's validators for it.
async fn certificate<E: Clock, A: Application>(
    ctx: &E,
    marshal: &Mailbox<Scheme, Standard<ChainBlock>>,
    schemes: &EpochSchemes<A>,
    height: u64,
    boundary: bool,
) -> Option<Vec<u8>> {
    let length = schemes.app.epoch_length();
    loop {
        if let Some(f) = marshal.get_finalization(Height::new(height)).await {
            return Some(commonware_codec::Encode::encode(&f).to_vec());
        }
        if !boundary {
            return None;
        }
        if let Ok(targets) = NonEmptyVec::try_from(schemes.identities(epoch_of(height, length))) {
            marshal.hint_finalized(Height::new(height), targets);
        }
        ctx.sleep(Duration::from_millis(100)).await;
    }
}

/// Commit a finalized block; a storage failure is retried, never skipped (the block is
/// acknowledged to marshal only once it is durable).
async fn commit<E: Clock, A: Application>(
    ctx: &E,
    app: &A,
    block: &Digested<ChainBlock>,
    finalization: Option<Vec<u8>>,
) {
    let mut backoff = Duration::from_millis(50);
    let start = ctx.current();
    loop {
        match app
            .finalized(block.inner().block().clone(), finalization.clone())
            .await
        {
            Ok(()) => {
                let took = ctx.current().duration_since(start).unwrap_or_default();
                if took >= Duration::from_millis(300) {
                    tracing::warn!(
                        height = block.height().get(),
                        txs = block.inner().block().txs.len(),
                        took_ms = took.as_millis(),
                        "slow commit"
                    );
                }
                return;
            }
            Err(e) => {
                tracing::error!(height = block.height().get(), error = %e, "commit failed; retrying");
                ctx.sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
