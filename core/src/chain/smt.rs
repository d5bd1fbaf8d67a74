//! The authenticated map of the registry state: a compacted binary sparse Merkle tree over
//! SHA-256 (`specs/chain-state.md`).
//!
//! Keys are 256-bit paths ([`super::table::Table::path`]: SHA-256 of a domain, a one-byte table
//! code and the canonical key), read most significant bit first. An empty subtree hashes to [`PLACEHOLDER`]; a subtree holding exactly one leaf is
//! that leaf's hash, at whatever depth; any other subtree is an internal node. The root therefore
//! depends only on the set of entries, never on the order they were written. Hashing follows the
//! Jellyfish Merkle Tree's domain strings, so the roots can be cross-checked against that design.
//!
//! Updates touch one path (O(depth)); proofs carry one sibling per level of the path.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A 32-byte hash or key path.
pub type Hash = [u8; 32];

/// The hash of an empty subtree.
pub const PLACEHOLDER: Hash = *b"SPARSE_MERKLE_PLACEHOLDER_HASH__";

const LEAF_DOMAIN: &[u8] = b"JMT::LeafNode";
const INTERNAL_DOMAIN: &[u8] = b"JMT::IntrnalNode";

/// Longest proof accepted: one sibling per bit of the key path.
pub const MAX_PROOF_DEPTH: usize = 256;

/// The hash a leaf commits to for `value`.
pub fn value_hash(value: &[u8]) -> Hash {
    Sha256::digest(value).into()
}

/// Hash of a leaf.
pub fn leaf_hash(key: &Hash, value_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(LEAF_DOMAIN);
    h.update(key);
    h.update(value_hash);
    h.finalize().into()
}

/// Hash of an internal node.
pub fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(INTERNAL_DOMAIN);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Bit `depth` of `key`, most significant first.
fn bit(key: &Hash, depth: usize) -> bool {
    key.get(depth / 8)
        .is_some_and(|b| b & (0x80 >> (depth % 8)) != 0)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Node {
    #[default]
    Empty,
    Leaf {
        key: Hash,
        value: Hash,
        hash: Hash,
    },
    Internal {
        left: Arc<Node>,
        right: Arc<Node>,
        hash: Hash,
    },
}

impl Node {
    fn leaf(key: Hash, value: Hash) -> Self {
        Self::Leaf {
            hash: leaf_hash(&key, &value),
            key,
            value,
        }
    }

    fn internal(left: Node, right: Node) -> Self {
        Self::shared(Arc::new(left), Arc::new(right))
    }

    /// An internal node over children that may be shared with older versions of the tree: an
    /// update copies only the nodes on its path, so cloning a tree is O(1).
    fn shared(left: Arc<Node>, right: Arc<Node>) -> Self {
        Self::Internal {
            hash: internal_hash(&left.hash(), &right.hash()),
            left,
            right,
        }
    }

    fn hash(&self) -> Hash {
        match self {
            Self::Empty => PLACEHOLDER,
            Self::Leaf { hash, .. } | Self::Internal { hash, .. } => *hash,
        }
    }

    /// A subtree at `depth` holding two leaves with different keys.
    fn split(depth: usize, a: Node, a_key: &Hash, b: Node, b_key: &Hash) -> Self {
        match (bit(a_key, depth), bit(b_key, depth)) {
            (false, true) => Self::internal(a, b),
            (true, false) => Self::internal(b, a),
            (false, false) => Self::internal(
                Self::split(depth.saturating_add(1), a, a_key, b, b_key),
                Self::Empty,
            ),
            (true, true) => Self::internal(
                Self::Empty,
                Self::split(depth.saturating_add(1), a, a_key, b, b_key),
            ),
        }
    }

    fn insert(self, depth: usize, key: Hash, value: Hash) -> Self {
        match self {
            Self::Empty => Self::leaf(key, value),
            Self::Leaf { key: k, .. } if k == key => Self::leaf(key, value),
            Self::Leaf {
                key: k,
                value: v,
                hash,
            } => Self::split(
                depth,
                Self::Leaf {
                    key: k,
                    value: v,
                    hash,
                },
                &k,
                Self::leaf(key, value),
                &key,
            ),
            Self::Internal { left, right, .. } => {
                let next = depth.saturating_add(1);
                if bit(&key, depth) {
                    let right = Arc::unwrap_or_clone(right).insert(next, key, value);
                    Self::shared(left, Arc::new(right))
                } else {
                    let left = Arc::unwrap_or_clone(left).insert(next, key, value);
                    Self::shared(Arc::new(left), right)
                }
            }
        }
    }

    fn remove(self, depth: usize, key: &Hash) -> Self {
        match self {
            Self::Leaf { key: k, .. } if &k == key => Self::Empty,
            Self::Internal { left, right, .. } => {
                let go_right = bit(key, depth);
                let (changed, kept) = if go_right {
                    (right, left)
                } else {
                    (left, right)
                };
                let changed = Arc::unwrap_or_clone(changed).remove(depth.saturating_add(1), key);
                // A subtree left with a single leaf collapses to that leaf.
                match (&changed, kept.as_ref()) {
                    (Self::Empty, Self::Empty) => Self::Empty,
                    (Self::Leaf { .. }, Self::Empty) => changed,
                    (Self::Empty, Self::Leaf { .. }) => Arc::unwrap_or_clone(kept),
                    _ if go_right => Self::shared(kept, Arc::new(changed)),
                    _ => Self::shared(Arc::new(changed), kept),
                }
            }
            other => other,
        }
    }
}

/// An in-memory tree: what a kiosk keeps for its subtree and what the simulation runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SparseMerkleTree {
    root: Node,
    len: usize,
}

