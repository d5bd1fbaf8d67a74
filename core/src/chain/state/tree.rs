//! One authenticated table set: the sparse Merkle tree and the entries behind its leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::chain::smt::{self, Hash, SparseMerkleTree};
use crate::chain::table::Table;

/// One stored entry: table, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Table.
    pub table: Table,
    /// Key within the table.
    pub key: Vec<u8>,
    /// Encoded value.
    pub value: Vec<u8>,
}

impl Entry {
    /// Its path in the tree.
    pub fn path(&self) -> Hash {
        self.table.path(&self.key)
    }
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
    touched: BTreeSet<Hash>,
}

impl Tree {
    /// The root.
    pub fn root(&self) -> Hash {
        self.smt.root()
    }

    /// The value under `(table, key)`.
    pub fn get(&self, table: Table, key: &[u8]) -> Option<&[u8]> {
        self.values
            .get(&table.path(key))
            .map(|e| e.value.as_slice())
    }

    /// Set `(table, key)`; returns the entry it replaced.
    pub(crate) fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) -> Option<Entry> {
        self.put_entry(Entry {
            table,
            key: key.to_vec(),
            value,
        })
    }

    /// Set an entry; returns the entry it replaced.
    pub(crate) fn put_entry(&mut self, entry: Entry) -> Option<Entry> {
        let path = entry.path();
        self.touched.insert(path);
        self.smt.insert(path, smt::value_hash(&entry.value));
        self.values
            .insert(path, Arc::new(entry))
            .map(Arc::unwrap_or_clone)
    }

    /// Set `(table, key)` to `value`, or remove it for `None`: a node rebuilds the tree of an
    /// older height by undoing later writes.
    pub fn restore_entry(&mut self, table: Table, key: &[u8], value: Option<Vec<u8>>) {
        match value {
            Some(v) => {
                self.put(table, key, v);
            }
            None => self.remove_at(&table.path(key)),
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

    /// Build a tree from entries, hashing each node once.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let values: BTreeMap<Hash, Entry> = entries.into_iter().map(|e| (e.path(), e)).collect();
        Self::from_map(values)
    }

    /// Build a tree from entries keyed by their paths.
    pub(crate) fn from_map(values: BTreeMap<Hash, Entry>) -> Self {
        let leaves: Vec<(Hash, Hash)> = values
            .iter()
            .map(|(p, e)| (*p, smt::value_hash(&e.value)))
            .collect();
        Self {
            smt: SparseMerkleTree::from_sorted_leaves(&leaves),
            values: values.into_iter().map(|(p, e)| (p, Arc::new(e))).collect(),
            touched: BTreeSet::new(),
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

    /// A proof for `(table, key)`.
    pub fn prove(&self, table: Table, key: &[u8]) -> smt::Proof {
        self.smt.prove(&table.path(key))
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
