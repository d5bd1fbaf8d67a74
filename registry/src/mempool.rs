//! Pending transactions: bounded, deduplicated, in arrival order per signer's sequence.
//!
//! Admission checks what can be checked against the finalized state without executing: the
//! chain, the signer's current key, the signature and that the sequence number is not spent
//! (a replay). Each signer has numbered slots — slot 0 for its create-did (which spends no
//! sequence number), slot `seq + 1` for the rest — and a slot holds one transaction, because only
//! one can ever be applied. The operation's own rules run when a block applies it; a refused
//! transaction leaves the pool with its reason kept for `GET /v1/transactions/{id}`.
//!
//! A signer's transactions from its next expected slot on, without a gap, are **ready**: a block
//! can apply them. The rest **wait** behind a sequence gap, and they are what a stranger could
//! park for free, so they are bounded on their own (`specs/chain-transactions.md` §7.3): a few per
//! signer, a small share of the pool in total, and evicted after a number of finalized blocks.
//! Governance members have reserved room, so a full pool never locks governance out.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use civis_core::chain::state::{Refused, State};
use civis_core::chain::tx::{Op, SignedTx};
use civis_core::did::Did;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// A transaction id: SHA-256 of its COSE_Sign1 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub [u8; 32]);

impl TxId {
    /// The id of `tx`.
    pub fn of(tx: &SignedTx) -> Self {
        Self(Sha256::digest(tx.bytes()).into())
    }
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Pool limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most pending transactions (governance may use [`Limits::governance_reserve`] more).
    pub max_txs: usize,
    /// Most pending bytes, counted as [`cost`] (what a transaction holds in memory, not only its
    /// encoded size); governance may use a reserve on top ([`GOVERNANCE_RESERVE_BYTES`]).
    pub max_bytes: usize,
    /// How far past the signer's next sequence number a transaction may be; so also the most
    /// pending transactions of one signer.
    pub max_per_signer: usize,
    /// Most transactions waiting behind a sequence gap, all signers together.
    pub max_waiting: usize,
    /// Most transactions of one signer waiting behind a gap.
    pub max_waiting_per_signer: usize,
    /// Most bytes ([`cost`]) waiting behind gaps, all signers together.
    pub max_waiting_bytes: usize,
    /// A transaction still waiting this many finalized blocks after it arrived is dropped.
    pub max_wait_blocks: u64,
    /// Room only governance members may use once the pool is full.
    pub governance_reserve: usize,
}

/// Bytes governance may add past [`Limits::max_bytes`].
pub const GOVERNANCE_RESERVE_BYTES: usize = 8 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_txs: 50_000,
            max_bytes: 64 * 1024 * 1024,
            max_per_signer: 1_000,
            max_waiting: 5_000,
            max_waiting_per_signer: 16,
            max_waiting_bytes: 4 * 1024 * 1024,
            max_wait_blocks: 600,
            governance_reserve: 1_000,
        }
    }
}

/// What happened to a transaction the node saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for a block.
    Pending,
    /// In the finalized block at this height.
    Included(u64),
    /// Dropped by a proposer for this reason.
    Refused(String),
}

/// The signer's slot of `tx`.
fn slot(tx: &SignedTx) -> u64 {
    match tx.tx.op {
        Op::CreateDid { .. } => 0,
        _ => tx.tx.seq.saturating_add(1),
    }
}

/// What a pending transaction costs the pool in memory: its encoded bytes twice (the bytes and
/// the decoded COSE structure hold the payload each) and 16 bytes per decoded status change,
/// the one field that decodes much larger than it travels.
pub fn cost(tx: &SignedTx) -> usize {
    let changes = match &tx.tx.op {
        Op::UpdateStatus { delta, .. } => delta.changes().len(),
        _ => 0,
    };
    tx.bytes()
        .len()
        .saturating_mul(2)
        .saturating_add(changes.saturating_mul(16))
}

/// The next slot `state` expects from `did`.
pub fn expected_slot(state: &State, did: &Did) -> u64 {
    state.did(did).map_or(0, |r| r.seq.saturating_add(1))
}

