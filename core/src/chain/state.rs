//! Registry state and the authorization rules of every operation (`specs/chain-transactions.md`).
//!
//! Pure and deterministic: `apply` takes the state, a signed transaction and the block time, and
//! either changes the state or refuses with a [`Refused`] reason, changing nothing. Two
//! authenticated trees hold the state ([`super::smt`]): the **kiosk tree** (DID keys,
//! accreditations, kiosk grants, status lists, elections, governance, validators) that kiosks keep
//! whole, and the **public tree** (DID records with their sequence numbers).

use std::collections::BTreeMap;
use std::sync::Arc;

use ciborium::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::smt::{self, Hash, SparseMerkleTree};
use super::tx::{self, ElementGrants, Op, SignedTx};
use crate::cbor::{self, access, text, text_map};
use crate::cose::{self, Domain};
use crate::crypto::EcPublicKey;
use crate::did::{Did, DidUrl, KeyCommitment};
use crate::kiosk::KioskAccreditation;
use crate::status::{Bits, Status, StatusList};

/// Bytes of list data per status-list chunk leaf.
pub const STATUS_CHUNK: usize = 1024;
/// Largest status list a transaction may create (entries).
pub const MAX_STATUS_ENTRIES: u64 = 16 * 1024 * 1024;

/// Table tags: the first component of every key path.
pub mod tag {
    /// Public tree: DID records.
    pub const DID: &[u8] = b"did";
    /// Kiosk tree: every key a DID has had, by DID URL.
    pub const KEY: &[u8] = b"key";
    /// Kiosk tree: issuer accreditations.
    pub const ISSUER: &[u8] = b"issuer";
    /// Kiosk tree: kiosk accreditations.
    pub const KIOSK: &[u8] = b"kiosk";
    /// Kiosk tree: status-list metadata.
    pub const STATUS_META: &[u8] = b"status-meta";
    /// Kiosk tree: status-list chunks.
    pub const STATUS_CHUNK: &[u8] = b"status-chunk";
    /// Kiosk tree: elections.
    pub const ELECTION: &[u8] = b"election";
    /// Kiosk tree: governance and validators.
    pub const CHAIN: &[u8] = b"chain";
}

/// Why a transaction was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refused {
    /// The transaction names another chain.
    #[error("transaction is for chain {0:?}")]
    WrongChain(String),
    /// The signer DID does not exist.
    #[error("unknown signer {0}")]
    UnknownSigner(String),
    /// The signer DID is deactivated.
    #[error("signer {0} is deactivated")]
    Deactivated(String),
    /// The signer key is not the DID's current key.
    #[error("{0} is not the DID's current key")]
    StaleKey(String),
    /// Signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The sequence number is not the next one (replay or gap).
    #[error("sequence number {got}, expected {expected}")]
    BadSequence {
        /// Given.
        got: u64,
        /// Expected.
        expected: u64,
    },
    /// The signer may not perform this operation.
    #[error("{signer} is not authorized to {op}")]
    Unauthorized {
        /// Who.
        signer: String,
        /// What.
        op: &'static str,
    },
    /// The operation's content breaks a rule.
    #[error("invalid {op}: {detail}")]
    Invalid {
        /// Which operation.
        op: &'static str,
        /// What rule.
        detail: String,
    },
}

fn invalid(op: &'static str, detail: impl Into<String>) -> Refused {
    Refused::Invalid {
        op,
        detail: detail.into(),
    }
}

/// One stored entry: table tag, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Table tag.
    pub tag: Vec<u8>,
    /// Key within the table.
    pub key: Vec<u8>,
    /// Encoded value.
    pub value: Vec<u8>,
}

/// One authenticated table set: the tree, and the values behind its leaves.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    smt: SparseMerkleTree,
    /// Persistent (structurally shared) so that a block's copy of the parent state costs O(1)
    /// and each write O(log n), not a copy of every entry.
    values: imbl::OrdMap<Hash, Arc<Entry>>,
    /// Paths written since the last [`Tree::clear_touched`]: what a block changed, found without
    /// comparing whole trees.
    touched: std::collections::BTreeSet<Hash>,
}

impl Tree {
    /// The root.
    pub fn root(&self) -> Hash {
        self.smt.root()
    }

    /// The value under `(tag, key)`.
    pub fn get(&self, tag: &[u8], key: &[u8]) -> Option<&[u8]> {
        self.values
            .get(&smt::key_path(tag, key))
            .map(|e| e.value.as_slice())
    }

    /// Set `(tag, key)`; returns the entry it replaced.
    pub(crate) fn put(&mut self, tag: &[u8], key: &[u8], value: Vec<u8>) -> Option<Entry> {
        let path = smt::key_path(tag, key);
        self.put_at(
            path,
            Entry {
                tag: tag.to_vec(),
                key: key.to_vec(),
                value,
            },
        )
    }

