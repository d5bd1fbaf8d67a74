//! Sync bundles: the latest certified header, the validator-set changes since the kiosk's
//! epoch, and the kiosk-tree changes since its height (`specs/chain-sync.md`).

use std::collections::BTreeMap;

use ciborium::Value;

use super::{MAX_BUNDLE_LEN, SyncError, malformed};
use crate::cbor::{self, CborForm, Limits, access, text_map};
use crate::chain::block::Header;
use crate::chain::smt::{self, Hash};
use crate::chain::state::{
    CHAIN_RECORD, Entry, ListInfo, STATUS_CHUNK, State, Tree, chunk_key, split_chunk_key,
};
use crate::chain::table::Table;
use crate::status::{StatusDelta, StatusList};

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
        let record = after.kiosk_tree().get(Table::Chain, CHAIN_RECORD)?;
        if before.kiosk_tree().get(Table::Chain, CHAIN_RECORD) == Some(record) {
            return None;
        }
        Some(Self {
            header: header.clone(),
            finalization: finalization.to_vec(),
            record: record.to_vec(),
            proof: after.kiosk_tree().prove(Table::Chain, CHAIN_RECORD),
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
    pub status: StatusChanges,
}

pub(super) fn proof_value(p: &smt::Proof) -> Value {
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

/// Entries grouped by table: `[[table code, [[key, value]...]]...]`, tables in code order.
pub(super) fn entries_value<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Value {
    let mut groups: BTreeMap<u8, Vec<Value>> = BTreeMap::new();
    for e in entries {
        groups
            .entry(e.table.code())
            .or_default()
            .push(Value::Array(vec![
                Value::Bytes(e.key.clone()),
                Value::Bytes(e.value.clone()),
            ]));
    }
    Value::Array(
        groups
            .into_iter()
            .map(|(t, kv)| Value::Array(vec![Value::Integer(t.into()), Value::Array(kv)]))
            .collect(),
    )
}

/// The inverse of [`entries_value`]. Only kiosk-tree tables are accepted, each group at most
/// once and in code order: an unknown table is refused, never filed where nothing reads it.
pub(super) fn entries_from(what: &'static str, v: &Value) -> crate::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut last: Option<u8> = None;
    for group in access::array(what, v)? {
        let [t, kvs] = access::array(what, group)? else {
            return Err(crate::Error::malformed(
                what,
                "entry group must be [table, entries]",
            ));
        };
        let code = u8::try_from(access::uint(what, t)?)
            .map_err(|_| crate::Error::malformed(what, "unknown table"))?;
        let table = Table::from_code(code)
            .filter(|t| t.in_kiosk_tree())
            .ok_or_else(|| crate::Error::malformed(what, format!("unknown table {code}")))?;
        if last.is_some_and(|l| l >= code) {
            return Err(crate::Error::malformed(
                what,
                "entry groups must be in increasing table order",
            ));
        }
        last = Some(code);
        for kv in access::array(what, kvs)? {
            let [k, v] = access::array(what, kv)? else {
                return Err(crate::Error::malformed(what, "entry must be [key, value]"));
            };
            entries.push(Entry {
                table,
                key: access::bytes(what, k)?.to_vec(),
                value: access::bytes(what, v)?.to_vec(),
            });
        }
    }
    Ok(entries)
}

pub(super) fn hash32(what: &'static str, v: &Value) -> crate::Result<Hash> {
    access::bytes(what, v)?
        .try_into()
        .map_err(|_| crate::Error::malformed(what, "expected 32 bytes"))
}

pub(super) fn proof_from(v: &Value) -> crate::Result<smt::Proof> {
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
    /// CBOR encoding. Entries are grouped by table (`[[table, [[key, value]...]]...]`) and the
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
            ("status", Value::Bytes(self.status.as_bytes().to_vec())),
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
            status: StatusChanges::decode(access::bytes(W, access::req(W, m, "status")?)?)?,
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
            match (e.table, split_chunk_key(&e.key)) {
                (Table::StatusChunk, Some((uri, n))) => {
                    chunks.entry(uri).or_default().push((n, e.value))
                }
                _ => entries.push(e),
            }
        }
        let mut status = Vec::new();
        for (uri, changed) in chunks {
            let Some(meta) = current
                .get(Table::StatusMeta, uri.as_bytes())
                .and_then(ListInfo::decode)
            else {
                continue;
            };
            let per_byte = u64::from(8 / meta.bits.get());
            let mut changes = Vec::new();
            for (n, new) in changed {
                let old = base
                    .get(Table::StatusChunk, &chunk_key(&uri, n))
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
            status: StatusChanges::from_deltas(&status),
        }
    }
}

/// A bundle's status changes in their compact wire form (§3.2 of chain-sync.md), checked when
/// decoded and read by iterating. Kept encoded because a change costs a kiosk about two bytes
/// this way and sixteen decoded: a lying registry's 62 MB bundle of 31 million changes made a
/// kiosk hold 631 MB when they were decoded up front.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusChanges(Vec<u8>);

impl StatusChanges {
    /// Encode per-list deltas (lists in increasing id; empty deltas and repeated ids skipped).
    pub fn from_deltas(status: &[(u64, StatusDelta)]) -> Self {
        Self(encode_status(status))
    }

    /// Check the wire form (ids and indexes increasing, counts that fit, no overflow) and keep
    /// it, allocating nothing more.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        let mut lists = ListIter::new(bytes);
        while let Some(list) = lists.next_checked()? {
            let mut changes = list.1;
            while changes.next_checked()?.is_some() {}
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no changes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every list's changes, by increasing list id, each in increasing entry index.
    pub fn lists(&self) -> impl Iterator<Item = (u64, Changes<'_>)> {
        let mut it = ListIter::new(&self.0);
        std::iter::from_fn(move || it.next_checked().ok().flatten())
    }

    /// Decoded per-list deltas (tests and tools; a kiosk iterates instead).
    pub fn to_deltas(&self) -> Vec<(u64, StatusDelta)> {
        self.lists()
            .map(|(id, changes)| (id, StatusDelta::from_changes(changes.collect())))
            .collect()
    }

    /// The number of changes.
    pub fn count(&self) -> usize {
        self.lists().map(|(_, c)| c.remaining).sum::<u64>() as usize
    }
}

/// The lists of a status-change encoding, read one by one, with the previous list id.
struct ListIter<'a>(&'a [u8], Option<u64>);

impl<'a> ListIter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self(bytes, None)
    }

    fn next_checked(&mut self) -> crate::Result<Option<(u64, Changes<'a>)>> {
        use crate::chain::cert::read_varint;
        const W: &str = "status changes";
        if self.0.is_empty() {
            return Ok(None);
        }
        let mut input = self.0;
        let gap = read_varint(&mut input)?;
        let id = match self.1 {
            None => gap,
            Some(_) if gap == 0 => {
                return Err(crate::Error::malformed(W, "list ids must increase"));
            }
            Some(p) => p
                .checked_add(gap)
                .ok_or_else(|| crate::Error::malformed(W, "list id overflows"))?,
        };
        let n = read_varint(&mut input)?;
        // Each change takes at least two bytes: refuse counts the input cannot hold.
        if n == 0 || n > (input.len() / 2) as u64 {
            return Err(crate::Error::malformed(
                W,
                "change count does not fit the input",
            ));
        }
        // Find where this list's changes end (each is a varint and one value byte).
        let mut end = input;
        for _ in 0..n {
            read_varint(&mut end)?;
            end = end
                .split_first()
                .map(|(_, rest)| rest)
                .ok_or_else(|| crate::Error::malformed(W, "truncated"))?;
        }
        let body = input
            .get(..input.len().saturating_sub(end.len()))
            .unwrap_or_default();
        self.0 = end;
        self.1 = Some(id);
        Ok(Some((
            id,
            Changes {
                input: body,
                remaining: n,
                prev: None,
            },
        )))
    }
}

