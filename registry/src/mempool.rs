//! Pending transactions: bounded, deduplicated, in arrival order per signer's sequence.
//!
//! Admission checks what can be checked against the finalized state without executing: the
//! chain, the signer's current key, the signature and that the sequence number is not spent
//! (a replay). Each signer has numbered slots — slot 0 for its create-did (which spends no
//! sequence number), slot `seq + 1` for the rest — and a slot holds one transaction, because only
//! one can ever be applied. The operation's own rules run when a block applies it; a refused
//! transaction leaves the pool with its reason kept for `GET /v1/transactions/{id}`.

use std::collections::{BTreeMap, HashMap, VecDeque};

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
    /// Most pending transactions.
    pub max_txs: usize,
    /// Most pending bytes.
    pub max_bytes: usize,
    /// How far past the signer's next sequence number a transaction may be; so also the most
    /// pending transactions of one signer.
    pub max_per_signer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_txs: 50_000,
            max_bytes: 64 * 1024 * 1024,
            max_per_signer: 1_000,
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

/// The next slot `state` expects from `did`.
pub fn expected_slot(state: &State, did: &Did) -> u64 {
    state.did(did).map_or(0, |r| r.seq.saturating_add(1))
}

/// How many outcomes are remembered.
const OUTCOMES: usize = 100_000;

/// The pool.
#[derive(Debug, Default)]
pub struct Mempool {
    limits: Limits,
    /// Arrival order.
    order: BTreeMap<u64, (Did, u64)>,
    by_signer: HashMap<Did, BTreeMap<u64, (u64, TxId, SignedTx)>>,
    next_arrival: u64,
    bytes: usize,
    outcomes: HashMap<TxId, Outcome>,
    outcome_order: VecDeque<TxId>,
    /// Relayed by another validator and not checked here ([`Mempool::insert_relayed`]).
    unchecked: std::collections::HashSet<TxId>,
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
            .get(&slot(tx))
            .map(|e| &e.2)
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

    /// Pending bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next free sequence number of `did` counting pending transactions, given the
    /// finalized one.
    pub fn next_seq(&self, did: &Did, finalized: u64) -> u64 {
        // Slot s holds sequence number s - 1, so the last slot is the next free number.
        self.by_signer
            .get(did)
            .and_then(|m| m.last_key_value())
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
            .and_then(|m| m.get(&slot))
            .map(|e| e.1);
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
        let expected = expected_slot(state, &did);
        self.place(tx, id, slot, expected)
    }

    /// Put `tx` (id `id`) in `slot` of its signer, whose next expected slot is `expected`,
    /// within the look-ahead and the pool limits.
    fn place(&mut self, tx: SignedTx, id: TxId, slot: u64, expected: u64) -> Result<TxId, Error> {
        if slot >= expected.saturating_add(self.limits.max_per_signer as u64) {
            return Err(Error::Refused(Refused::BadSequence {
                got: tx.tx.seq,
                expected: expected.saturating_sub(1),
            }));
        }
        let size = tx.bytes().len();
        if self.order.len() >= self.limits.max_txs
            || self.bytes.saturating_add(size) > self.limits.max_bytes
        {
            return Err(Error::Busy(
                "the transaction pool is full; retry later".into(),
            ));
        }
        let did = tx.signer.did.clone();
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.by_signer
            .entry(did.clone())
            .or_default()
            .insert(slot, (arrival, id, tx));
        self.order.insert(arrival, (did, slot));
        self.bytes += size;
        self.record(id, Outcome::Pending);
        Ok(id)
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
        if let Some(e) = self.by_signer.get(&did).and_then(|m| m.get(&slot)) {
            return if e.1 == id {
                Ok(id)
            } else {
                Err(Error::Conflict(format!("{did} already has slot {slot}")))
            };
        }
        let expected = expected_slot(state, &did);
        if slot < expected {
            return Err(Error::Refused(Refused::BadSequence {
                got: tx.tx.seq,
                expected: expected.saturating_sub(1),
            }));
        }
        self.place(tx, id, slot, expected)?;
        self.unchecked.insert(id);
        Ok(id)
    }