    /// Set the entry at a precomputed path; returns the entry it replaced.
    pub(crate) fn put_at(&mut self, path: Hash, entry: Entry) -> Option<Entry> {
        self.touched.insert(path);
        self.smt.insert(path, smt::value_hash(&entry.value));
        self.values
            .insert(path, Arc::new(entry))
            .map(Arc::unwrap_or_clone)
    }

    /// Set `(tag, key)` to `value`, or remove it for `None`: a node rebuilds the tree of an
    /// older height by undoing later writes.
    pub fn restore_entry(&mut self, tag: &[u8], key: &[u8], value: Option<Vec<u8>>) {
        match value {
            Some(v) => {
                self.put(tag, key, v);
            }
            None => self.remove_at(&smt::key_path(tag, key)),
        }
    }

    /// Remove the entry at `path` (to undo an insertion).
    pub(crate) fn remove_at(&mut self, path: &Hash) {
        self.touched.insert(*path);
        self.smt.remove(path);
        self.values.remove(path);
    }

    /// The entry at a path.
    pub(crate) fn get_at(&self, path: &Hash) -> Option<&Entry> {
        self.values.get(path).map(Arc::as_ref)
    }

    /// Build a tree from entries keyed by path, hashing each node once.
    pub(crate) fn from_entries(values: BTreeMap<Hash, Entry>) -> Self {
        let leaves: Vec<(Hash, Hash)> = values
            .iter()
            .map(|(p, e)| (*p, smt::value_hash(&e.value)))
            .collect();
        Self {
            smt: SparseMerkleTree::from_sorted_leaves(&leaves),
            values: values.into_iter().map(|(p, e)| (p, Arc::new(e))).collect(),
            touched: std::collections::BTreeSet::new(),
        }
    }

    /// A copy of all entries keyed by path.
    pub(crate) fn to_map(&self) -> BTreeMap<Hash, Entry> {
        self.values
            .iter()
            .map(|(p, e)| (*p, Entry::clone(e)))
            .collect()
    }

    /// Every entry, ordered by key path (what a cold kiosk sync carries).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.values.values().map(Arc::as_ref)
    }

    /// Entries of `self` that are new or changed compared with `older` (entries are never
    /// removed from the registry trees; withdrawals overwrite).
    pub fn changed_since(&self, older: &Tree) -> Vec<Entry> {
        self.values
            .iter()
            .filter(|(path, e)| older.values.get(*path).is_none_or(|o| o.value != e.value))
            .map(|(_, e)| Entry::clone(e))
            .collect()
    }

    /// Forget the record of written paths (the start of a block).
    pub fn clear_touched(&mut self) {
        self.touched.clear();
    }

    /// Entries written since [`Tree::clear_touched`] whose value differs from `older`'s, each
    /// with the value it replaced: the same as [`Tree::changed_since`] when `self` is `older`
    /// plus those writes, at the cost of the writes rather than of the trees.
    pub fn touched_since(&self, older: &Tree) -> Vec<(Entry, Option<Vec<u8>>)> {
        self.touched
            .iter()
            .filter_map(|path| {
                let e = self.values.get(path)?;
                let old = older.values.get(path);
                (old.is_none_or(|o| o.value != e.value))
                    .then(|| (Entry::clone(e), old.map(|o| o.value.clone())))
            })
            .collect()
    }

    /// A proof for `(tag, key)`.
    pub fn prove(&self, tag: &[u8], key: &[u8]) -> smt::Proof {
        self.smt.prove(&smt::key_path(tag, key))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The chain's starting point (`genesis.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// Chain id, also the consensus namespace.
    pub chain_id: String,
    /// Genesis time (Unix seconds).
    pub time: i64,
    /// Validators of epoch 0.
    pub validators: Vec<EcPublicKey>,
    /// Governance members: inception key and next-key commitment of each governance DID.
    pub governance: Vec<(EcPublicKey, KeyCommitment)>,
    /// Members needed for quorum operations (validator-set changes).
    pub governance_threshold: usize,
    /// Blocks per consensus epoch ([`DEFAULT_EPOCH_LENGTH`] unless set): a validator-set change
    /// takes effect at the next epoch boundary.
    pub epoch_length: u64,
}

/// Blocks per consensus epoch unless genesis says otherwise: about an hour of idle two-blocks-a-
/// second chain, so a validator-set change waits at most that long and kiosks see at most one
/// epoch change per change of the set.
pub const DEFAULT_EPOCH_LENGTH: u64 = 7200;

/// The consensus epoch of `height` for epochs of `length` blocks (epoch 0 holds genesis), the
/// same mapping as commonware's fixed-length epocher.
pub fn epoch_of(height: u64, length: u64) -> u64 {
    height.checked_div(length).unwrap_or(0)
}

/// Whether `height` is the last block of its epoch: the boundary block the old validator set
/// finalizes and whose state names the next set.
pub fn is_boundary(height: u64, length: u64) -> bool {
    length > 1 && height % length == length - 1
}

