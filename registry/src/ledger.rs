//! The registry's application: what consensus orders, executed by Civis's own rules.
//!
//! The ledger holds the finalized head and its state, the states of blocks executed but not yet
//! final (keyed by header digest), and the mempool. Consensus drives it only through the
//! [`Application`] trait, so the commonware engine, the deterministic simulation and unit tests all
//! run the same execution code. Finalized blocks are committed to the [`Store`] in one database
//! transaction each before the head moves, so a crash never leaves a partial block.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use civis_core::chain::block::{self, Block, Header, MAX_BLOCK_TXS};
use civis_core::chain::light::SyncBundle;
use civis_core::chain::smt::Hash;
use civis_core::chain::state::{ChainRecord, Genesis, State, Tree, epoch_of};
use civis_core::chain::table::Table;
use civis_core::chain::tx::SignedTx;
use civis_core::crypto::EcPublicKey;
use civis_core::did::Did;
use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::mempool::{Limits, Mempool, Outcome, TxId};
use crate::store::{Commit, Store};

/// How far ahead of the local clock a proposed block's time may be.
pub const MAX_CLOCK_SKEW_SECS: i64 = 30;

/// What the consensus engine asks of the application. Blocks are identified by their header
/// digest. `ancestry` is the chain from the newest block whose state the application knows
/// ([`Application::knows`]) up to the parent, oldest first and possibly empty.
pub trait Application: Clone + Send + Sync + 'static {
    /// The genesis block (height 0, no transactions).
    fn genesis(&self) -> Block;
    /// Whether the state after block `digest` is known (finalized head or executed).
    fn knows(&self, digest: &Hash) -> bool;
    /// Build a block on `parent` at `now` (Unix seconds), or decline.
    fn propose(&self, parent: &Hash, ancestry: &[Block], now: i64) -> Option<Block>;
    /// Whether `block` is a valid child of `parent` (re-executes it).
    fn verify(&self, parent: &Hash, ancestry: &[Block], block: &Block, now: i64) -> bool;
    /// A block is final (delivered in height order, possibly again after a restart), with its
    /// finalization certificate when it was finalized directly.
    fn finalized(
        &self,
        block: Block,
        finalization: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Height of the last committed block.
    fn committed_height(&self) -> u64;
    /// Whether some pending transaction can be applied on top of `parent`: ready, and not
    /// already in an unfinalized block of that branch. Transactions behind a sequence gap, or
    /// in flight, must not make a leader propose empty block after empty block.
    fn has_pending(&self, parent: &Hash) -> bool;
    /// Blocks per consensus epoch (from genesis).
    fn epoch_length(&self) -> u64;
    /// The validator set of consensus `epoch`, once the committed chain has decided it (every
    /// epoch up to the one after the last committed block); `None` for later epochs.
    fn validators(&self, epoch: u64) -> Option<Vec<EcPublicKey>>;
    /// Transactions admitted from clients since the last call, up to about `max_bytes`, to send
    /// to the other validators.
    fn take_gossip(&self, max_bytes: usize) -> Vec<Vec<u8>>;
    /// A transaction another validator admitted (not sent on again).
    fn gossiped(&self, bytes: &[u8]);
    /// Whether client transactions are queued for gossip (off until the engine runs it).
    fn set_gossip(&self, on: bool);
}

/// Client transactions waiting to be gossiped, at most; older ones are dropped first (the
/// validator that admitted them still proposes them).
const MAX_OUTBOX: usize = 50_000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Transactions admitted to the mempool.
    pub submitted: AtomicU64,
    /// Transactions refused at admission.
    pub rejected: AtomicU64,
    /// Transactions in finalized blocks.
    pub finalized_txs: AtomicU64,
    /// Blocks proposed by this node.
    pub proposed: AtomicU64,
    /// Blocks this node refused to vote for.
    pub invalid_blocks: AtomicU64,
}

#[derive(Debug)]
struct Executed {
    header: Header,
    state: Arc<State>,
    txs: HashSet<TxId>,
}

