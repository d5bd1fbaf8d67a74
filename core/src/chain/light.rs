//! The kiosk's light client: a pinned genesis, a certified header, and the kiosk subtree it
//! commits — advanced by sync bundles, turned into the verification engine's trust snapshot.
//!
//! A bundle is a checkpoint, not a replay: the latest directly finalized header and its
//! certificate, the certified validator-set changes since the kiosk's epoch, and what changed in
//! the kiosk tree since the kiosk's height — or since genesis on a first sync, since every kiosk
//! recomputes the genesis state itself. Changed entries travel whole, except status-list chunks:
//! those travel as status changes `(list id, gap-encoded index/value pairs)`, a few bytes each,
//! which the kiosk applies to its own chunks (synthesizing the zero chunks of new lists). The
//! kiosk adopts the result only if the recomputed root equals the certified header's kiosk
//! sub-root. Size and cost grow with the changes, never with the number of blocks in between.

use std::collections::BTreeMap;

use ciborium::Value;
use thiserror::Error;

use super::block::Header;
use super::cert::{Finalization, ValidatorSet};
use super::smt::{self, Hash};
use super::state::{
    ChainRecord, Entry, Genesis, ListInfo, STATUS_CHUNK, State, Tree, chunk_key,
    decode_accreditation, epoch_of, is_boundary, split_chunk_key, status_lists, tag,
};
use crate::cbor::{self, CborForm, Limits, access, text_map};
use crate::crypto::EcPublicKey;
use crate::mdoc::TrustAnchor;
use crate::status::{StatusDelta, StatusList};
use crate::timestamp::Timestamp;
use crate::verify::{Accreditation, TrustSnapshot};

/// Largest bundle accepted.
pub const MAX_BUNDLE_LEN: usize = 64 * 1024 * 1024;
/// Most list bytes a bundle may make a kiosk synthesize for new lists. Zero chunks are built
/// before the sub-root check, so this bounds what a replayed header with forged list entries
/// can make a kiosk allocate.
pub const MAX_SYNTHESIZED_BYTES: usize = 256 * 1024 * 1024;

/// Why a bundle was refused. The kiosk keeps its previous state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncError {
    /// Bytes that are not a bundle.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// A bundle of another chain.
    #[error("bundle is for chain {0:?}")]
    ForeignChain(String),
    /// A certificate that does not verify against the kiosk's validator set.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// The certificate is not for this header.
    #[error("certificate is for another block")]
    CertificateMismatch,
    /// A header older than the kiosk's.
    #[error("rollback from height {have} to {got}")]
    Rollback {
        /// The kiosk's height.
        have: u64,
        /// The bundle's.
        got: u64,
    },
    /// Two certified headers at one height: both kept as evidence.
    #[error("two certified blocks at height {0}")]
    Equivocation(u64),
    /// A delta relative to another height than the kiosk's.
    #[error("delta is relative to height {got}, the kiosk is at {have}")]
    WrongBase {
        /// The kiosk's height.
        have: u64,
        /// The delta's base.
        got: u64,
    },
    /// The entries do not reproduce the certified kiosk sub-root.
    #[error("kiosk sub-root does not match the certified header")]
    SubRootMismatch,
    /// A validator-set change that does not follow the kiosk's epoch or proof.
    #[error("validator-set change refused: {0}")]
    EpochChange(String),
}

fn malformed(e: impl std::fmt::Display) -> SyncError {
    SyncError::Malformed(e.to_string())
}

/// A certified move to the next validator set: the boundary header (certified by the old set)
/// and the chain record its kiosk tree holds, with the proof.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochChange {
    /// The header whose state starts the new epoch.
    pub header: Header,
    /// Its finalization by the old set.
    pub finalization: Vec<u8>,
    /// The chain record (`chain`/`validators` entry) in that header's kiosk tree.
    pub record: Vec<u8>,
    /// Its inclusion proof against `header.kiosk_root`.
    pub proof: smt::Proof,
}

impl EpochChange {
    fn to_value(&self) -> Value {
        text_map(vec![
            ("header", self.header.to_value()),
            ("finalization", Value::Bytes(self.finalization.clone())),
            ("record", Value::Bytes(self.record.clone())),
            ("proof", proof_value(&self.proof)),
        ])
    }