/// The chain record (`chain`/`validators` in the kiosk tree): the current validator set, the
/// first consensus epoch it signs, and the epoch length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// First consensus epoch this set signs (0 for the genesis set).
    pub epoch: u64,
    /// Its validators.
    pub validators: Vec<EcPublicKey>,
    /// Blocks per consensus epoch.
    pub epoch_length: u64,
}

impl ChainRecord {
    /// Decode the stored record.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        const W: &str = "chain record";
        let v = cbor::decode(W, bytes, cbor::Limits::new(1 << 20))?;
        let m = access::map(W, &v)?;
        Ok(Self {
            epoch: access::uint(W, access::req(W, m, "epoch")?)?,
            validators: access::array(W, access::req(W, m, "validators")?)?
                .iter()
                .map(|k| EcPublicKey::from_sec1(access::bytes(W, k)?))
                .collect::<crate::Result<_>>()?,
            epoch_length: access::uint(W, access::req(W, m, "epochLength")?)?,
        })
    }
}

/// A DID's record in the public tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidRecord {
    /// Current key.
    pub key: EcPublicKey,
    /// Its number (`#key-N`).
    pub key_index: u32,
    /// Commitment to the next key (absent once deactivated).
    pub next: Option<KeyCommitment>,
    /// The next sequence number expected from this DID.
    pub seq: u64,
    /// Deactivated for good.
    pub deactivated: bool,
}

impl DidRecord {
    /// The DID document this record describes.
    pub fn document(&self, did: &Did) -> crate::did::DidDocument {
        crate::did::DidDocument::current(
            did,
            self.key_index,
            &self.key,
            self.next.as_ref(),
            self.deactivated,
        )
    }

    fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("key", Value::Bytes(self.key.compressed())),
            ("key_index", Value::Integer(self.key_index.into())),
            (
                "next",
                self.next
                    .map_or(Value::Null, |c| Value::Bytes(c.0.to_vec())),
            ),
            ("seq", Value::Integer(self.seq.into())),
            ("deactivated", Value::Bool(self.deactivated)),
        ]))
    }

    /// Decode a stored record.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        const W: &str = "DID record";
        let v = cbor::decode(W, bytes, cbor::Limits::new(1024))?;
        let m = access::map(W, &v)?;
        Ok(Self {
            key: EcPublicKey::from_sec1(access::bytes(W, access::req(W, m, "key")?)?)?,
            key_index: u32::try_from(access::uint(W, access::req(W, m, "key_index")?)?)
                .map_err(|_| crate::Error::malformed(W, "key_index"))?,
            next: match access::req(W, m, "next")? {
                Value::Null => None,
                b => Some(KeyCommitment(
                    access::bytes(W, b)?
                        .try_into()
                        .map_err(|_| crate::Error::malformed(W, "next"))?,
                )),
            },
            seq: access::uint(W, access::req(W, m, "seq")?)?,
            deactivated: access::req(W, m, "deactivated")?.as_bool().unwrap_or(true),
        })
    }

    fn key_url(&self, did: &Did) -> DidUrl {
        did.key_url(self.key_index)
    }
}

/// The registry state.
#[derive(Debug, Clone)]
pub struct State {
    chain_id: String,
    governance: Vec<Did>,
    threshold: usize,
    kiosk: Tree,
    public: Tree,
    /// Shared like the trees; an update copies only the list it changes.
    lists: imbl::OrdMap<String, Arc<(ListInfo, StatusList)>>,
    epoch_length: u64,
}

/// The combined state root: H("civis/state/v1" || kiosk root || public root). Consensus orders
/// the header digest, which commits both sub-roots.
pub fn state_root(kiosk_root: &Hash, public_root: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(b"civis/state/v1");
    h.update(kiosk_root);
    h.update(public_root);
    h.finalize().into()
}

/// A status list's URI: `<issuer DID>/status/<list>`.
pub fn status_uri(issuer: &Did, list: &str) -> String {
    format!("{issuer}/status/{list}")
}

impl State {
    /// The state at genesis: governance DIDs created, validators recorded.
    pub fn genesis(g: &Genesis) -> Result<Self, Refused> {
        if g.validators.is_empty()
            || g.validators.len() > super::cert::MAX_VALIDATORS
            || g.governance.is_empty()
        {
            return Err(invalid(
                "genesis",
                "needs 1..=1024 validators and governance",
            ));
        }
        let mut keys: Vec<_> = g.validators.iter().map(EcPublicKey::compressed).collect();
        keys.sort();
        if keys.windows(2).any(|w| matches!(w, [a, b] if a == b)) || g.chain_id.is_empty() {
            return Err(invalid(
                "genesis",
                "a validator appears twice, or no chain id",
            ));
        }
        if g.epoch_length < 2 {
            return Err(invalid("genesis", "epoch length below 2 blocks"));
        }
        if g.governance_threshold == 0 || g.governance_threshold > g.governance.len() {
            return Err(invalid(
                "genesis",
                "governance threshold outside 1..=members",
            ));
        }
        let mut s = Self {
            chain_id: g.chain_id.clone(),
            governance: Vec::new(),
            threshold: g.governance_threshold,
            kiosk: Tree::default(),
            public: Tree::default(),
            lists: imbl::OrdMap::new(),
            epoch_length: g.epoch_length,
        };
        for (key, next) in &g.governance {
            let did = Did::from_inception(key, next);
            if s.governance.contains(&did) {
                return Err(invalid("genesis", "a governance member appears twice"));
            }
            s.create_did(&did, key, *next);
            s.governance.push(did);
        }
        s.write_chain_record(&g.validators, 0);
        Ok(s)
    }