/// A Merkle proof for one key path: siblings from the root down, and what sits at the end of the
/// path (the leaf itself, another leaf sharing the prefix, or nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes, root level first.
    pub siblings: Vec<Hash>,
    /// `(key, value hash)` of the leaf where the path ends, if any.
    pub leaf: Option<(Hash, Hash)>,
}

impl SparseMerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        self.root.hash()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value hash stored at `key`.
    pub fn get(&self, key: &Hash) -> Option<Hash> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf { key: k, value, .. } => return (k == key).then_some(*value),
                Node::Internal { left, right, .. } => {
                    node = if bit(key, depth) { right } else { left };
                    depth = depth.saturating_add(1);
                }
            }
        }
    }

    /// Set `key` to `value_hash`.
    pub fn insert(&mut self, key: Hash, value_hash: Hash) {
        if self.get(&key).is_none() {
            self.len = self.len.saturating_add(1);
        }
        self.root = std::mem::take(&mut self.root).insert(0, key, value_hash);
    }

    /// Remove `key`; returns whether it was present.
    pub fn remove(&mut self, key: &Hash) -> bool {
        if self.get(key).is_none() {
            return false;
        }
        self.len = self.len.saturating_sub(1);
        self.root = std::mem::take(&mut self.root).remove(0, key);
        true
    }

    /// The proof for `key` (inclusion if present, non-inclusion otherwise).
    pub fn prove(&self, key: &Hash) -> Proof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => {
                    return Proof {
                        siblings,
                        leaf: None,
                    };
                }
                Node::Leaf { key: k, value, .. } => {
                    return Proof {
                        siblings,
                        leaf: Some((*k, *value)),
                    };
                }
                Node::Internal { left, right, .. } => {
                    let (next, sibling) = if bit(key, depth) {
                        (right, left)
                    } else {
                        (left, right)
                    };
                    siblings.push(sibling.hash());
                    node = next;
                    depth = depth.saturating_add(1);
                }
            }
        }
    }
}

impl SparseMerkleTree {
    /// Build a tree from leaves sorted by key, without duplicates, in one pass (one hash per node,
    /// about 1.5 n for random keys, instead of a full path update per leaf): what a cold sync uses.
    pub fn from_sorted_leaves(leaves: &[(Hash, Hash)]) -> Self {
        fn go(leaves: &[(Hash, Hash)], depth: usize) -> Node {
            match leaves {
                [] => Node::Empty,
                [(k, v)] => Node::leaf(*k, *v),
                _ => {
                    let split = leaves.partition_point(|(k, _)| !bit(k, depth));
                    let (l, r) = leaves.split_at(split);
                    Node::internal(
                        go(l, depth.saturating_add(1)),
                        go(r, depth.saturating_add(1)),
                    )
                }
            }
        }
        Self {
            root: go(leaves, 0),
            len: leaves.len(),
        }
    }
}

/// Check `proof` for `key` against `root`: with `Some(value_hash)` that the key holds exactly that
/// value, with `None` that the key is absent.
pub fn verify(root: &Hash, key: &Hash, value_hash: Option<&Hash>, proof: &Proof) -> Result<()> {
    const W: &str = "Merkle proof";
    let depth = proof.siblings.len();
    if depth > MAX_PROOF_DEPTH {
        return Err(Error::invalid(W, "longer than 256 levels"));
    }
    let mut current = match (&proof.leaf, value_hash) {
        (None, None) => PLACEHOLDER,
        (None, Some(_)) => {
            return Err(Error::invalid(
                W,
                "ends in an empty subtree, so the key is absent",
            ));
        }
        (Some((k, v)), Some(want)) => {
            if k != key || v != want {
                return Err(Error::invalid(W, "leaf does not hold this key and value"));
            }
            leaf_hash(k, v)
        }
        (Some((k, v)), None) => {
            if k == key {
                return Err(Error::invalid(W, "the key is present"));
            }
            // The other leaf must sit on this key's path.
            if (0..depth).any(|d| bit(k, d) != bit(key, d)) {
                return Err(Error::invalid(W, "leaf is not on the key's path"));
            }
            leaf_hash(k, v)
        }
    };
    for (d, sibling) in proof.siblings.iter().enumerate().rev() {
        current = if bit(key, d) {
            internal_hash(sibling, &current)
        } else {
            internal_hash(&current, sibling)
        };
    }
    if &current == root {
        Ok(())
    } else {
        Err(Error::BadSignature("Merkle proof"))
    }
}