    fn from_value(v: &Value) -> crate::Result<Self> {
        const W: &str = "epoch change";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["header", "finalization", "record", "proof"])?;
        Ok(Self {
            header: Header::from_value(access::req(W, m, "header")?)?,
            finalization: access::bytes(W, access::req(W, m, "finalization")?)?.to_vec(),
            record: access::bytes(W, access::req(W, m, "record")?)?.to_vec(),
            proof: proof_from(access::req(W, m, "proof")?)?,
        })
    }

    /// CBOR encoding (the same map a bundle's `epochs` array holds); a node stores it when it
    /// commits the boundary block.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    /// Decode a stored change.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        Self::from_value(&cbor::decode(
            "epoch change",
            bytes,
            Limits::new(MAX_BUNDLE_LEN),
        )?)
    }

    /// The change a boundary block made, from the state after it: `None` unless the block's
    /// state names a validator set that differs from `before`'s.
    pub fn of_block(
        header: &Header,
        finalization: &[u8],
        before: &State,
        after: &State,
    ) -> Option<Self> {
        let record = after.kiosk_tree().get(tag::CHAIN, b"validators")?;
        if before.kiosk_tree().get(tag::CHAIN, b"validators") == Some(record) {
            return None;
        }
        Some(Self {
            header: header.clone(),
            finalization: finalization.to_vec(),
            record: record.to_vec(),
            proof: after.kiosk_tree().prove(tag::CHAIN, b"validators"),
        })
    }
}

/// A sync bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncBundle {
    /// The latest directly finalized header.
    pub header: Header,
    /// Its finalization certificate.
    pub finalization: Vec<u8>,
    /// Validator-set changes since the kiosk's epoch, oldest first.
    pub epochs: Vec<EpochChange>,
    /// Height the changes are relative to; `None` for genesis (a first sync).
    pub since: Option<u64>,
    /// Changed kiosk-tree entries other than status-list chunks.
    pub entries: Vec<Entry>,
    /// Status changes by list id.
    pub status: Vec<(u64, StatusDelta)>,
}

fn proof_value(p: &smt::Proof) -> Value {
    text_map(vec![
        (
            "siblings",
            Value::Array(
                p.siblings
                    .iter()
                    .map(|s| Value::Bytes(s.to_vec()))
                    .collect(),
            ),
        ),
        (
            "leaf",
            p.leaf.map_or(Value::Null, |(k, v)| {
                Value::Array(vec![Value::Bytes(k.to_vec()), Value::Bytes(v.to_vec())])
            }),
        ),
    ])
}

/// Entries grouped by table: `[[tag, [[key, value]...]]...]`.
fn entries_value<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Value {
    let mut groups: BTreeMap<&[u8], Vec<Value>> = BTreeMap::new();
    for e in entries {
        groups
            .entry(e.tag.as_slice())
            .or_default()
            .push(Value::Array(vec![
                Value::Bytes(e.key.clone()),
                Value::Bytes(e.value.clone()),
            ]));
    }
    Value::Array(
        groups
            .into_iter()
            .map(|(t, kv)| Value::Array(vec![Value::Bytes(t.to_vec()), Value::Array(kv)]))
            .collect(),
    )
}

fn entries_from(what: &'static str, v: &Value) -> crate::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for group in access::array(what, v)? {
        let [t, kvs] = access::array(what, group)? else {
            return Err(crate::Error::malformed(
                what,
                "entry group must be [tag, entries]",
            ));
        };
        let t = access::bytes(what, t)?;
        for kv in access::array(what, kvs)? {
            let [k, v] = access::array(what, kv)? else {
                return Err(crate::Error::malformed(what, "entry must be [key, value]"));
            };
            entries.push(Entry {
                tag: t.to_vec(),
                key: access::bytes(what, k)?.to_vec(),
                value: access::bytes(what, v)?.to_vec(),
            });
        }
    }
    Ok(entries)
}

fn hash32(what: &'static str, v: &Value) -> crate::Result<Hash> {
    access::bytes(what, v)?
        .try_into()
        .map_err(|_| crate::Error::malformed(what, "expected 32 bytes"))
}