    /// Rebuild the state from persisted tree entries (what a restarting validator does): the
    /// trees are bulk-built, the status lists reassembled from their chunks, governance taken
    /// from genesis. The caller compares the roots with its last committed header.
    pub fn restore(
        genesis: &Genesis,
        kiosk: Vec<Entry>,
        public: Vec<Entry>,
    ) -> Result<Self, Refused> {
        let mut s = Self::genesis(genesis)?;
        let by_path = |entries: Vec<Entry>| -> BTreeMap<Hash, Entry> {
            entries
                .into_iter()
                .map(|e| (smt::key_path(&e.tag, &e.key), e))
                .collect()
        };
        s.kiosk = Tree::from_entries(by_path(kiosk));
        s.public = Tree::from_entries(by_path(public));
        s.lists = status_lists(&s.kiosk)
            .map_err(|what| invalid("restore", what))?
            .into_iter()
            .map(|(uri, list)| (uri, Arc::new(list)))
            .collect();
        Ok(s)
    }

    /// Chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Root of the kiosk tree.
    pub fn kiosk_root(&self) -> Hash {
        self.kiosk.root()
    }

    /// Root of the public tree.
    pub fn public_root(&self) -> Hash {
        self.public.root()
    }

    /// The combined state root.
    pub fn root(&self) -> Hash {
        state_root(&self.kiosk_root(), &self.public_root())
    }

    /// The kiosk tree.
    pub fn kiosk_tree(&self) -> &Tree {
        &self.kiosk
    }

    /// The public tree.
    pub fn public_tree(&self) -> &Tree {
        &self.public
    }

    /// A DID's record.
    pub fn did(&self, did: &Did) -> Option<DidRecord> {
        self.public
            .get(tag::DID, did.as_str().as_bytes())
            .and_then(|b| DidRecord::decode(b).ok())
    }

    /// The status list at `uri`.
    pub fn status_list(&self, uri: &str) -> Option<&StatusList> {
        self.lists.get(uri).map(|e| &e.1)
    }

    /// Start recording the writes of a block (see [`Tree::touched_since`]).
    pub fn clear_touched(&mut self) {
        self.kiosk.clear_touched();
        self.public.clear_touched();
    }

    /// Every status list: URI, metadata and content, by URI.
    pub fn status_lists(&self) -> impl Iterator<Item = (&str, &ListInfo, &StatusList)> {
        self.lists.iter().map(|(u, e)| (u.as_str(), &e.0, &e.1))
    }

    /// The governance members.
    pub fn governance(&self) -> &[Did] {
        &self.governance
    }

    fn create_did(&mut self, did: &Did, key: &EcPublicKey, next: KeyCommitment) {
        let rec = DidRecord {
            key: key.clone(),
            key_index: 1,
            next: Some(next),
            seq: 0,
            deactivated: false,
        };
        self.public
            .put(tag::DID, did.as_str().as_bytes(), rec.encode());
        self.kiosk.put(
            tag::KEY,
            did.key_url(1).to_string().as_bytes(),
            key.compressed(),
        );
    }

    fn write_chain_record(&mut self, validators: &[EcPublicKey], epoch: u64) {
        let value = cbor::encode(&text_map(vec![
            ("epoch", Value::Integer(epoch.into())),
            (
                "validators",
                Value::Array(
                    validators
                        .iter()
                        .map(|k| Value::Bytes(k.compressed()))
                        .collect(),
                ),
            ),
            (
                "governance",
                Value::Array(self.governance.iter().map(|d| text(d.as_str())).collect()),
            ),
            ("threshold", Value::Integer((self.threshold as u64).into())),
            ("epochLength", Value::Integer(self.epoch_length.into())),
        ]));
        self.kiosk.put(tag::CHAIN, b"validators", value);
    }

    /// The validator set waiting for the next epoch boundary, if a change was approved.
    pub fn pending_validators(&self) -> Option<Vec<EcPublicKey>> {
        let bytes = self.public.get(tag::CHAIN, PENDING_VALIDATORS)?;
        let keys = decode_key_list(bytes)?;
        (!keys.is_empty()).then_some(keys)
    }