/// How many outcomes are remembered.
const OUTCOMES: usize = 100_000;

#[derive(Debug)]
struct Pending {
    arrival: u64,
    /// Committed height when it arrived (for the wait limit).
    height: u64,
    id: TxId,
    tx: SignedTx,
}

/// One signer's pending transactions.
#[derive(Debug)]
struct SignerQueue {
    /// The next slot the finalized state expects. Only the signer's own transactions change
    /// it, so it is refreshed when one of them is finalized.
    expected: u64,
    governance: bool,
    txs: BTreeMap<u64, Pending>,
    /// Slots behind a gap (not in the run from `expected`).
    waiting: Vec<u64>,
    /// Their [`cost`].
    waiting_cost: usize,
}

impl SignerQueue {
    /// The first slot from `expected` on that holds nothing: the end of the ready run.
    fn run_end(&self) -> u64 {
        let mut s = self.expected;
        while self.txs.contains_key(&s) {
            s = s.saturating_add(1);
        }
        s
    }

    fn is_ready(&self) -> bool {
        self.txs.contains_key(&self.expected)
    }
}

/// The pool.
#[derive(Debug, Default)]
pub struct Mempool {
    limits: Limits,
    /// Arrival order of every pending transaction.
    order: BTreeMap<u64, (Did, u64)>,
    by_signer: HashMap<Did, SignerQueue>,
    /// Waiting transactions by (arrival height, arrival): the eviction order.
    waiting: BTreeMap<(u64, u64), (Did, u64)>,
    /// Their [`cost`].
    waiting_cost: usize,
    /// Signers with at least one ready transaction.
    ready: HashSet<Did>,
    next_arrival: u64,
    /// The last finalized height this pool heard of.
    height: u64,
    bytes: usize,
    outcomes: HashMap<TxId, Outcome>,
    outcome_order: VecDeque<TxId>,
    /// Relayed by another validator and not checked here ([`Mempool::insert_relayed`]).
    unchecked: HashSet<TxId>,
}