fn proof_from(v: &Value) -> crate::Result<smt::Proof> {
    const W: &str = "proof";
    let m = access::map(W, v)?;
    let siblings = access::array(W, access::req(W, m, "siblings")?)?;
    if siblings.len() > smt::MAX_PROOF_DEPTH {
        return Err(crate::Error::malformed(W, "too deep"));
    }
    Ok(smt::Proof {
        siblings: siblings
            .iter()
            .map(|s| hash32(W, s))
            .collect::<crate::Result<_>>()?,
        leaf: match access::req(W, m, "leaf")? {
            Value::Null => None,
            l => match access::array(W, l)? {
                [k, v] => Some((hash32(W, k)?, hash32(W, v)?)),
                _ => return Err(crate::Error::malformed(W, "leaf")),
            },
        },
    })
}

impl SyncBundle {
    /// CBOR encoding. Entries are grouped by table (`[[tag, [[key, value]...]]...]`) and the
    /// status changes are one byte string of LEB128 varints: per list `id gap, count`, then per
    /// change `index gap, value` — about four bytes a change.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("header", self.header.to_value()),
            ("finalization", Value::Bytes(self.finalization.clone())),
            (
                "epochs",
                Value::Array(self.epochs.iter().map(EpochChange::to_value).collect()),
            ),
            (
                "since",
                self.since.map_or(Value::Null, |h| Value::Integer(h.into())),
            ),
            ("entries", entries_value(&self.entries)),
            ("status", Value::Bytes(encode_status(&self.status))),
        ]))
    }

    /// Decode within [`MAX_BUNDLE_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Self, SyncError> {
        Self::decode_inner(bytes).map_err(malformed)
    }

    fn decode_inner(bytes: &[u8]) -> crate::Result<Self> {
        const W: &str = "sync bundle";
        let v = cbor::decode(W, bytes, Limits::new(MAX_BUNDLE_LEN))?;
        let m = access::map(W, &v)?;
        access::only_keys(
            W,
            m,
            &[
                "header",
                "finalization",
                "epochs",
                "since",
                "entries",
                "status",
            ],
        )?;
        let epochs = access::array(W, access::req(W, m, "epochs")?)?
            .iter()
            .map(EpochChange::from_value)
            .collect::<crate::Result<_>>()?;
        let entries = entries_from(W, access::req(W, m, "entries")?)?;
        Ok(Self {
            header: Header::from_value(access::req(W, m, "header")?)?,
            finalization: access::bytes(W, access::req(W, m, "finalization")?)?.to_vec(),
            epochs,
            since: match access::req(W, m, "since")? {
                Value::Null => None,
                h => Some(access::uint(W, h)?),
            },
            entries,
            status: decode_status(access::bytes(W, access::req(W, m, "status")?)?)?,
        })
    }

    /// Server side: the bundle taking a kiosk from `base` (its tree at height `since`, or the
    /// genesis tree) to `current`, certified by `finalization` over `header`.
    pub fn build(
        header: Header,
        finalization: Vec<u8>,
        epochs: Vec<EpochChange>,
        since: Option<u64>,
        base: &Tree,
        current: &Tree,
    ) -> Self {
        let mut entries = Vec::new();
        let mut chunks: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for e in current.changed_since(base) {
            match (e.tag.as_slice(), split_chunk_key(&e.key)) {
                (tag::STATUS_CHUNK, Some((uri, n))) => {
                    chunks.entry(uri).or_default().push((n, e.value))
                }
                _ => entries.push(e),
            }
        }
        let mut status = Vec::new();
        for (uri, changed) in chunks {
            let Some(meta) = current
                .get(tag::STATUS_META, uri.as_bytes())
                .and_then(ListInfo::decode)
            else {
                continue;
            };
            let per_byte = u64::from(8 / meta.bits.get());
            let mut changes = Vec::new();
            for (n, new) in changed {
                let old = base
                    .get(
                        tag::STATUS_CHUNK,
                        &chunk_key(&uri, usize::try_from(n).unwrap_or(usize::MAX)),
                    )
                    .map(<[u8]>::to_vec)
                    .unwrap_or_else(|| vec![0; new.len()]);
                let (old, new) = (
                    StatusList::from_bytes(meta.bits, old),
                    StatusList::from_bytes(meta.bits, new),
                );
                let first = n
                    .saturating_mul(STATUS_CHUNK as u64)
                    .saturating_mul(per_byte);
                for local in 0..new.len() {
                    if new.get(local) != old.get(local) {
                        changes.push((first.saturating_add(local), new.get(local).unwrap_or(0)));
                    }
                }
            }
            status.push((meta.id, StatusDelta::from_changes(changes)));
        }
        Self {
            header,
            finalization,
            epochs,
            since,
            entries,
            status,
        }
    }
}