    /// Close the block at `height`: at an epoch boundary, an approved validator set becomes the
    /// set of the next epoch, recorded in this block's kiosk tree so the old set's finalization
    /// of the boundary certifies the hand-over. Block building and execution both call this after
    /// the transactions.
    pub fn end_block(&mut self, height: u64) {
        if !is_boundary(height, self.epoch_length) {
            return;
        }
        if let Some(next) = self.pending_validators() {
            let epoch = epoch_of(height, self.epoch_length).saturating_add(1);
            self.write_chain_record(&next, epoch);
            // Overwritten, not removed: the read models only ever see writes.
            self.public
                .put(tag::CHAIN, PENDING_VALIDATORS, encode_key_list(&[]));
        }
    }

    /// Check the signer of `tx`: returns its DID and record. For create-did the "record" is the
    /// one the operation would create.
    fn authenticate(&self, tx: &SignedTx) -> Result<(Did, DidRecord), Refused> {
        if tx.tx.chain != self.chain_id {
            return Err(Refused::WrongChain(tx.tx.chain.clone()));
        }
        let did = tx.signer.did.clone();
        if let Op::CreateDid { key, next } = &tx.tx.op {
            if !did.is_inception_of(key, next) || tx.signer.fragment != "key-1" {
                return Err(invalid(
                    "create-did",
                    "signer is not the DID this key and commitment incept",
                ));
            }
            // Signature first: no refusal reason may be reachable with forged bytes.
            tx.verify(key).map_err(|_| Refused::BadSignature)?;
            if self.did(&did).is_some() {
                return Err(invalid("create-did", "the DID exists"));
            }
            if tx.tx.seq != 0 {
                return Err(invalid("create-did", "sequence number must be 0"));
            }
            let rec = DidRecord {
                key: key.clone(),
                key_index: 1,
                next: Some(*next),
                seq: 0,
                deactivated: false,
            };
            return Ok((did, rec));
        }
        let rec = self
            .did(&did)
            .ok_or_else(|| Refused::UnknownSigner(did.to_string()))?;
        if rec.deactivated {
            return Err(Refused::Deactivated(did.to_string()));
        }
        if tx.signer != rec.key_url(&did) {
            return Err(Refused::StaleKey(tx.signer.to_string()));
        }
        tx.verify(&rec.key).map_err(|_| Refused::BadSignature)?;
        if tx.tx.seq != rec.seq {
            return Err(Refused::BadSequence {
                got: tx.tx.seq,
                expected: rec.seq,
            });
        }
        Ok((did, rec))
    }

    fn require_governance(&self, did: &Did, op: &'static str) -> Result<(), Refused> {
        if self.governance.contains(did) {
            Ok(())
        } else {
            Err(Refused::Unauthorized {
                signer: did.to_string(),
                op,
            })
        }
    }

    fn issuer_accreditation(&self, issuer: &Did) -> Option<(Vec<String>, i64)> {
        decode_accreditation(self.kiosk.get(tag::ISSUER, issuer.as_str().as_bytes())?)
    }