#[derive(Debug)]
struct Shared {
    head: Header,
    state: Arc<State>,
    executed: HashMap<Hash, Executed>,
    mempool: Mempool,
    /// Validator sets by the first epoch each signs.
    sets: BTreeMap<u64, Vec<EcPublicKey>>,
    /// Client transactions not yet gossiped.
    outbox: std::collections::VecDeque<Vec<u8>>,
    /// Height of the latest committed block that carries its own finalization.
    certified: Option<u64>,
}

struct Inner<S> {
    /// Held while a block is committed and the head moves.
    commit: futures::lock::Mutex<()>,
    genesis: Genesis,
    genesis_block: Block,
    /// The genesis kiosk tree: the base of every cold sync bundle.
    genesis_kiosk: Tree,
    store: S,
    shared: Mutex<Shared>,
    counters: Counters,
    gossip: std::sync::atomic::AtomicBool,
}

/// The ledger; cheap to clone (shared).
pub struct Ledger<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Everything a sync bundle is built from, read from the ledger and the store
/// ([`Ledger::sync_source`]).
#[derive(Debug)]
pub struct SyncSource {
    since: Option<u64>,
    header: Header,
    finalization: Vec<u8>,
    head_tree: Tree,
    /// Kiosk-tree writes in `(since or at, head]`, newest first.
    undo: Vec<(u64, crate::store::Undo)>,
    epochs: Vec<civis_core::chain::light::EpochChange>,
    /// The base of a first sync.
    genesis: Option<Tree>,
}

impl SyncSource {
    /// The certified height the bundle will carry.
    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// Build the bundle: undo the head's kiosk tree down to the certified height, check it
    /// against the header, undo further down to `since` for the base, and diff.
    pub fn build(self) -> Result<SyncBundle, Error> {
        let at = self.header.height;
        let mut current = self.head_tree;
        let mut rest = self.undo.iter().peekable();
        while let Some((_, (t, k, old))) = rest.next_if(|(h, _)| *h > at) {
            current.restore_entry(*t, k, old.clone());
        }
        if current.root() != self.header.kiosk_root {
            return Err(Error::Store(crate::store::StoreError::Corrupt(format!(
                "kiosk tree at height {at} does not match its header"
            ))));
        }
        let base = match self.genesis {
            Some(genesis) => genesis,
            None => {
                let mut base = current.clone();
                for (_, (t, k, old)) in rest {
                    base.restore_entry(*t, k, old.clone());
                }
                base
            }
        };
        Ok(SyncBundle::build(
            self.header,
            self.finalization,
            self.epochs,
            self.since,
            &base,
            &current,
        ))
    }
}

/// The online view of one DID.
#[derive(Debug, Clone)]
pub struct DidView {
    /// Its record.
    pub record: civis_core::chain::state::DidRecord,
    /// The next free sequence number, counting pending transactions.
    pub next_seq: u64,
    /// The encoded record (the proven value).
    pub value: Vec<u8>,
    /// Inclusion proof in the public tree of `header`.
    pub proof: civis_core::chain::smt::Proof,
    /// The finalized header the proof is against.
    pub header: Header,
}