/// What a kiosk holds: the pinned genesis, its current certified header, validator set, and the
/// kiosk subtree.
#[derive(Debug, Clone)]
pub struct KioskSnapshot {
    chain_id: String,
    genesis_digest: Hash,
    epoch_length: u64,
    epoch: u64,
    validators: ValidatorSet,
    header: Header,
    tree: Tree,
    genesis_tree: Tree,
    lists: BTreeMap<u64, (String, ListInfo)>,
    evidence: Vec<(Header, Header)>,
}

impl KioskSnapshot {
    /// Start from `genesis.json`'s content: the kiosk recomputes the genesis state itself.
    pub fn from_genesis(genesis: &Genesis) -> Result<Self, SyncError> {
        let state = State::genesis(genesis).map_err(|e| malformed(e.to_string()))?;
        let header = Header::genesis(&state, genesis.time);
        let validators = ValidatorSet::new(genesis.chain_id.as_bytes(), genesis.validators.clone())
            .map_err(|e| SyncError::Certificate(e.to_string()))?;
        Ok(Self {
            chain_id: genesis.chain_id.clone(),
            genesis_digest: header.digest(),
            epoch_length: genesis.epoch_length,
            epoch: 0,
            validators,
            header,
            tree: state.kiosk_tree().clone(),
            genesis_tree: state.kiosk_tree().clone(),
            lists: BTreeMap::new(),
            evidence: Vec::new(),
        })
    }

    /// The certified header the kiosk's state is at.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The digest of the pinned genesis header.
    pub fn genesis_digest(&self) -> Hash {
        self.genesis_digest
    }

    /// The first consensus epoch of the validator set the kiosk follows.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The validator set the kiosk follows.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Conflicting certified headers seen (kept as evidence of equivocation).
    pub fn evidence(&self) -> &[(Header, Header)] {
        &self.evidence
    }