    /// Mempool admission: would `tx` be authentic now or after the signer's earlier pending
    /// transactions? Checks the chain, the signer's current key, the signature and that the
    /// sequence number is not already used (a replay). The operation's own rules are checked when
    /// a block applies it.
    pub fn admit(&self, tx: &SignedTx) -> Result<(), Refused> {
        match self.authenticate(tx) {
            Err(Refused::BadSequence { got, expected }) if got > expected => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Validate `tx` at block time `now` and apply it; on refusal nothing changes.
    pub fn apply(&mut self, tx: &SignedTx, now: i64) -> Result<(), Refused> {
        let (did, mut rec) = self.authenticate(tx)?;
        let name = tx.tx.op.name();
        match &tx.tx.op {
            Op::CreateDid { key, next } => {
                self.create_did(&did, key, *next);
                return Ok(());
            }
            Op::RotateKey { key, next } => {
                let committed = rec
                    .next
                    .ok_or_else(|| invalid(name, "no next-key commitment"))?;
                if !committed.matches(key) {
                    return Err(invalid(
                        name,
                        "the key does not match the pre-rotation commitment",
                    ));
                }
                if next.matches(key) {
                    return Err(invalid(name, "the next commitment names the same key"));
                }
                rec.key = key.clone();
                rec.key_index = rec
                    .key_index
                    .checked_add(1)
                    .ok_or_else(|| invalid(name, "too many rotations"))?;
                rec.next = Some(*next);
                self.kiosk.put(
                    tag::KEY,
                    rec.key_url(&did).to_string().as_bytes(),
                    key.compressed(),
                );
            }
            Op::Deactivate => {
                if self.governance.contains(&did) {
                    return Err(invalid(
                        name,
                        "a governance member cannot deactivate itself",
                    ));
                }
                rec.deactivated = true;
                rec.next = None;
                // A deactivated issuer issues nothing more.
                if self
                    .kiosk
                    .get(tag::ISSUER, did.as_str().as_bytes())
                    .is_some()
                {
                    self.kiosk.put(
                        tag::ISSUER,
                        did.as_str().as_bytes(),
                        accreditation_value(&[], i64::MIN),
                    );
                }
            }
            Op::AccreditIssuer {
                issuer,
                doc_types,
                until,
            } => {
                self.require_governance(&did, name)?;
                let target = self
                    .did(issuer)
                    .ok_or_else(|| invalid(name, "the issuer DID does not exist"))?;
                if target.deactivated {
                    return Err(invalid(name, "the issuer DID is deactivated"));
                }
                if doc_types.is_empty() || doc_types.iter().any(|d| d.is_empty() || d.len() > 128) {
                    return Err(invalid(
                        name,
                        "docTypes must be 1..128 characters, at least one",
                    ));
                }
                if *until <= now {
                    return Err(invalid(name, "accreditation would already have ended"));
                }
                self.kiosk.put(
                    tag::ISSUER,
                    issuer.as_str().as_bytes(),
                    accreditation_value(doc_types, *until),
                );
            }
            Op::RevokeIssuer { issuer } => {
                self.require_governance(&did, name)?;
                if self
                    .kiosk
                    .get(tag::ISSUER, issuer.as_str().as_bytes())
                    .is_none()
                {
                    return Err(invalid(name, "the issuer is not accredited"));
                }
                self.kiosk.put(
                    tag::ISSUER,
                    issuer.as_str().as_bytes(),
                    accreditation_value(&[], i64::MIN),
                );
            }
            Op::AccreditKiosk {
                kiosk,
                grants,
                purpose,
                not_before,
                not_after,
                statement,
            } => {
                self.require_governance(&did, name)?;
                let target = self
                    .did(kiosk)
                    .ok_or_else(|| invalid(name, "the kiosk DID does not exist"))?;
                if target.deactivated {
                    return Err(invalid(name, "the kiosk DID is deactivated"));
                }
                if grants.is_empty()
                    || purpose.is_empty()
                    || not_after <= not_before
                    || *not_after <= now
                {
                    return Err(invalid(
                        name,
                        "needs grants, a purpose and a window that has not ended",
                    ));
                }
                // The statement cards check must say exactly what the chain records, for the
                // kiosk's current key, signed by this governance member.
                let signed = KioskAccreditation::verify(statement, &rec.key)
                    .map_err(|e| invalid(name, format!("statement: {e}")))?;
                let expected = KioskAccreditation {
                    chain: self.chain_id.clone(),
                    kiosk: kiosk.clone(),
                    key: target.key.clone(),
                    grants: grants.clone(),
                    purpose: purpose.clone(),
                    not_before: *not_before,
                    not_after: *not_after,
                };
                if signed != expected {
                    return Err(invalid(
                        name,
                        "the statement differs from the transaction or names another key",
                    ));
                }
                self.kiosk.put(
                    tag::KIOSK,
                    kiosk.as_str().as_bytes(),
                    kiosk_value(
                        &target.key,
                        grants,
                        purpose,
                        *not_before,
                        *not_after,
                        statement,
                    ),
                );
            }
            Op::CreateStatusList { list, bits, size } => {
                let (_, until) =
                    self.issuer_accreditation(&did)
                        .ok_or_else(|| Refused::Unauthorized {
                            signer: did.to_string(),
                            op: name,
                        })?;
                if until <= now {
                    return Err(Refused::Unauthorized {
                        signer: did.to_string(),
                        op: name,
                    });
                }
                if list.is_empty()
                    || list.len() > 64
                    || !list
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(invalid(name, "list name must be 1..64 of [A-Za-z0-9_-]"));
                }
                let bits = Bits::new(u64::from(*bits)).map_err(|e| invalid(name, e.to_string()))?;
                if *size == 0 || *size > MAX_STATUS_ENTRIES {
                    return Err(invalid(name, "size must be 1..=16777216 entries"));
                }
                let uri = status_uri(&did, list);
                if self.lists.contains_key(&uri) {
                    return Err(invalid(name, "the list exists"));
                }
                let l = StatusList::new(bits, *size).map_err(|e| invalid(name, e.to_string()))?;
                let meta = ListInfo {
                    // Numbered in creation order: sync deltas name lists by this short id.
                    id: self.lists.len() as u64,
                    bits,
                    size: *size,
                };
                self.kiosk
                    .put(tag::STATUS_META, uri.as_bytes(), meta.encode());
                for (i, chunk) in l.as_bytes().chunks(STATUS_CHUNK).enumerate() {
                    self.kiosk
                        .put(tag::STATUS_CHUNK, &chunk_key(&uri, i), chunk.to_vec());
                }
                self.lists.insert(uri, Arc::new((meta, l)));
            }
            Op::UpdateStatus { list, delta } => {
                let uri = status_uri(&did, list);
                let (meta, current) = self
                    .lists
                    .get(&uri)
                    .map(|e| (&e.0, &e.1))
                    .ok_or_else(|| invalid(name, "no such list for this issuer"))?;
                if delta.changes().is_empty() {
                    return Err(invalid(name, "empty delta"));
                }
                for (idx, value) in delta.changes() {
                    if *idx >= meta.size {
                        return Err(invalid(name, format!("index {idx} outside the list")));
                    }
                    if Status::from_value(*value).is_none() {
                        return Err(invalid(name, format!("status value {value} undefined")));
                    }
                    // Revocation is final.
                    if current.get(*idx) == Some(Status::Invalid.value())
                        && *value != Status::Invalid.value()
                    {
                        return Err(invalid(name, format!("entry {idx} is revoked for good")));
                    }
                }
                let mut updated = current.clone();
                updated
                    .apply(delta)
                    .map_err(|e| invalid(name, e.to_string()))?;
                let mut chunks: Vec<usize> = delta
                    .changes()
                    .iter()
                    .filter_map(|(i, _)| {
                        usize::try_from(*i / (8 / u64::from(meta.bits.get()))).ok()
                    })
                    .map(|byte| byte / STATUS_CHUNK)
                    .collect();
                chunks.dedup();
                for c in chunks {
                    let start = c.saturating_mul(STATUS_CHUNK);
                    let end = start
                        .saturating_add(STATUS_CHUNK)
                        .min(updated.as_bytes().len());
                    let bytes = updated
                        .as_bytes()
                        .get(start..end)
                        .unwrap_or_default()
                        .to_vec();
                    self.kiosk
                        .put(tag::STATUS_CHUNK, &chunk_key(&uri, c), bytes);
                }
                let meta = *meta;
                self.lists.insert(uri, Arc::new((meta, updated)));
            }
            Op::SetValidators {
                validators,
                approvals,
            } => {
                self.require_governance(&did, name)?;
                if validators.is_empty() || validators.len() > super::cert::MAX_VALIDATORS {
                    return Err(invalid(name, "needs 1..=1024 validators"));
                }
                let mut sorted: Vec<_> = validators.iter().map(EcPublicKey::compressed).collect();
                sorted.sort();
                if sorted.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
                    return Err(invalid(name, "a validator appears twice"));
                }
                let mut approvers = vec![did.clone()];
                let payload = tx.tx.op.approval_payload(&self.chain_id, self.set_epoch());
                for a in approvals {
                    let (member, sign1) =
                        tx::decode_approval(a).map_err(|e| invalid(name, e.to_string()))?;
                    self.require_governance(&member.did, name)?;
                    let mrec = self
                        .did(&member.did)
                        .ok_or_else(|| Refused::UnknownSigner(member.did.to_string()))?;
                    if member != mrec.key_url(&member.did) {
                        return Err(Refused::StaleKey(member.to_string()));
                    }
                    if sign1.payload.as_deref() != Some(payload.as_slice()) {
                        return Err(invalid(name, "an approval is for another operation"));
                    }
                    cose::verify_sign1(&sign1, &mrec.key, Domain::GovernanceApproval, None)
                        .map_err(|_| Refused::BadSignature)?;
                    if approvers.contains(&member.did) {
                        return Err(invalid(name, "a member approved twice"));
                    }
                    approvers.push(member.did);
                }
                if approvers.len() < self.threshold {
                    return Err(invalid(
                        name,
                        format!(
                            "{} of {} governance members, {} needed",
                            approvers.len(),
                            self.governance.len(),
                            self.threshold
                        ),
                    ));
                }
                // Takes effect at the end of this epoch (State::end_block).
                self.public
                    .put(tag::CHAIN, PENDING_VALIDATORS, encode_key_list(validators));
            }
            Op::RegisterElection {
                id,
                eligibility,
                opens,
                closes,
            } => {
                self.require_governance(&did, name)?;
                if id.is_empty() || id.len() > 64 || closes <= opens || *closes <= now {
                    return Err(invalid(name, "needs an id and a window that has not ended"));
                }
                if self.kiosk.get(tag::ELECTION, id.as_bytes()).is_some() {
                    return Err(invalid(name, "the election exists"));
                }
                let value = cbor::encode(&text_map(vec![
                    ("eligibility", tx::eligibility_value(eligibility)),
                    ("opens", Value::Integer((*opens).into())),
                    ("closes", Value::Integer((*closes).into())),
                ]));
                self.kiosk.put(tag::ELECTION, id.as_bytes(), value);
            }
        }
        rec.seq = rec.seq.saturating_add(1);
        self.public
            .put(tag::DID, did.as_str().as_bytes(), rec.encode());
        Ok(())
    }