    fn admit_after_pending_create(&self, tx: &SignedTx) -> Result<(), Error> {
        let Some((_, _, create)) = self.by_signer.get(&tx.signer.did).and_then(|m| m.get(&0))
        else {
            return Err(Error::Refused(Refused::UnknownSigner(
                tx.signer.did.to_string(),
            )));
        };
        let Op::CreateDid { key, .. } = &create.tx.op else {
            return Err(Error::Refused(Refused::UnknownSigner(
                tx.signer.did.to_string(),
            )));
        };
        if tx.signer != tx.signer.did.key_url(1) {
            return Err(Error::Refused(Refused::StaleKey(tx.signer.to_string())));
        }
        tx.verify(key)
            .map_err(|_| Error::Refused(Refused::BadSignature))
    }

    /// Up to `max` pending transactions that can apply in order: oldest first, and of each signer
    /// only the run of consecutive slots starting at `next_slot(signer)` (a signer
    /// takes the arrival slots of its transactions in sequence order). Transactions behind a gap
    /// wait and cannot crowd out others.
    pub fn pending(
        &self,
        max: usize,
        next_slot: impl Fn(&Did) -> u64,
        skip: &std::collections::HashSet<TxId>,
    ) -> Vec<SignedTx> {
        let mut runs: HashMap<&Did, std::vec::IntoIter<&SignedTx>> = HashMap::new();
        let mut out = Vec::new();
        for (did, _) in self.order.values() {
            if out.len() >= max {
                break;
            }
            let Some(txs) = self.by_signer.get(did) else {
                continue;
            };
            // Each signer's contiguous run from its next slot, minus what `skip` names (already
            // in an unfinalized block of the branch): filtered before anything is cloned.
            let run = runs.entry(did).or_insert_with(|| {
                let first = next_slot(did);
                txs.range(first..)
                    .zip(first..)
                    .take_while(|((slot, _), expected)| **slot == *expected)
                    .filter(|((_, (_, id, _)), _)| !skip.contains(id))
                    .map(|((_, (_, _, tx)), _)| tx)
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
        let mine = self.by_signer.get_mut(did)?;
        let (arrival, id, tx) = mine.remove(&slot)?;
        if mine.is_empty() {
            self.by_signer.remove(did);
        }
        self.order.remove(&arrival);
        self.bytes = self.bytes.saturating_sub(tx.bytes().len());
        self.unchecked.remove(&id);
        Some(id)
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
    }

    /// A block finalized at `height` with `txs`; `state` is the state after it. Removes what it
    /// included and what it made stale.
    pub fn finalized(&mut self, height: u64, txs: &[SignedTx], state: &State) {
        for tx in txs {
            self.remove(&tx.signer.did, slot(tx));
            self.record(TxId::of(tx), Outcome::Included(height));
        }
        let signers: Vec<Did> = txs.iter().map(|t| t.signer.did.clone()).collect();
        for did in signers {
            let next = expected_slot(state, &did);
            let stale: Vec<u64> = self
                .by_signer
                .get(&did)
                .map(|m| m.range(..next).map(|(s, _)| *s).collect())
                .unwrap_or_default();
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
        }
    }

    /// Drop transactions that waited more than `max_age` arrivals behind a sequence gap (their
    /// predecessor never came), so a signer cannot park transactions forever.
    pub fn evict_stuck(&mut self, max_age: u64, state: &State) {
        let horizon = self.next_arrival.saturating_sub(max_age);
        let old: Vec<(Did, u64)> = self
            .order
            .range(..horizon)
            .map(|(_, k)| k.clone())
            .collect();
        for (did, slot) in old {
            if slot > expected_slot(state, &did) {
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