    /// The kiosk subtree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    fn check_certificate(
        &self,
        set: &ValidatorSet,
        epoch: u64,
        header: &Header,
        cert: &[u8],
    ) -> Result<(), SyncError> {
        let fin = Finalization::decode(cert).map_err(|e| SyncError::Certificate(e.to_string()))?;
        if fin.proposal.payload != header.digest() {
            return Err(SyncError::CertificateMismatch);
        }
        if fin.proposal.epoch != header.epoch {
            return Err(SyncError::Certificate(format!(
                "signed in epoch {}, the header is of epoch {}",
                fin.proposal.epoch, header.epoch
            )));
        }
        if header.epoch != epoch_of(header.height, self.epoch_length) {
            return Err(SyncError::Certificate(format!(
                "header {} claims epoch {}",
                header.height, header.epoch
            )));
        }
        // A set signs from its first epoch on, until a certified change names the next one.
        if header.epoch < epoch {
            return Err(SyncError::Certificate(format!(
                "header of epoch {} predates the validator set of epoch {epoch}",
                header.epoch
            )));
        }
        fin.verify(set)
            .map_err(|e| SyncError::Certificate(e.to_string()))
    }

    /// Verify and apply a bundle; on any failure the snapshot is unchanged.
    pub fn apply(&mut self, bundle: &SyncBundle) -> Result<(), SyncError> {
        if bundle.header.chain != self.chain_id {
            return Err(SyncError::ForeignChain(bundle.header.chain.clone()));
        }
        if bundle.epochs.is_empty()
            && bundle.header.digest() == self.header.digest()
            && bundle.entries.is_empty()
            && bundle.status.is_empty()
        {
            // Nothing certified since the last sync (possibly the boundary block whose new set
            // the kiosk already follows): nothing to check or change.
            return Ok(());
        }
        // Follow certified validator-set changes first.
        let mut epoch = self.epoch;
        let mut set = self.validators.clone();
        // The set, its epoch and the header of the last change followed: the newest certified
        // block may be that boundary itself, certified by the set before it.
        let mut before_last: Option<(ValidatorSet, u64, Hash)> = None;
        for change in &bundle.epochs {
            if change.header.chain != self.chain_id {
                return Err(SyncError::ForeignChain(change.header.chain.clone()));
            }
            self.check_certificate(&set, epoch, &change.header, &change.finalization)?;
            if !is_boundary(change.header.height, self.epoch_length) {
                return Err(SyncError::EpochChange(format!(
                    "block {} is not the last of its epoch",
                    change.header.height
                )));
            }
            let path = smt::key_path(tag::CHAIN, b"validators");
            smt::verify(
                &change.header.kiosk_root,
                &path,
                Some(&smt::value_hash(&change.record)),
                &change.proof,
            )
            .map_err(|e| SyncError::EpochChange(e.to_string()))?;
            let ChainRecord {
                epoch: next_epoch,
                validators: keys,
                epoch_length,
            } = ChainRecord::decode(&change.record)
                .map_err(|e| SyncError::EpochChange(e.to_string()))?;
            if next_epoch != change.header.epoch.saturating_add(1)
                || epoch_length != self.epoch_length
            {
                return Err(SyncError::EpochChange(format!(
                    "boundary of epoch {} names a set for epoch {next_epoch}",
                    change.header.epoch
                )));
            }
            let next = ValidatorSet::new(self.chain_id.as_bytes(), keys)
                .map_err(|e| SyncError::EpochChange(e.to_string()))?;
            before_last = Some((
                std::mem::replace(&mut set, next),
                epoch,
                change.header.digest(),
            ));
            epoch = next_epoch;
        }
        let header = &bundle.header;
        match &before_last {
            Some((old, old_epoch, boundary)) if *boundary == header.digest() => {
                self.check_certificate(old, *old_epoch, header, &bundle.finalization)?;
            }
            _ => self.check_certificate(&set, epoch, header, &bundle.finalization)?,
        }
        if header.height < self.header.height {
            return Err(SyncError::Rollback {
                have: self.header.height,
                got: header.height,
            });
        }
        if header.height == self.header.height && header.digest() != self.header.digest() {
            // Both are certified: a safety failure of the validators. Keep the proof, trust neither.
            let pair = (self.header.clone(), header.clone());
            if !self.evidence.contains(&pair) {
                self.evidence.push(pair);
            }
            return Err(SyncError::Equivocation(header.height));
        }
        let cold = match bundle.since {
            None => true,
            Some(base) if base == self.header.height => false,
            Some(base) => {
                return Err(SyncError::WrongBase {
                    have: self.header.height,
                    got: base,
                });
            }
        };
        let (base, known) = if cold {
            (&self.genesis_tree, &BTreeMap::new())
        } else {
            (&self.tree, &self.lists)
        };
        let (staged, new_lists) = stage(base, known, bundle)?;
        let mut tree = if cold {
            // A first sync rebuilds the subtree in one pass over sorted leaves.
            let mut all = self.genesis_tree.to_map();
            all.extend(staged);
            Tree::from_entries(all)
        } else {
            // A delta writes the paths it touches into a copy that shares everything else.
            let mut tree = self.tree.clone();
            for (path, entry) in staged {
                tree.put_at(path, entry);
            }
            tree
        };
        if tree.root() != header.kiosk_root {
            return Err(SyncError::SubRootMismatch);
        }
        // The certified state must name the set that signed it; otherwise the bundle left out
        // a validator-set change.
        let record = tree
            .get(tag::CHAIN, b"validators")
            .and_then(|r| ChainRecord::decode(r).ok());
        let names_signers = record.is_some_and(|r| {
            r.epoch == epoch
                && ValidatorSet::new(self.chain_id.as_bytes(), r.validators)
                    .is_ok_and(|named| named.keys() == set.keys())
        });
        if !names_signers {
            return Err(SyncError::EpochChange(
                "the certified state names another validator set than the one that signed it"
                    .into(),
            ));
        }
        tree.clear_touched();
        self.tree = tree;
        if cold {
            self.lists = BTreeMap::new();
        }
        self.lists.extend(new_lists);
        self.header = header.clone();
        self.validators = set;
        self.epoch = epoch;
        Ok(())
    }

    /// The trust snapshot the verification engine uses: every DID key as a trust anchor, the
    /// issuer accreditations, the status lists, and the certified header time.
    pub fn trust_snapshot(&self) -> TrustSnapshot {
        let mut anchors = Vec::new();
        let mut accreditations = Vec::new();
        for e in self.tree.entries() {
            match e.tag.as_slice() {
                tag::KEY => {
                    if let (Ok(kid), Ok(key)) = (
                        String::from_utf8(e.key.clone()),
                        EcPublicKey::from_sec1(&e.value),
                    ) {
                        anchors.push(TrustAnchor::DidKey { kid, key });
                    }
                }
                tag::ISSUER => {
                    if let (Ok(issuer), Some((doc_types, until))) = (
                        String::from_utf8(e.key.clone()),
                        decode_accreditation(&e.value),
                    ) {
                        accreditations.push(Accreditation {
                            issuer,
                            doc_types,
                            valid_until: Timestamp(until),
                        });
                    }
                }
                _ => {}
            }
        }
        // The tree reproduced a certified root, so its list entries are the chain's own.
        let status_lists = status_lists(&self.tree)
            .unwrap_or_default()
            .into_iter()
            .map(|(uri, (_, list))| (uri, list))
            .collect();
        TrustSnapshot {
            anchors,
            accreditations: Some(accreditations),
            status_lists,
            as_of: Some(Timestamp(self.header.time)),
        }
    }
}