    /// The first consensus epoch of the current validator set (what governance approvals name,
    /// so an approval cannot be replayed against a later set).
    pub fn set_epoch(&self) -> u64 {
        self.chain_record().map_or(0, |r| r.epoch)
    }

    /// The current chain record.
    pub fn chain_record(&self) -> Option<ChainRecord> {
        self.kiosk
            .get(tag::CHAIN, b"validators")
            .and_then(|b| ChainRecord::decode(b).ok())
    }

    /// Blocks per consensus epoch.
    pub fn epoch_length(&self) -> u64 {
        self.epoch_length
    }
}

/// Public-tree key of the validator set approved for the next epoch.
const PENDING_VALIDATORS: &[u8] = b"pending-validators";

fn encode_key_list(keys: &[EcPublicKey]) -> Vec<u8> {
    cbor::encode(&Value::Array(
        keys.iter().map(|k| Value::Bytes(k.compressed())).collect(),
    ))
}

fn decode_key_list(bytes: &[u8]) -> Option<Vec<EcPublicKey>> {
    const W: &str = "pending validators";
    let v = cbor::decode(W, bytes, cbor::Limits::new(1 << 20)).ok()?;
    access::array(W, &v)
        .ok()?
        .iter()
        .map(|k| {
            access::bytes(W, k)
                .ok()
                .and_then(|b| EcPublicKey::from_sec1(b).ok())
        })
        .collect()
}

