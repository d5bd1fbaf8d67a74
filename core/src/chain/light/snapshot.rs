//! The kiosk's light client: a pinned genesis, a certified header, and the kiosk subtree it
//! commits, advanced by sync bundles and turned into the verification engine's trust snapshot.

use std::collections::BTreeMap;

use super::bundle::SyncBundle;
use super::{MAX_SYNTHESIZED_BYTES, SyncError, malformed};
use crate::chain::block::Header;
use crate::chain::cert::{Finalization, ValidatorSet};
use crate::chain::smt::{self, Hash};
use crate::chain::state::lists::{chunk_count, list_bytes};
use crate::chain::state::{
    CHAIN_RECORD, ChainRecord, Entry, Genesis, ListInfo, MAX_STATUS_ENTRIES, STATUS_CHUNK, State,
    Tree, chunk_key, decode_accreditation, epoch_of, is_boundary, split_chunk_key, status_lists,
};
use crate::chain::table::Table;
use crate::did::{Did, DidUrl};
use crate::mdoc::TrustAnchor;
use crate::status::StatusList;
use crate::timestamp::Timestamp;
use crate::verify::{Accreditation, TrustSnapshot};

/// What a kiosk holds: the pinned genesis, its current certified header, validator set, and the
/// kiosk subtree.
#[derive(Debug, Clone)]
pub struct KioskSnapshot {
    pub(super) chain_id: String,
    pub(super) genesis_digest: Hash,
    pub(super) epoch_length: u64,
    pub(super) epoch: u64,
    pub(super) validators: ValidatorSet,
    pub(super) header: Header,
    pub(super) tree: Tree,
    pub(super) genesis_tree: Tree,
    /// The tree's status lists, reassembled and checked whole when the tree was adopted.
    pub(super) lists: BTreeMap<String, (ListInfo, StatusList)>,
    pub(super) evidence: Vec<(Header, Header)>,
}