/// Every change a bundle makes, keyed by path, before anything is hashed: entries as sent, zero
/// chunks for new lists, and chunks rewritten by status changes. Also returns the new lists.
type Staged = (BTreeMap<Hash, Entry>, Vec<(u64, (String, ListInfo))>);

/// Largest snapshot file accepted.
pub const MAX_SNAPSHOT_LEN: usize = 512 * 1024 * 1024;

impl KioskSnapshot {
    /// The kiosk's stored form: the genesis digest it is pinned to, the certified header, the
    /// epoch and validator set, the kiosk subtree and any equivocation evidence. Lists and the
    /// genesis tree are derived again on load.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("v", Value::Integer(1.into())),
            ("genesis", Value::Bytes(self.genesis_digest.to_vec())),
            ("epoch", Value::Integer(self.epoch.into())),
            (
                "validators",
                Value::Array(
                    self.validators
                        .keys()
                        .iter()
                        .map(|k| Value::Bytes(k.compressed()))
                        .collect(),
                ),
            ),
            ("header", self.header.to_value()),
            ("entries", entries_value(self.tree.entries())),
            (
                "evidence",
                Value::Array(
                    self.evidence
                        .iter()
                        .map(|(a, b)| Value::Array(vec![a.to_value(), b.to_value()]))
                        .collect(),
                ),
            ),
        ]))
    }

    /// Load a stored snapshot for the pinned `genesis`. Refuses a snapshot of another genesis, a
    /// subtree that does not reproduce the header's kiosk sub-root, and a validator set that is
    /// not the one the subtree's chain record names.
    pub fn decode(genesis: &Genesis, bytes: &[u8]) -> Result<Self, SyncError> {
        let mut snap = Self::from_genesis(genesis)?;
        let (digest, epoch, keys, header, entries, evidence) =
            Self::decode_parts(bytes).map_err(malformed)?;
        if digest != snap.genesis_digest {
            return Err(SyncError::ForeignChain(
                "snapshot was made for another genesis".into(),
            ));
        }
        if header.chain != snap.chain_id {
            return Err(SyncError::ForeignChain(header.chain));
        }
        let mut all = BTreeMap::new();
        for e in entries {
            all.insert(smt::key_path(&e.tag, &e.key), e);
        }
        let tree = Tree::from_entries(all);
        if tree.root() != header.kiosk_root {
            return Err(SyncError::SubRootMismatch);
        }
        let record = tree
            .get(tag::CHAIN, b"validators")
            .ok_or_else(|| malformed("snapshot has no chain record"))
            .and_then(|r| ChainRecord::decode(r).map_err(malformed))?;
        let validators = ValidatorSet::new(snap.chain_id.as_bytes(), keys)
            .map_err(|e| SyncError::Certificate(e.to_string()))?;
        let recorded = ValidatorSet::new(snap.chain_id.as_bytes(), record.validators)
            .map_err(|e| SyncError::Certificate(e.to_string()))?;
        if record.epoch != epoch || recorded.keys() != validators.keys() {
            return Err(SyncError::EpochChange(
                "snapshot validator set differs from its chain record".into(),
            ));
        }
        let mut lists = BTreeMap::new();
        for e in tree.entries() {
            if e.tag.as_slice() == tag::STATUS_META {
                if let (Ok(uri), Some(info)) =
                    (String::from_utf8(e.key.clone()), ListInfo::decode(&e.value))
                {
                    lists.insert(info.id, (uri, info));
                }
            }
        }
        snap.epoch = epoch;
        snap.validators = validators;
        snap.header = header;
        snap.tree = tree;
        snap.lists = lists;
        snap.evidence = evidence;
        Ok(snap)
    }

    #[allow(clippy::type_complexity)]
    fn decode_parts(
        bytes: &[u8],
    ) -> crate::Result<(
        Hash,
        u64,
        Vec<EcPublicKey>,
        Header,
        Vec<Entry>,
        Vec<(Header, Header)>,
    )> {
        const W: &str = "kiosk snapshot";
        let v = cbor::decode(W, bytes, Limits::new(MAX_SNAPSHOT_LEN))?;
        let m = access::map(W, &v)?;
        access::only_keys(
            W,
            m,
            &[
                "v",
                "genesis",
                "epoch",
                "validators",
                "header",
                "entries",
                "evidence",
            ],
        )?;
        if access::uint(W, access::req(W, m, "v")?)? != 1 {
            return Err(crate::Error::malformed(W, "unknown snapshot version"));
        }
        let keys = access::array(W, access::req(W, m, "validators")?)?
            .iter()
            .map(|k| EcPublicKey::from_sec1(access::bytes(W, k)?))
            .collect::<crate::Result<_>>()?;
        let entries = entries_from(W, access::req(W, m, "entries")?)?;
        let evidence = access::array(W, access::req(W, m, "evidence")?)?
            .iter()
            .map(|p| match access::array(W, p)? {
                [a, b] => Ok((Header::from_value(a)?, Header::from_value(b)?)),
                _ => Err(crate::Error::malformed(W, "evidence must be a header pair")),
            })
            .collect::<crate::Result<_>>()?;
        Ok((
            hash32(W, access::req(W, m, "genesis")?)?,
            access::uint(W, access::req(W, m, "epoch")?)?,
            keys,
            Header::from_value(access::req(W, m, "header")?)?,
            entries,
            evidence,
        ))
    }
}

