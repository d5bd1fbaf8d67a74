//! One validator's consensus stack, generic over the runtime and the network, so that the real
//! node (tokio, authenticated p2p) and the deterministic simulation (simulated p2p) start exactly
//! the same engine: marshal (block dissemination, backfill, finalized archives) under simplex,
//! joined by the `Inline` wrapper, which verifies a block before voting for it.

use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::core::{Actor, Mailbox};
use commonware_consensus::marshal::resolver::p2p as marshal_resolver;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::simplex::Engine;
use commonware_consensus::simplex::config::{
    Config as SimplexConfig, Floor, ForwardPolicy, SkipBudget, SkipPolicy,
};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::{ConstantProvider, Verifier as _};
use commonware_cryptography::secp256r1::standard::PublicKey;
use commonware_cryptography::{Digested, Digestible as _, Sha256};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};

use super::Scheme;
use super::app::{Adapter, commit_loop, finalized_channel};
use super::block::ChainBlock;
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

/// Everything a validator's engine needs.
pub struct ValidatorConfig<A> {
    /// This validator's identity (its signing key's public key).
    pub me: PublicKey,
    /// The signing scheme (this validator's key and the validator set).
    pub scheme: Scheme,
    /// The application.
    pub app: A,
    /// Storage partition prefix, unique per validator (`[A-Za-z0-9_-]`).
    pub prefix: String,
    /// Timing.
    pub timing: Timing,
}

/// A running validator: the marshal mailbox and the task handles.
pub struct Running {
    /// Marshal's mailbox (blocks and finalizations by height).
    pub marshal: Mailbox<Scheme, Standard<ChainBlock>>,
    /// Task handles (simplex, marshal, broadcast, commit loop).
    pub handles: Vec<Handle<()>>,
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

/// Start a validator on `context`.
pub async fn start_validator<E, S, R, P, B, A>(
    context: E,
    cfg: ValidatorConfig<A>,
    channels: Channels<S, R>,
    peers: P,
    blocker: B,
) -> Running
where
    E: Spawner + Clock + Storage + Metrics + rand_core_010::CryptoRng,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    P: Provider<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
    A: Application,
{
    let ValidatorConfig {
        me,
        scheme,
        app,
        prefix,
        timing,
    } = cfg;
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(256));
    // One fixed validator set: a practically endless epoch.
    let epocher = FixedEpocher::new(NZU64!(1 << 60));
    let genesis = ChainBlock::new(app.genesis());
    let genesis_digest = genesis.digest();
    let marshal_cfg = marshal::Config {
        provider: ConstantProvider::<Scheme, Epoch>::new(scheme.clone()),
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
    // Archives that fail to open mean the node's own files are damaged: nothing sensible to do
    // but stop loudly (the SQL store still holds every committed block).
    #[allow(clippy::expect_used)]
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
    .expect("open the finalizations archive");
    #[allow(clippy::expect_used)]
    let blocks = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive_config(&prefix, "finalized-blocks", &page_cache, ()),
    )
    .await
    .expect("open the finalized blocks archive");
    let (actor, mailbox, _floor) =
        Actor::init(context.child("marshal"), finalizations, blocks, marshal_cfg).await;
    let (reporter, finalized) = finalized_channel();
    let marshal_handle = actor.start(reporter, buffer, (resolver_rx, resolver));
    let commit = context.child("commit").spawn({
        let app = app.clone();
        let mailbox = mailbox.clone();
        move |rt| commit_loop(rt, app, mailbox, finalized)
    });
    let inline = Inline::new(
        context.child("wrapper"),
        Adapter::new(app, timing.idle_block),
        mailbox.clone(),
        epocher,
    );
    let engine = Engine::new(
        context.child("simplex"),
        SimplexConfig {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: inline.clone(),
            relay: inline.clone(),
            reporter: inline,
            strategy: Sequential,
            partition: format!("{prefix}-simplex-0"),
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(1024 * 1024),
            write_buffer: NZUsize!(1024 * 1024),
            page_cache,
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
    let simplex = engine.start(
        channels.votes,
        channels.certificates,
        channels.simplex_resolver,
    );
    Running {
        marshal: mailbox,
        handles: vec![simplex, marshal_handle, broadcast, commit],
    }
}