fn accreditation_value(doc_types: &[String], until: i64) -> Vec<u8> {
    // Positional, to keep kiosk bundles small: [until, [docType...]].
    cbor::encode(&Value::Array(vec![
        Value::Integer(until.into()),
        Value::Array(doc_types.iter().map(|d| text(d)).collect()),
    ]))
}

/// Decode an issuer accreditation record: `(docTypes, until)`.
pub fn decode_accreditation(bytes: &[u8]) -> Option<(Vec<String>, i64)> {
    let v = cbor::decode("accreditation", bytes, cbor::Limits::new(64 * 1024)).ok()?;
    match v.as_array()?.as_slice() {
        [until, types] => Some((
            types
                .as_array()?
                .iter()
                .filter_map(|t| t.as_text().map(str::to_owned))
                .collect(),
            until.as_integer().and_then(|i| i64::try_from(i).ok())?,
        )),
        _ => None,
    }
}

/// A status list's metadata record: `[id, bits, size]` (the issuer is in the list's URI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListInfo {
    /// Chain-assigned number, in creation order; sync bundles name lists by it.
    pub id: u64,
    /// Bits per entry.
    pub bits: Bits,
    /// Entries.
    pub size: u64,
}

impl ListInfo {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(vec![
            Value::Integer(self.id.into()),
            Value::Integer(self.bits.get().into()),
            Value::Integer(self.size.into()),
        ]))
    }

    /// Decode.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let v = cbor::decode("status meta", bytes, cbor::Limits::new(256)).ok()?;
        let uint = |v: &Value| v.as_integer().and_then(|i| u64::try_from(i).ok());
        match v.as_array()?.as_slice() {
            [id, bits, size] => Some(Self {
                id: uint(id)?,
                bits: Bits::new(uint(bits)?).ok()?,
                size: uint(size)?,
            }),
            _ => None,
        }
    }
}

fn kiosk_value(
    key: &EcPublicKey,
    grants: &ElementGrants,
    purpose: &str,
    not_before: i64,
    not_after: i64,
    statement: &[u8],
) -> Vec<u8> {
    cbor::encode(&text_map(vec![
        ("key", Value::Bytes(key.compressed())),
        ("grants", tx::grants_value(grants)),
        ("purpose", text(purpose)),
        ("not_before", Value::Integer(not_before.into())),
        ("not_after", Value::Integer(not_after.into())),
        ("statement", Value::Bytes(statement.to_vec())),
    ]))
}

/// The inverse of [`chunk_key`]: the list URI and chunk number.
pub fn split_chunk_key(key: &[u8]) -> Option<(String, u64)> {
    let (uri, n) = key.split_at_checked(key.len().checked_sub(9)?)?;
    let (zero, n) = n.split_first()?;
    if *zero != 0 {
        return None;
    }
    Some((
        String::from_utf8(uri.to_vec()).ok()?,
        u64::from_be_bytes(n.try_into().ok()?),
    ))
}

/// Reassemble every status list of a kiosk tree from its metadata and chunks, by URI.
pub fn status_lists(tree: &Tree) -> Result<BTreeMap<String, (ListInfo, StatusList)>, &'static str> {
    let mut chunks: BTreeMap<String, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    let mut metas = Vec::new();
    for e in tree.entries() {
        match e.tag.as_slice() {
            tag::STATUS_META => {
                let uri = String::from_utf8(e.key.clone()).map_err(|_| "list URI")?;
                metas.push((uri, ListInfo::decode(&e.value).ok_or("list metadata")?));
            }
            tag::STATUS_CHUNK => {
                let (uri, n) = split_chunk_key(&e.key).ok_or("chunk key")?;
                chunks.entry(uri).or_default().insert(n, e.value.clone());
            }
            _ => {}
        }
    }
    Ok(metas
        .into_iter()
        .map(|(uri, info)| {
            let bytes: Vec<u8> = chunks
                .remove(&uri)
                .unwrap_or_default()
                .into_values()
                .flatten()
                .collect();
            (uri, (info, StatusList::from_bytes(info.bits, bytes)))
        })
        .collect())
}

/// The key of chunk `chunk` of the list at `uri`: URI || 0x00 || chunk number (u64 BE).
pub fn chunk_key(uri: &str, chunk: usize) -> Vec<u8> {
    let mut k = uri.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&(chunk as u64).to_be_bytes());
    k
}