fn stage(
    base: &Tree,
    known: &BTreeMap<u64, (String, ListInfo)>,
    bundle: &SyncBundle,
) -> Result<Staged, SyncError> {
    let mut staged: BTreeMap<Hash, Entry> = BTreeMap::new();
    let mut new_lists: BTreeMap<u64, (String, ListInfo)> = BTreeMap::new();
    let mut synthesized = 0usize;
    for e in &bundle.entries {
        staged.insert(smt::key_path(&e.tag, &e.key), e.clone());
        if e.tag != tag::STATUS_META {
            continue;
        }
        let (Ok(uri), Some(meta)) = (std::str::from_utf8(&e.key), ListInfo::decode(&e.value))
        else {
            continue;
        };
        // A new list starts as zero chunks; its non-zero entries come as status changes.
        if base.get(tag::STATUS_CHUNK, &chunk_key(uri, 0)).is_none() {
            if meta.size > super::state::MAX_STATUS_ENTRIES {
                return Err(SyncError::Malformed(format!(
                    "list {} larger than the chain allows",
                    meta.id
                )));
            }
            let zero = StatusList::new(meta.bits, meta.size).map_err(malformed)?;
            synthesized = synthesized.saturating_add(zero.as_bytes().len());
            if synthesized > MAX_SYNTHESIZED_BYTES {
                return Err(SyncError::Malformed(
                    "new lists exceed the synthesis budget".into(),
                ));
            }
            for (i, chunk) in zero.as_bytes().chunks(STATUS_CHUNK).enumerate() {
                let key = chunk_key(uri, i);
                let entry = Entry {
                    tag: tag::STATUS_CHUNK.to_vec(),
                    key: key.clone(),
                    value: chunk.to_vec(),
                };
                staged.insert(smt::key_path(tag::STATUS_CHUNK, &key), entry);
            }
        }
        new_lists.insert(meta.id, (uri.to_owned(), meta));
    }
    for (id, delta) in &bundle.status {
        let (uri, meta) = new_lists
            .get(id)
            .or_else(|| known.get(id))
            .ok_or_else(|| SyncError::Malformed(format!("status changes for unknown list {id}")))?;
        let per_chunk = (STATUS_CHUNK as u64).saturating_mul(u64::from(8 / meta.bits.get()));
        let mut by_chunk: BTreeMap<u64, Vec<(u64, u8)>> = BTreeMap::new();
        for (idx, value) in delta.changes() {
            if *idx >= meta.size {
                return Err(SyncError::Malformed(format!(
                    "status index {idx} outside list {id}"
                )));
            }
            by_chunk
                .entry(idx / per_chunk)
                .or_default()
                .push((idx % per_chunk, *value));
        }
        for (n, changes) in by_chunk {
            let key = chunk_key(uri, usize::try_from(n).unwrap_or(usize::MAX));
            let path = smt::key_path(tag::STATUS_CHUNK, &key);
            let bytes = staged
                .get(&path)
                .or_else(|| base.get_at(&path))
                .map(|e| e.value.clone())
                .ok_or_else(|| SyncError::Malformed(format!("list {id} has no chunk {n}")))?;
            let mut chunk = StatusList::from_bytes(meta.bits, bytes);
            for (local, value) in changes {
                chunk.set(local, value).map_err(malformed)?;
            }
            let entry = Entry {
                tag: tag::STATUS_CHUNK.to_vec(),
                key,
                value: chunk.as_bytes().to_vec(),
            };
            staged.insert(path, entry);
        }
    }
    Ok((staged, new_lists.into_iter().collect()))
}