impl<S: Store + Send + Sync + 'static> Ledger<S> {
    /// Resume from `store` (genesis when empty).
    pub async fn open(genesis: Genesis, store: S, limits: Limits) -> Result<Self, Error> {
        let genesis_state =
            State::genesis(&genesis).map_err(|e| Error::Config(format!("genesis: {e}")))?;
        let genesis_block = Block {
            header: Header::genesis(&genesis_state, genesis.time),
            txs: Vec::new(),
        };
        let resumed = store.resume(&genesis).await?;
        let certified = store
            .latest_certified(resumed.head.height)
            .await?
            .map(|(b, _)| b.header.height);
        let mut sets = BTreeMap::from([(0, genesis.validators.clone())]);
        for change in store.epoch_changes(0, resumed.head.height).await? {
            let record = ChainRecord::decode(&change.record)
                .map_err(|e| Error::Consensus(format!("stored epoch change: {e}")))?;
            sets.insert(record.epoch, record.validators);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                commit: futures::lock::Mutex::new(()),
                genesis,
                genesis_block,
                genesis_kiosk: genesis_state.kiosk_tree().clone(),
                store,
                shared: Mutex::new(Shared {
                    head: resumed.head,
                    state: Arc::new(resumed.state),
                    executed: HashMap::new(),
                    mempool: Mempool::new(limits),
                    sets,
                    outbox: std::collections::VecDeque::new(),
                    certified,
                }),
                counters: Counters::default(),
                gossip: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock is a bug; the data is still consistent (every update
        // is a single assignment), so keep serving.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pinned genesis.
    pub fn genesis_config(&self) -> &Genesis {
        &self.inner.genesis
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The finalized head and its state.
    pub fn head(&self) -> (Header, Arc<State>) {
        let s = self.lock();
        (s.head.clone(), Arc::clone(&s.state))
    }

    /// Pending transactions and bytes.
    pub fn mempool_size(&self) -> (usize, usize) {
        let s = self.lock();
        (s.mempool.len(), s.mempool.bytes())
    }

    /// Admit a transaction from a client (the bytes of its COSE_Sign1); once admitted it is
    /// gossiped to the other validators.
    pub fn submit(&self, bytes: &[u8]) -> Result<TxId, Error> {
        let id = self.admit(bytes)?;
        if !self.inner.gossip.load(Ordering::Relaxed) {
            return Ok(id);
        }
        let mut s = self.lock();
        if s.outbox.len() >= MAX_OUTBOX {
            s.outbox.pop_front();
        }
        s.outbox.push_back(bytes.to_vec());
        Ok(id)
    }

    fn admit(&self, bytes: &[u8]) -> Result<TxId, Error> {
        let result = SignedTx::decode(bytes).map_err(Error::from).and_then(|tx| {
            // Check the signature before taking the lock (the check is remembered, so the
            // admission under the lock does not repeat it): validators admit every transaction
            // of the chain, and nothing else should wait for that.
            let state = Arc::clone(&self.lock().state);
            let _ = state.admit(&tx);
            let mut s = self.lock();
            let state = Arc::clone(&s.state);
            s.mempool.insert(tx, &state)
        });
        let counter = match result {
            Ok(_) => &self.inner.counters.submitted,
            Err(_) => &self.inner.counters.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// What happened to a transaction.
    pub fn outcome(&self, id: &TxId) -> Option<Outcome> {
        self.lock().mempool.outcome(id).cloned()
    }

    /// A DID with its proof against the finalized head.
    pub fn did(&self, did: &Did) -> Option<DidView> {
        let s = self.lock();
        let tree = s.state.public_tree();
        let value = tree.get(Table::Did, did.as_str().as_bytes())?.to_vec();
        let record = s.state.did(did)?;
        Some(DidView {
            next_seq: s.mempool.next_seq(did, record.seq),
            proof: tree.prove(Table::Did, did.as_str().as_bytes()),
            record,
            value,
            header: s.head.clone(),
        })
    }

    /// What the sync bundle for a kiosk at `since` (`None`: a first sync) is built from: the
    /// latest directly finalized header at or below the head, with its certificate, the head's
    /// kiosk tree and the store's undo records down to `since`. Read without the commit lock:
    /// the head is taken first and only store rows at or below it are used, so blocks committed
    /// meanwhile are simply not part of this bundle. Building ([`SyncSource::build`]) is CPU
    /// work for a blocking thread.
    pub async fn sync_source(&self, since: Option<u64>) -> Result<SyncSource, Error> {
        let (head, state) = self.head();
        let Some((block, finalization)) = self.inner.store.latest_certified(head.height).await?
        else {
            return Err(Error::NotFound(
                "no certified block yet; retry once the chain has finalized one".into(),
            ));
        };
        let at = block.header.height;
        if let Some(h) = since.filter(|h| *h > at) {
            return Err(Error::NotFound(format!(
                "height {h} is above the latest certified height {at}"
            )));
        }
        // One undo read: writes in (since, head], newest first.
        let undo = self
            .inner
            .store
            .kiosk_undo(since.unwrap_or(at), head.height)
            .await?;
        let epochs = self
            .inner
            .store
            .epoch_changes(since.unwrap_or(0), at)
            .await?;
        Ok(SyncSource {
            since,
            header: block.header,
            finalization,
            head_tree: state.kiosk_tree().clone(),
            undo,
            epochs,
            genesis: since.is_none().then(|| self.inner.genesis_kiosk.clone()),
        })
    }

    /// The sync bundle for a kiosk at `since`, built on this thread.
    pub async fn sync_bundle(&self, since: Option<u64>) -> Result<SyncBundle, Error> {
        self.sync_source(since).await?.build()
    }

    /// Height of the latest directly finalized (certified) block this node committed.
    pub fn certified_height(&self) -> Option<u64> {
        self.lock().certified
    }

    /// The state after `parent`, executing `ancestry` (oldest first) from the newest known
    /// block when needed.
    fn state_after(&self, parent: &Hash, ancestry: &[Block]) -> Option<(Header, Arc<State>)> {
        let known = |s: &Shared, d: &Hash| {
            if *d == s.head.digest() {
                Some((s.head.clone(), Arc::clone(&s.state)))
            } else {
                s.executed
                    .get(d)
                    .map(|e| (e.header.clone(), Arc::clone(&e.state)))
            }
        };
        if let Some(found) = known(&self.lock(), parent) {
            return Some(found);
        }
        let first = ancestry.first()?;
        let (mut header, mut state) = known(&self.lock(), &first.header.parent)?;
        for b in ancestry {
            self.adopt_checks(b);
            let next = block::execute(&state, &header, b).ok()?;
            header = b.header.clone();
            state = Arc::new(next);
            self.remember(b, Arc::clone(&state));
        }
        (header.digest() == *parent).then_some((header, state))
    }

    /// Let `b`'s transactions reuse the signature checks of their pending copies here.
    fn adopt_checks(&self, b: &Block) {
        let s = self.lock();
        for tx in &b.txs {
            if let Some(twin) = s.mempool.twin(tx) {
                tx.adopt_verification(twin);
            }
        }
    }

    fn remember(&self, b: &Block, state: Arc<State>) {
        let mut s = self.lock();
        if b.header.height > s.head.height {
            s.executed.insert(
                b.header.digest(),
                Executed {
                    header: b.header.clone(),
                    state,
                    txs: b.txs.iter().map(TxId::of).collect(),
                },
            );
        }
    }

    /// Transactions already in unfinalized blocks on the branch ending at `parent`.
    fn in_flight(&self, parent: &Hash) -> HashSet<TxId> {
        let s = self.lock();
        let mut out = HashSet::new();
        let mut at = *parent;
        while let Some(e) = s.executed.get(&at) {
            out.extend(e.txs.iter().copied());
            at = e.header.parent;
        }
        out
    }
}

impl<S: Store + Send + Sync + 'static> Application for Ledger<S> {
    fn genesis(&self) -> Block {
        self.inner.genesis_block.clone()
    }

    fn knows(&self, digest: &Hash) -> bool {
        let s = self.lock();
        *digest == s.head.digest() || s.executed.contains_key(digest)
    }

    fn propose(&self, parent: &Hash, ancestry: &[Block], now: i64) -> Option<Block> {
        let (parent_header, state) = self.state_after(parent, ancestry)?;
        let skip = self.in_flight(parent);
        let pending: Vec<SignedTx> = self.lock().mempool.pending(MAX_BLOCK_TXS, &skip);
        let built = block::build(&state, &parent_header, pending, now);
        {
            let mut s = self.lock();
            for (tx, why) in &built.refused {
                s.mempool.refused(tx, why);
            }
        }
        self.remember(&built.block, Arc::new(built.state));
        self.inner.counters.proposed.fetch_add(1, Ordering::Relaxed);
        Some(built.block)
    }

    fn verify(&self, parent: &Hash, ancestry: &[Block], b: &Block, now: i64) -> bool {
        self.adopt_checks(b);
        let ok = (|| {
            if b.header.time > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
                return false;
            }
            let Some((parent_header, state)) = self.state_after(parent, ancestry) else {
                return false;
            };
            match block::execute(&state, &parent_header, b) {
                Ok(next) => {
                    self.remember(b, Arc::new(next));
                    true
                }
                Err(_) => false,
            }
        })();
        if !ok {
            self.inner
                .counters
                .invalid_blocks
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    async fn finalized(&self, b: Block, finalization: Option<Vec<u8>>) -> Result<(), Error> {
        let digest = b.header.digest();
        let (head, before, cached) = {
            let s = self.lock();
            if b.header.height <= s.head.height {
                // Redelivered after a restart: already committed.
                return Ok(());
            }
            (
                s.head.clone(),
                Arc::clone(&s.state),
                s.executed.get(&digest).map(|e| Arc::clone(&e.state)),
            )
        };
        let after = match cached {
            Some(state) => state,
            None => Arc::new(block::execute(&before, &head, &b).map_err(|e| {
                Error::Consensus(format!(
                    "finalized block {} does not execute: {e}",
                    b.header.height
                ))
            })?),
        };
        let commit = Commit::new(b.clone(), finalization, &before, &after);
        let new_set = after
            .chain_record()
            .filter(|r| before.chain_record().as_ref() != Some(r));
        if new_set.is_some() && commit.epoch_change.is_none() {
            // Kiosks follow the set only through the old set's certificate of this block.
            return Err(Error::Consensus(format!(
                "boundary block {} changes the validator set but has no finalization yet",
                b.header.height
            )));
        }
        let _guard = self.inner.commit.lock().await;
        self.inner.store.commit(&commit).await?;
        let mut s = self.lock();
        if let Some(r) = new_set {
            s.sets.insert(r.epoch, r.validators);
        }
        let height = b.header.height;
        if commit.finalization.is_some() {
            s.certified = Some(height);
        }
        s.mempool.finalized(height, &b.txs, &after);
        s.head = b.header;
        s.state = after;
        s.executed.retain(|_, e| e.header.height > height);
        self.inner
            .counters
            .finalized_txs
            .fetch_add(b.txs.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn committed_height(&self) -> u64 {
        self.lock().head.height
    }

    fn has_pending(&self, parent: &Hash) -> bool {
        if !self.lock().mempool.has_ready() {
            return false;
        }
        let skip = self.in_flight(parent);
        self.lock().mempool.has_ready_outside(&skip)
    }

    fn epoch_length(&self) -> u64 {
        self.inner.genesis.epoch_length
    }

    fn take_gossip(&self, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut s = self.lock();
        let mut out = Vec::new();
        let mut size = 0usize;
        while let Some(tx) = s.outbox.front() {
            size = size.saturating_add(tx.len());
            if size > max_bytes && !out.is_empty() {
                break;
            }
            if let Some(tx) = s.outbox.pop_front() {
                out.push(tx);
            }
        }
        out
    }

    fn set_gossip(&self, on: bool) {
        self.inner.gossip.store(on, Ordering::Relaxed);
    }

    fn gossiped(&self, bytes: &[u8]) {
        // A transaction this node already holds, or has already executed in a block that beat
        // the gossip here, is skipped before any decoding or signature check.
        let id = TxId(Sha256::digest(bytes).into());
        {
            let s = self.lock();
            if s.mempool.outcome(&id).is_some() || s.executed.values().any(|e| e.txs.contains(&id))
            {
                return;
            }
        }
        // Held without a signature check here: a validator checks each signature once, when a
        // block holding the transaction is built or executed (Mempool::insert_relayed).
        // Refusals are expected (a rival at the same slot, a stale sequence number).
        let Ok(tx) = SignedTx::decode(bytes) else {
            return;
        };
        let mut s = self.lock();
        let state = Arc::clone(&s.state);
        let _ = s.mempool.insert_relayed(tx, &state);
    }

    fn validators(&self, epoch: u64) -> Option<Vec<EcPublicKey>> {
        let s = self.lock();
        let decided = epoch_of(
            s.head.height.saturating_add(1),
            self.inner.genesis.epoch_length,
        );
        if epoch > decided {
            return None;
        }
        s.sets.range(..=epoch).next_back().map(|(_, v)| v.clone())
    }
}
