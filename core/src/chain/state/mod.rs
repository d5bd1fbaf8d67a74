//! Registry state and the authorization rules of every operation (`specs/chain-transactions.md`).
//!
//! Pure and deterministic: `apply` takes the state, a signed transaction and the block time, and
//! either changes the state or refuses with a [`Refused`] reason, changing nothing. Two
//! authenticated trees hold the state ([`super::smt`], tables in [`super::table`]):
//!
//! - the **kiosk tree**, which kiosks keep whole: the keys of the DIDs kiosks must know
//!   (governance, accredited issuers and kiosks, with their whole key history), accreditations,
//!   status lists, elections and the chain record. Nothing in it grows without governance or an
//!   accredited issuer acting, so free DIDs cannot grow what every kiosk syncs;
//! - the **public tree**: every DID's record and key history, and the pending validator set.
//!
//! The modules: [`tree`] (one authenticated table set), [`records`] (the encoded values),
//! [`lists`] (status lists in chunks), and the per-operation rules in `ops`.

mod ops;

pub mod lists;
pub mod records;
pub mod tree;

use std::sync::Arc;

use ciborium::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::smt::Hash;
use super::table::Table;
use super::tx::{Op, SignedTx};
use crate::cbor::{self, text, text_map};
use crate::crypto::EcPublicKey;
use crate::did::{Did, KeyCommitment};
use crate::status::StatusList;

pub use lists::{
    ListError, MAX_STATUS_ENTRIES, STATUS_CHUNK, chunk_key, split_chunk_key, status_lists,
};
pub use records::{ChainRecord, DidRecord, ListInfo, decode_accreditation};
use records::{PENDING_VALIDATORS, decode_key_list, encode_key_list};
pub use tree::{Entry, Tree};

/// Key of the chain record in the kiosk tree's [`Table::Chain`].
pub const CHAIN_RECORD: &[u8] = b"validators";

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
            s.create_did(&did, key, *next, true);
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
        s.kiosk = Tree::from_entries(kiosk);
        s.public = Tree::from_entries(public);
        s.lists = status_lists(&s.kiosk)
            .map_err(|e| invalid("restore", e.to_string()))?
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
            .get(Table::Did, did.as_str().as_bytes())
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

    /// Create a DID; `anchored` DIDs (governance) have their keys in the kiosk tree from the
    /// start.
    fn create_did(&mut self, did: &Did, key: &EcPublicKey, next: KeyCommitment, anchored: bool) {
        let rec = DidRecord {
            key: key.clone(),
            key_index: 1,
            next: Some(next),
            seq: 0,
            deactivated: false,
        };
        self.public
            .put(Table::Did, did.as_str().as_bytes(), rec.encode());
        let url = did.key_url(1).to_string();
        self.public
            .put(Table::Key, url.as_bytes(), key.compressed());
        if anchored {
            self.kiosk.put(Table::Key, url.as_bytes(), key.compressed());
        }
    }

    /// Whether kiosks know `did`'s keys: its first key is in the kiosk tree.
    fn is_anchored(&self, did: &Did) -> bool {
        self.kiosk
            .get(Table::Key, did.key_url(1).to_string().as_bytes())
            .is_some()
    }

    /// Give kiosks `did`'s whole key history (copied from the public tree) when it becomes a
    /// party they must know: an accredited issuer or kiosk. Once anchored, later rotations
    /// reach the kiosk tree too ([`State::record_key`]).
    fn anchor(&mut self, did: &Did, rec: &DidRecord) {
        if self.is_anchored(did) {
            return;
        }
        for index in 1..=rec.key_index {
            let url = did.key_url(index).to_string();
            if let Some(key) = self.public.get(Table::Key, url.as_bytes()) {
                let key = key.to_vec();
                self.kiosk.put(Table::Key, url.as_bytes(), key);
            }
        }
    }

    /// Record `did`'s current key (after a rotation) in its history, and for kiosks if they
    /// know the DID.
    fn record_key(&mut self, did: &Did, rec: &DidRecord) {
        let url = rec.key_url(did).to_string();
        self.public
            .put(Table::Key, url.as_bytes(), rec.key.compressed());
        if self.is_anchored(did) {
            self.kiosk
                .put(Table::Key, url.as_bytes(), rec.key.compressed());
        }
    }

    /// Mark `did`'s key `url` retired at block time `at` (it rotated away from it), in both
    /// trees where it is recorded.
    fn retire_key(&mut self, url: &str, key: &EcPublicKey, at: i64) {
        let value = records::key_value(key, Some(at));
        if self.public.get(Table::Key, url.as_bytes()).is_some() {
            self.public.put(Table::Key, url.as_bytes(), value.clone());
        }
        if self.kiosk.get(Table::Key, url.as_bytes()).is_some() {
            self.kiosk.put(Table::Key, url.as_bytes(), value);
        }
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
        self.kiosk.put(Table::Chain, CHAIN_RECORD, value);
    }

    /// The validator set waiting for the next epoch boundary, if a change was approved.
    pub fn pending_validators(&self) -> Option<Vec<EcPublicKey>> {
        let bytes = self.public.get(Table::Chain, PENDING_VALIDATORS)?;
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
                .put(Table::Chain, PENDING_VALIDATORS, encode_key_list(&[]));
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
        decode_accreditation(self.kiosk.get(Table::Issuer, issuer.as_str().as_bytes())?)
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
        match &tx.tx.op {
            Op::CreateDid { key, next } => {
                self.create_did(&did, key, *next, false);
                return Ok(());
            }
            Op::RotateKey { key, next } => {
                self.rotate_key(&did, &mut rec, key, next, now)?;
                if self.governance.contains(&did) {
                    // Cards follow the governance set from these (card-applet.md §3.4).
                    let url = rec.key_url(&did).to_string();
                    self.kiosk
                        .put(Table::Rotation, url.as_bytes(), tx.bytes().to_vec());
                }
            }
            Op::Deactivate => self.deactivate(&did, &mut rec)?,
            Op::AccreditIssuer {
                issuer,
                doc_types,
                until,
            } => self.accredit_issuer(&did, issuer, doc_types, *until, now)?,
            Op::RevokeIssuer { issuer } => self.revoke_issuer(&did, issuer)?,
            Op::AccreditKiosk {
                kiosk,
                grants,
                purpose,
                not_before,
                not_after,
                statement,
            } => self.accredit_kiosk(
                &did,
                &rec,
                kiosk,
                grants,
                purpose,
                (*not_before, *not_after),
                statement,
                now,
            )?,
            Op::CreateStatusList { list, bits, size } => {
                self.create_status_list(&did, list, *bits, *size, now)?;
            }
            Op::UpdateStatus { list, delta } => self.update_status(&did, list, delta)?,
            Op::SetValidators {
                validators,
                approvals,
            } => self.set_validators(&did, tx, validators, approvals)?,
            Op::RegisterElection {
                id,
                eligibility,
                opens,
                closes,
                reauth,
            } => self.register_election(&did, id, eligibility, (*opens, *closes), *reauth, now)?,
        }
        rec.seq = rec.seq.saturating_add(1);
        self.public
            .put(Table::Did, did.as_str().as_bytes(), rec.encode());
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
            .get(Table::Chain, CHAIN_RECORD)
            .and_then(|b| ChainRecord::decode(b).ok())
    }

    /// Blocks per consensus epoch.
    pub fn epoch_length(&self) -> u64 {
        self.epoch_length
    }
}