/// The status lists of `tree`, checked whole: every list's chunks exactly 0..n-1 with the
/// sizes its metadata implies, no chunk of an unknown list.
pub(super) fn checked_lists(
    tree: &Tree,
) -> Result<BTreeMap<String, (ListInfo, StatusList)>, SyncError> {
    status_lists(tree).map_err(|e| SyncError::Lists(e.to_string()))
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
            let path = Table::Chain.path(CHAIN_RECORD);
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
            (&self.genesis_tree, BTreeMap::new())
        } else {
            (
                &self.tree,
                self.lists
                    .iter()
                    .map(|(uri, (info, _))| (info.id, (uri.clone(), *info)))
                    .collect(),
            )
        };
        let staged = stage(base, &known, bundle)?;
        // The lists a delta touches (the others were checked whole when the kiosk adopted them).
        let touched = touched_lists(staged.values())?;
        let mut tree = if cold {
            // A first sync rebuilds the subtree in one pass over sorted leaves.
            let mut all = self.genesis_tree.to_map();
            all.extend(staged);
            Tree::from_map(all)
        } else {
            // A delta writes the paths it touches into a copy that shares everything else.
            let mut tree = self.tree.clone();
            for entry in staged.into_values() {
                tree.put_entry(entry);
            }
            tree
        };
        if tree.root() != header.kiosk_root {
            return Err(SyncError::SubRootMismatch);
        }
        // The certified state must name the set that signed it; otherwise the bundle left out
        // a validator-set change.
        let record = tree
            .get(Table::Chain, CHAIN_RECORD)
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
        // A certified root proves each entry is the chain's, not that the entries add up: the
        // lists must be whole before anything reads them.
        if cold {
            let lists = checked_lists(&tree)?;
            tree.clear_touched();
            self.tree = tree;
            self.lists = lists;
        } else {
            let updates = self.recheck_lists(&tree, &touched)?;
            tree.clear_touched();
            self.tree = tree;
            self.lists.extend(updates);
        }
        self.header = header.clone();
        self.validators = set;
        self.epoch = epoch;
        Ok(())
    }

    /// The governance members' `rotate-key` transactions the chain recorded, each member's in
    /// the order they happened: what a kiosk pushes to a card so the card follows the governance
    /// set (card-applet.md §3.4). The card checks every one itself.
    pub fn governance_rotations(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<((String, u32), Vec<u8>)> = self
            .tree
            .entries()
            .filter(|e| e.table == Table::Rotation)
            .filter_map(|e| {
                let url = DidUrl::parse(std::str::from_utf8(&e.key).ok()?).ok()?;
                let index = url.key_index()?;
                Some(((url.did.to_string(), index), e.value.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, tx)| tx).collect()
    }

    /// The trust snapshot the verification engine uses: every DID key as a trust anchor, the
    /// issuer accreditations, the status lists, and the certified header time.
    pub fn trust_snapshot(&self) -> TrustSnapshot {
        let mut anchors = Vec::new();
        let mut retired_keys = BTreeMap::new();
        let mut accreditations = Vec::new();
        for e in self.tree.entries() {
            match e.table {
                Table::Key => {
                    if let (Some(kid), Ok((key, retired))) = (
                        std::str::from_utf8(&e.key)
                            .ok()
                            .and_then(|k| DidUrl::parse(k).ok()),
                        crate::chain::state::records::decode_key_value(&e.value),
                    ) {
                        if let Some(at) = retired {
                            retired_keys.insert(kid.to_string(), Timestamp(at));
                        }
                        anchors.push(TrustAnchor::DidKey { kid, key });
                    }
                }
                Table::Issuer => {
                    if let (Some(issuer), Some((doc_types, until))) = (
                        std::str::from_utf8(&e.key)
                            .ok()
                            .and_then(|d| Did::parse(d).ok()),
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
        let status_lists = self
            .lists
            .iter()
            .map(|(uri, (_, list))| (uri.clone(), list.clone()))
            .collect();
        TrustSnapshot {
            anchors,
            accreditations: Some(accreditations),
            status_lists,
            as_of: Some(Timestamp(self.header.time)),
            retired_keys,
        }
    }
}

/// A status list reassembled from the tree and checked whole, with its metadata.
type CheckedList = (ListInfo, StatusList);

/// The lists whose metadata or chunks an entry set writes, by URI, each with the highest chunk
/// number written (`None`: only its metadata).
type Touched = BTreeMap<String, Option<u64>>;

fn touched_lists<'a>(entries: impl Iterator<Item = &'a Entry>) -> Result<Touched, SyncError> {
    let mut out = Touched::new();
    for e in entries {
        match e.table {
            Table::StatusMeta => {
                let uri = String::from_utf8(e.key.clone())
                    .map_err(|_| SyncError::Lists("a list URI is not UTF-8".into()))?;
                out.entry(uri).or_insert(None);
            }
            Table::StatusChunk => {
                let (uri, n) = split_chunk_key(&e.key)
                    .ok_or_else(|| SyncError::Lists("a status chunk has a malformed key".into()))?;
                let highest = out.entry(uri).or_insert(None);
                *highest = Some(highest.map_or(n, |h| h.max(n)));
            }
            _ => {}
        }
    }
    Ok(out)
}

impl KioskSnapshot {
    /// After a delta: each touched list of `tree` reassembled and checked whole (metadata
    /// present and unchanged for a known list, a fresh id for a new one, chunks `0..n−1` of the
    /// right sizes and none beyond). The untouched lists were checked when they were adopted and
    /// the delta wrote none of their entries, so the cost is that of the touched lists.
    fn recheck_lists(
        &self,
        tree: &Tree,
        touched: &Touched,
    ) -> Result<Vec<(String, CheckedList)>, SyncError> {
        let refuse = |uri: &str, what: &str| SyncError::Lists(format!("status list {uri}: {what}"));
        let mut ids: std::collections::BTreeSet<u64> =
            self.lists.values().map(|(info, _)| info.id).collect();
        let mut out = Vec::new();
        for (uri, highest) in touched {
            let info = tree
                .get(Table::StatusMeta, uri.as_bytes())
                .and_then(ListInfo::decode)
                .filter(|i| i.size > 0 && i.size <= MAX_STATUS_ENTRIES)
                .ok_or_else(|| refuse(uri, "chunks without valid metadata"))?;
            match self.lists.get(uri) {
                Some((old, _)) if *old != info => return Err(refuse(uri, "metadata changed")),
                Some(_) => {}
                None if !ids.insert(info.id) => return Err(refuse(uri, "id already in use")),
                None => {}
            }
            let total = list_bytes(&info);
            let n = chunk_count(&info);
            let mut bytes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            for c in 0..n {
                let want = total.saturating_sub(c.saturating_mul(STATUS_CHUNK as u64));
                let want = want.min(STATUS_CHUNK as u64);
                match tree.get(Table::StatusChunk, &chunk_key(uri, c)) {
                    Some(chunk) if chunk.len() as u64 == want => bytes.extend_from_slice(chunk),
                    _ => {
                        return Err(refuse(
                            uri,
                            &format!("chunk {c} missing or of the wrong size"),
                        ));
                    }
                }
            }
            if highest.is_some_and(|h| h >= n) {
                return Err(refuse(uri, "a chunk beyond its size"));
            }
            out.push((
                uri.clone(),
                (info, StatusList::from_bytes(info.bits, bytes)),
            ));
        }
        Ok(out)
    }
}

/// Every change a bundle makes, keyed by path, before anything is hashed: entries as sent, zero
/// chunks for new lists, and chunks rewritten by status changes.
fn stage(
    base: &Tree,
    known: &BTreeMap<u64, (String, ListInfo)>,
    bundle: &SyncBundle,
) -> Result<BTreeMap<Hash, Entry>, SyncError> {
    let mut staged: BTreeMap<Hash, Entry> = BTreeMap::new();
    let mut new_lists: BTreeMap<u64, (String, ListInfo)> = BTreeMap::new();
    let mut synthesized = 0usize;
    for e in &bundle.entries {
        staged.insert(e.path(), e.clone());
        if e.table != Table::StatusMeta {
            continue;
        }
        let (Ok(uri), Some(meta)) = (std::str::from_utf8(&e.key), ListInfo::decode(&e.value))
        else {
            continue;
        };
        // A new list starts as zero chunks; its non-zero entries come as status changes.
        if base.get(Table::StatusMeta, e.key.as_slice()).is_none() {
            if meta.size > MAX_STATUS_ENTRIES {
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
            for (i, chunk) in (0u64..).zip(zero.as_bytes().chunks(STATUS_CHUNK)) {
                let entry = Entry {
                    table: Table::StatusChunk,
                    key: chunk_key(uri, i),
                    value: chunk.to_vec(),
                };
                staged.insert(entry.path(), entry);
            }
        }
        new_lists.insert(meta.id, (uri.to_owned(), meta));
    }
    for (id, changes) in bundle.status.lists() {
        let (uri, meta) = new_lists
            .get(&id)
            .or_else(|| known.get(&id))
            .ok_or_else(|| SyncError::Malformed(format!("status changes for unknown list {id}")))?;
        let per_chunk = (STATUS_CHUNK as u64).saturating_mul(meta.bits.per_byte());
        // Changes come in increasing index, so chunk by chunk: one chunk open at a time, and
        // memory that grows with the chunks touched, never with the number of changes.
        let mut open: Option<(u64, StatusList)> = None;
        let stage_chunk = |staged: &mut BTreeMap<Hash, Entry>, n: u64, chunk: StatusList| {
            let entry = Entry {
                table: Table::StatusChunk,
                key: chunk_key(uri, n),
                value: chunk.as_bytes().to_vec(),
            };
            staged.insert(entry.path(), entry);
        };
        for (idx, value) in changes {
            if idx >= meta.size {
                return Err(SyncError::Malformed(format!(
                    "status index {idx} outside list {id}"
                )));
            }
            let n = idx / per_chunk;
            if open.as_ref().is_none_or(|(m, _)| *m != n) {
                if let Some((m, chunk)) = open.take() {
                    stage_chunk(&mut staged, m, chunk);
                }
                let path = Table::StatusChunk.path(&chunk_key(uri, n));
                let bytes = staged
                    .get(&path)
                    .or_else(|| base.get_at(&path))
                    .map(|e| e.value.clone())
                    .ok_or_else(|| SyncError::Malformed(format!("list {id} has no chunk {n}")))?;
                open = Some((n, StatusList::from_bytes(meta.bits, bytes)));
            }
            if let Some((_, chunk)) = open.as_mut() {
                chunk.set(idx % per_chunk, value).map_err(malformed)?;
            }
        }
        if let Some((m, chunk)) = open.take() {
            stage_chunk(&mut staged, m, chunk);
        }
    }
    Ok(staged)
}