/// One list's changes, `(index, value)` in increasing index.
#[derive(Debug, Clone)]
pub struct Changes<'a> {
    input: &'a [u8],
    remaining: u64,
    prev: Option<u64>,
}

impl Changes<'_> {
    fn next_checked(&mut self) -> crate::Result<Option<(u64, u8)>> {
        use crate::chain::cert::read_varint;
        const W: &str = "status changes";
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        let gap = read_varint(&mut self.input)?;
        let idx = match self.prev {
            None => gap,
            Some(_) if gap == 0 => return Err(crate::Error::malformed(W, "indexes must increase")),
            Some(p) => p
                .checked_add(gap)
                .ok_or_else(|| crate::Error::malformed(W, "index overflows"))?,
        };
        self.prev = Some(idx);
        let (&value, rest) = self
            .input
            .split_first()
            .ok_or_else(|| crate::Error::malformed(W, "truncated"))?;
        self.input = rest;
        Ok(Some((idx, value)))
    }
}

impl Iterator for Changes<'_> {
    type Item = (u64, u8);

    fn next(&mut self) -> Option<(u64, u8)> {
        self.next_checked().ok().flatten()
    }
}

fn encode_status(status: &[(u64, StatusDelta)]) -> Vec<u8> {
    use crate::chain::cert::write_varint;
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