/// The root of a set of leaves, computed top-down from scratch (what a kiosk does on a cold
/// sync); `leaves` must be sorted by key and free of duplicates.
pub fn root_of_sorted(leaves: &[(Hash, Hash)]) -> Hash {
    fn go(leaves: &[(Hash, Hash)], depth: usize) -> Hash {
        match leaves {
            [] => PLACEHOLDER,
            [(k, v)] => leaf_hash(k, v),
            _ => {
                let split = leaves.partition_point(|(k, _)| !bit(k, depth));
                let (l, r) = leaves.split_at(split);
                internal_hash(
                    &go(l, depth.saturating_add(1)),
                    &go(r, depth.saturating_add(1)),
                )
            }
        }
    }
    go(leaves, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic keys for property tests.
    fn h(i: u64) -> Hash {
        Sha256::digest(i.to_be_bytes()).into()
    }

    fn oracle(tree: &std::collections::BTreeMap<Hash, Hash>) -> Hash {
        let leaves: Vec<_> = tree.iter().map(|(k, v)| (*k, *v)).collect();
        root_of_sorted(&leaves)
    }

    #[test]
    fn empty_and_single() {
        let mut t = SparseMerkleTree::new();
        assert_eq!(t.root(), PLACEHOLDER);
        t.insert(h(1), h(2));
        assert_eq!(t.root(), leaf_hash(&h(1), &h(2)));
        assert!(t.remove(&h(1)));
        assert_eq!(t.root(), PLACEHOLDER);
        assert!(!t.remove(&h(1)));
    }

    #[test]
    fn random_operations_match_the_oracle_and_proofs_hold() {
        let mut t = SparseMerkleTree::new();
        let mut model = std::collections::BTreeMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..3000u64 {
            let k = h(next() % 400);
            match next() % 3 {
                0 | 1 => {
                    let v = h(step);
                    t.insert(k, v);
                    model.insert(k, v);
                }
                _ => {
                    assert_eq!(t.remove(&k), model.remove(&k).is_some());
                }
            }
            assert_eq!(t.len(), model.len());
            if step % 97 == 0 {
                assert_eq!(t.root(), oracle(&model), "step {step}");
            }
        }
        let root = t.root();
        assert_eq!(root, oracle(&model));
        for i in 0..400 {
            let k = h(i);
            let p = t.prove(&k);
            match model.get(&k) {
                Some(v) => {
                    verify(&root, &k, Some(v), &p).unwrap();
                    assert!(
                        verify(&root, &k, Some(&h(99_999)), &p).is_err(),
                        "wrong value"
                    );
                    assert!(
                        verify(&root, &k, None, &p).is_err(),
                        "present, so no exclusion"
                    );
                }
                None => {
                    verify(&root, &k, None, &p).unwrap();
                    assert!(verify(&root, &k, Some(&h(1)), &p).is_err());
                }
            }
            if let Some(s) = p.siblings.first() {
                let mut bad = p.clone();
                bad.siblings[0] = internal_hash(s, s);
                assert!(
                    verify(&root, &k, model.get(&k), &bad).is_err(),
                    "tampered sibling"
                );
            }
        }
    }

    #[test]
    fn root_is_independent_of_insertion_order() {
        let keys: Vec<Hash> = (0..200).map(h).collect();
        let mut a = SparseMerkleTree::new();
        for k in &keys {
            a.insert(*k, value_hash(k));
        }
        let mut b = SparseMerkleTree::new();
        for k in keys.iter().rev() {
            b.insert(*k, value_hash(k));
        }
        // Insert extra keys and remove them again: no trace left.
        for i in 1000..1100 {
            b.insert(h(i), h(i));
        }
        for i in 1000..1100 {
            b.remove(&h(i));
        }
        assert_eq!(a.root(), b.root());
        assert_eq!(a, b, "the same shape, not only the same root");
    }

    #[test]
    fn bulk_build_equals_incremental() {
        let mut t = SparseMerkleTree::new();
        let mut leaves = Vec::new();
        for i in 0..500 {
            t.insert(h(i), h(i + 1));
            leaves.push((h(i), h(i + 1)));
        }
        leaves.sort();
        let bulk = SparseMerkleTree::from_sorted_leaves(&leaves);
        assert_eq!(bulk, t);
        assert_eq!(
            SparseMerkleTree::from_sorted_leaves(&[]).root(),
            PLACEHOLDER
        );
    }

    #[test]
    fn exclusion_proof_with_a_foreign_leaf_is_refused() {
        let mut t = SparseMerkleTree::new();
        for i in 0..50 {
            t.insert(h(i), h(i));
        }
        let root = t.root();
        let absent = h(777);
        let mut p = t.prove(&absent);
        // Swap in a leaf that is in the tree but not on this path.
        let elsewhere = (0..50)
            .map(h)
            .find(|k| bit(k, 0) != bit(&absent, 0))
            .unwrap();
        p.leaf = Some((elsewhere, elsewhere));
        assert!(verify(&root, &absent, None, &p).is_err());
        let too_long = Proof {
            siblings: vec![PLACEHOLDER; 257],
            leaf: None,
        };
        assert!(verify(&root, &absent, None, &too_long).is_err());
    }
}