impl Mempool {
    /// An empty pool with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The pending copy of `tx` (same bytes), if any: it carries this node's signature check.
    pub fn twin(&self, tx: &SignedTx) -> Option<&SignedTx> {
        self.by_signer
            .get(&tx.signer.did)?
            .txs
            .get(&slot(tx))
            .map(|p| &p.tx)
            .filter(|t| t.bytes() == tx.bytes())
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether some pending transaction can be applied now: a signer's next expected slot is
    /// filled. Transactions behind a gap alone do not count, so they cannot make a proposer
    /// build block after empty block.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Whether a transaction outside `skip` (those already in unfinalized blocks of the branch)
    /// is ready: what a proposer building on that branch has to include. Costs the ready
    /// signers' runs until one is found.
    pub fn has_ready_outside(&self, skip: &HashSet<TxId>) -> bool {
        self.ready.iter().any(|did| {
            self.by_signer.get(did).is_some_and(|q| {
                q.txs
                    .range(q.expected..q.run_end())
                    .any(|(_, p)| !skip.contains(&p.id))
            })
        })
    }

    /// Transactions waiting behind a sequence gap.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Pending bytes, counted as [`cost`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next free sequence number of `did` counting pending transactions, given the
    /// finalized one.
    pub fn next_seq(&self, did: &Did, finalized: u64) -> u64 {
        // Slot s holds sequence number s - 1, so the last slot is the next free number.
        self.by_signer
            .get(did)
            .and_then(|q| q.txs.last_key_value())
            .map_or(finalized, |(last, _)| (*last).max(finalized))
    }

    /// Admit `tx` against the finalized `state`.
    pub fn insert(&mut self, tx: SignedTx, state: &State) -> Result<TxId, Error> {
        let id = TxId::of(&tx);
        let did = tx.signer.did.clone();
        let seq = tx.tx.seq;
        let slot = slot(&tx);
        let existing = self
            .by_signer
            .get(&did)
            .and_then(|q| q.txs.get(&slot))
            .map(|p| p.id);
        if existing == Some(id) {
            return Ok(id);
        }
        match state.admit(&tx) {
            Ok(()) => {}
            // The signer's create-did is pending here: check against the key it registers.
            Err(Refused::UnknownSigner(_)) if slot > 0 => self.admit_after_pending_create(&tx)?,
            Err(r) => return Err(Error::Refused(r)),
        }
        match existing {
            // A relayed transaction was never checked here: a checked rival takes its slot.
            Some(old) if self.unchecked.contains(&old) => {
                if let Some(id) = self.remove(&did, slot) {
                    self.record(
                        id,
                        Outcome::Refused("replaced by a checked transaction in its slot".into()),
                    );
                }
            }
            Some(_) => {
                return Err(Error::Conflict(format!(
                    "{did} already has a pending transaction with sequence number {seq}"
                )));
            }
            None => {}
        }
        self.place(tx, id, slot, state)
    }

    /// Put `tx` (id `id`) in `slot` of its signer, within the look-ahead, the waiting limits and
    /// the pool limits.
    fn place(&mut self, tx: SignedTx, id: TxId, slot: u64, state: &State) -> Result<TxId, Error> {
        let did = tx.signer.did.clone();
        let size = cost(&tx);
        let (expected, governance, run_end, waiting_here) = match self.by_signer.get(&did) {
            Some(q) => (q.expected, q.governance, q.run_end(), q.waiting.len()),
            None => {
                let expected = expected_slot(state, &did);
                (expected, state.governance().contains(&did), expected, 0)
            }
        };
        if slot < expected || slot >= expected.saturating_add(self.limits.max_per_signer as u64) {
            return Err(Error::Refused(Refused::BadSequence {
                got: tx.tx.seq,
                expected: expected.saturating_sub(1),
            }));
        }
        // Behind a gap: the signer's next slot is not filled up to this one.
        if slot > run_end {
            if waiting_here >= self.limits.max_waiting_per_signer {
                return Err(Error::Busy(format!(
                    "{did} already has {waiting_here} transactions waiting for an earlier \
                     sequence number; send that one first"
                )));
            }
            if self.waiting.len() >= self.limits.max_waiting
                || self.waiting_cost.saturating_add(size) > self.limits.max_waiting_bytes
            {
                return Err(Error::Busy(
                    "too many transactions are waiting behind sequence gaps; send them in order"
                        .into(),
                ));
            }
        }
        let (max_txs, max_bytes) = if governance {
            (
                self.limits
                    .max_txs
                    .saturating_add(self.limits.governance_reserve),
                self.limits
                    .max_bytes
                    .saturating_add(GOVERNANCE_RESERVE_BYTES),
            )
        } else {
            (self.limits.max_txs, self.limits.max_bytes)
        };
        if self.order.len() >= max_txs || self.bytes.saturating_add(size) > max_bytes {
            return Err(Error::Busy(
                "the transaction pool is full; retry later".into(),
            ));
        }
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        let height = self.height;
        let q = self
            .by_signer
            .entry(did.clone())
            .or_insert_with(|| SignerQueue {
                expected,
                governance,
                txs: BTreeMap::new(),
                waiting: Vec::new(),
                waiting_cost: 0,
            });
        q.txs.insert(
            slot,
            Pending {
                arrival,
                height,
                id,
                tx,
            },
        );
        self.order.insert(arrival, (did.clone(), slot));
        self.bytes += size;
        self.reclassify(&did);
        self.record(id, Outcome::Pending);
        Ok(id)
    }

    /// Recompute which of `did`'s transactions are ready and which wait, and the indexes that
    /// follow from it. Costs the signer's pending count, which the look-ahead bounds.
    fn reclassify(&mut self, did: &Did) {
        let Some(q) = self.by_signer.get_mut(did) else {
            self.ready.remove(did);
            return;
        };
        for s in q.waiting.drain(..) {
            if let Some(p) = q.txs.get(&s) {
                self.waiting.remove(&(p.height, p.arrival));
            }
        }
        self.waiting_cost = self.waiting_cost.saturating_sub(q.waiting_cost);
        let end = q.run_end();
        q.waiting = q.txs.range(end..).map(|(s, _)| *s).collect();
        q.waiting_cost = 0;
        for s in &q.waiting {
            if let Some(p) = q.txs.get(s) {
                self.waiting
                    .insert((p.height, p.arrival), (did.clone(), *s));
                q.waiting_cost = q.waiting_cost.saturating_add(cost(&p.tx));
            }
        }
        self.waiting_cost = self.waiting_cost.saturating_add(q.waiting_cost);
        if q.is_ready() {
            self.ready.insert(did.clone());
        } else {
            self.ready.remove(did);
        }
    }

    /// Hold a transaction another validator admitted and relayed. Only its place is checked here
    /// (chain, slot, look-ahead, limits); its signature and the state rules are checked when a
    /// block holding it is built or executed, so each validator checks each signature once rather
    /// than at relay and again in the block. A transaction already in its slot stays.
    pub fn insert_relayed(&mut self, tx: SignedTx, state: &State) -> Result<TxId, Error> {
        let id = TxId::of(&tx);
        if tx.tx.chain != state.chain_id() {
            return Err(Error::Refused(Refused::WrongChain(tx.tx.chain.clone())));
        }
        let did = tx.signer.did.clone();
        let slot = slot(&tx);
        if let Some(p) = self.by_signer.get(&did).and_then(|q| q.txs.get(&slot)) {
            return if p.id == id {
                Ok(id)
            } else {
                Err(Error::Conflict(format!("{did} already has slot {slot}")))
            };
        }
        self.place(tx, id, slot, state)?;
        self.unchecked.insert(id);
        Ok(id)
    }

    fn admit_after_pending_create(&self, tx: &SignedTx) -> Result<(), Error> {
        let unknown = || Error::Refused(Refused::UnknownSigner(tx.signer.did.to_string()));
        let create = self
            .by_signer
            .get(&tx.signer.did)
            .and_then(|q| q.txs.get(&0))
            .ok_or_else(unknown)?;
        let Op::CreateDid { key, .. } = &create.tx.tx.op else {
            return Err(unknown());
        };
        if tx.signer != tx.signer.did.key_url(1) {
            return Err(Error::Refused(Refused::StaleKey(tx.signer.to_string())));
        }
        tx.verify(key)
            .map_err(|_| Error::Refused(Refused::BadSignature))
    }

    /// Up to `max` pending transactions that can apply in order: oldest first, and of each signer
    /// only the run of consecutive slots from its next expected slot (a signer takes the arrival
    /// slots of its transactions in sequence order), minus what `skip` names (already in an
    /// unfinalized block of the branch). Transactions behind a gap wait and cannot crowd out
    /// others.
    pub fn pending(&self, max: usize, skip: &HashSet<TxId>) -> Vec<SignedTx> {
        let mut runs: HashMap<&Did, std::vec::IntoIter<&SignedTx>> = HashMap::new();
        let mut out = Vec::new();
        for (did, _) in self.order.values() {
            if out.len() >= max {
                break;
            }
            let Some(q) = self.by_signer.get(did) else {
                continue;
            };
            // Filtered before anything is cloned.
            let run = runs.entry(did).or_insert_with(|| {
                let end = q.run_end();
                q.txs
                    .range(q.expected..end)
                    .filter(|(_, p)| !skip.contains(&p.id))
                    .map(|(_, p)| &p.tx)
                    .collect::<Vec<_>>()
                    .into_iter()
            });
            if let Some(tx) = run.next() {
                out.push(tx.clone());
            }
        }
        out
    }

    fn remove(&mut self, did: &Did, slot: u64) -> Option<TxId> {
        let q = self.by_signer.get_mut(did)?;
        let p = q.txs.remove(&slot)?;
        self.order.remove(&p.arrival);
        self.waiting.remove(&(p.height, p.arrival));
        q.waiting.retain(|s| *s != slot);
        self.bytes = self.bytes.saturating_sub(cost(&p.tx));
        self.unchecked.remove(&p.id);
        if q.txs.is_empty() {
            self.waiting_cost = self.waiting_cost.saturating_sub(q.waiting_cost);
            self.by_signer.remove(did);
        }
        self.reclassify(did);
        Some(p.id)
    }

    /// Hold the waiting limits after transactions moved from ready to waiting without passing
    /// admission (a proposer dropped the head of a signer's run, so the rest waits behind the
    /// new gap): the signer's highest slots, then the pool's newest waiting transactions, leave.
    fn enforce_waiting_limits(&mut self, did: &Did) {
        const WHY: &str = "too many transactions waiting for an earlier sequence number";
        while let Some(&slot) = self
            .by_signer
            .get(did)
            .filter(|q| q.waiting.len() > self.limits.max_waiting_per_signer)
            .and_then(|q| q.waiting.last())
        {
            match self.remove(did, slot) {
                Some(id) => self.record(id, Outcome::Refused(WHY.into())),
                None => break,
            }
        }
        while self.waiting.len() > self.limits.max_waiting
            || self.waiting_cost > self.limits.max_waiting_bytes
        {
            let Some((d, slot)) = self.waiting.values().next_back().cloned() else {
                break;
            };
            match self.remove(&d, slot) {
                Some(id) => self.record(id, Outcome::Refused(WHY.into())),
                None => break,
            }
        }
    }

    /// Drop a transaction a proposer refused, unless it may still apply later (its sequence
    /// number is ahead of the signer's).
    pub fn refused(&mut self, tx: &SignedTx, why: &Refused) {
        if matches!(why, Refused::BadSequence { got, expected } if got > expected) {
            return;
        }
        if let Some(id) = self.remove(&tx.signer.did, slot(tx)) {
            self.record(id, Outcome::Refused(why.to_string()));
        }
        self.enforce_waiting_limits(&tx.signer.did);
    }

    /// A block finalized at `height` with `txs`; `state` is the state after it. Removes what it
    /// included and what it made stale, and drops what waited behind a gap for more than
    /// [`Limits::max_wait_blocks`] blocks.
    pub fn finalized(&mut self, height: u64, txs: &[SignedTx], state: &State) {
        self.height = self.height.max(height);
        for tx in txs {
            self.remove(&tx.signer.did, slot(tx));
            self.record(TxId::of(tx), Outcome::Included(height));
        }
        let signers: HashSet<Did> = txs.iter().map(|t| t.signer.did.clone()).collect();
        for did in signers {
            let next = expected_slot(state, &did);
            let Some(q) = self.by_signer.get_mut(&did) else {
                continue;
            };
            q.expected = next;
            let stale: Vec<u64> = q.txs.range(..next).map(|(s, _)| *s).collect();
            self.reclassify(&did);
            for slot in stale {
                if let Some(id) = self.remove(&did, slot) {
                    self.record(
                        id,
                        Outcome::Refused(
                            "its sequence number was used by another transaction".into(),
                        ),
                    );
                }
            }
            self.enforce_waiting_limits(&did);
        }
        self.evict_waiting();
    }

    /// Drop transactions that waited behind a gap for more than the limit's blocks (their
    /// predecessor never came), so nobody can park transactions forever.
    fn evict_waiting(&mut self) {
        let horizon = self.height.saturating_sub(self.limits.max_wait_blocks);
        let old: Vec<(Did, u64)> = self
            .waiting
            .range(..(horizon, 0))
            .map(|(_, k)| k.clone())
            .collect();
        for (did, slot) in old {
            if let Some(id) = self.remove(&did, slot) {
                self.record(
                    id,
                    Outcome::Refused(
                        "waited too long for an earlier sequence number that never came".into(),
                    ),
                );
            }
        }
    }

    /// What happened to `id`, if the node remembers it.
    pub fn outcome(&self, id: &TxId) -> Option<&Outcome> {
        self.outcomes.get(id)
    }

    fn record(&mut self, id: TxId, outcome: Outcome) {
        if self.outcomes.insert(id, outcome).is_none() {
            self.outcome_order.push_back(id);
            while self.outcome_order.len() > OUTCOMES {
                if let Some(old) = self.outcome_order.pop_front() {
                    self.outcomes.remove(&old);
                }
            }
        }
    }
}