fn encode_status(status: &[(u64, StatusDelta)]) -> Vec<u8> {
    use super::cert::write_varint;
    let mut sorted: Vec<&(u64, StatusDelta)> = status.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    let mut out = Vec::new();
    let mut prev_id: Option<u64> = None;
    for (id, delta) in sorted {
        // An empty or repeated list would not decode; `build` never makes one.
        if delta.changes().is_empty() || prev_id == Some(*id) {
            continue;
        }
        write_varint(&mut out, prev_id.map_or(*id, |p| id.saturating_sub(p)));
        prev_id = Some(*id);
        write_varint(&mut out, delta.changes().len() as u64);
        let mut prev: Option<u64> = None;
        for (idx, value) in delta.changes() {
            write_varint(&mut out, prev.map_or(*idx, |p| idx.saturating_sub(p)));
            prev = Some(*idx);
            out.push(*value);
        }
    }
    out
}

fn decode_status(mut input: &[u8]) -> crate::Result<Vec<(u64, StatusDelta)>> {
    use super::cert::read_varint;
    const W: &str = "status changes";
    let mut out = Vec::new();
    let mut prev_id: Option<u64> = None;
    while !input.is_empty() {
        let gap = read_varint(&mut input)?;
        let id = match prev_id {
            None => gap,
            Some(_) if gap == 0 => {
                return Err(crate::Error::malformed(W, "list ids must increase"));
            }
            Some(p) => p
                .checked_add(gap)
                .ok_or_else(|| crate::Error::malformed(W, "list id overflows"))?,
        };
        prev_id = Some(id);
        let n = read_varint(&mut input)?;
        // Each change takes at least two bytes: refuse counts the input cannot hold.
        if n == 0 || n > (input.len() / 2) as u64 {
            return Err(crate::Error::malformed(
                W,
                "change count does not fit the input",
            ));
        }
        let mut changes = Vec::new();
        let mut prev: Option<u64> = None;
        for _ in 0..n {
            let gap = read_varint(&mut input)?;
            let idx = match prev {
                None => gap,
                Some(_) if gap == 0 => {
                    return Err(crate::Error::malformed(W, "indexes must increase"));
                }
                Some(p) => p
                    .checked_add(gap)
                    .ok_or_else(|| crate::Error::malformed(W, "index overflows"))?,
            };
            prev = Some(idx);
            let (&value, rest) = input
                .split_first()
                .ok_or_else(|| crate::Error::malformed(W, "truncated"))?;
            input = rest;
            changes.push((idx, value));
        }
        out.push((id, StatusDelta::from_changes(changes)));
    }
    Ok(out)
}
