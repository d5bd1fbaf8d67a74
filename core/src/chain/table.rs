//! The tables of the registry state and the Merkle path of every entry (`specs/chain-state.md`).
//!
//! A table is a closed set named by a one-byte code, so an entry's path,
//! `SHA-256("civis/path/v2\0" ‖ code ‖ key)`, has exactly one preimage split: no two
//! `(table, key)` pairs share a path. (The first format hashed `tag ‖ 00 ‖ key` with tags and
//! keys that could themselves hold `00`, which let a lying registry re-file a certified entry
//! under another table with the same path.)

use sha2::{Digest, Sha256};

use super::smt::Hash;

/// A table of the registry state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Public tree: DID records (key, key index, next-key commitment, sequence number).
    Did,
    /// Every key a DID has had, by DID URL: in the public tree for every DID, and in the kiosk
    /// tree for the DIDs kiosks must know (governance, accredited issuers and kiosks).
    Key,
    /// Kiosk tree: issuer accreditations.
    Issuer,
    /// Kiosk tree: kiosk accreditations.
    Kiosk,
    /// Kiosk tree: status-list metadata.
    StatusMeta,
    /// Kiosk tree: status-list chunks.
    StatusChunk,
    /// Kiosk tree: elections.
    Election,
    /// The chain record (kiosk tree) and the validator set waiting for the next epoch (public
    /// tree).
    Chain,
    /// Kiosk tree: each governance member's `rotate-key` transactions, by the DID URL of the key
    /// they introduce, as signed (kiosks push them to cards; card-applet.md §3.4).
    Rotation,
}

/// The domain of every entry path.
const PATH_DOMAIN: &[u8] = b"civis/path/v2\0";

impl Table {
    /// Every table, in code order.
    pub const ALL: [Self; 9] = [
        Self::Did,
        Self::Key,
        Self::Issuer,
        Self::Kiosk,
        Self::StatusMeta,
        Self::StatusChunk,
        Self::Election,
        Self::Chain,
        Self::Rotation,
    ];

    /// The one-byte code on the wire and in the path.
    pub const fn code(self) -> u8 {
        match self {
            Self::Did => 1,
            Self::Key => 2,
            Self::Issuer => 3,
            Self::Kiosk => 4,
            Self::StatusMeta => 5,
            Self::StatusChunk => 6,
            Self::Election => 7,
            Self::Chain => 8,
            Self::Rotation => 9,
        }
    }

    /// The table with `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether entries of this table may be in the kiosk tree (what bundles and snapshot files
    /// may carry).
    pub const fn in_kiosk_tree(self) -> bool {
        !matches!(self, Self::Did)
    }

    /// A short name for messages and specs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Did => "did",
            Self::Key => "key",
            Self::Issuer => "issuer",
            Self::Kiosk => "kiosk",
            Self::StatusMeta => "status-meta",
            Self::StatusChunk => "status-chunk",
            Self::Election => "election",
            Self::Chain => "chain",
            Self::Rotation => "rotation",
        }
    }

    /// The path of `key` in this table.
    pub fn path(self, key: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update(PATH_DOMAIN);
        h.update([self.code()]);
        h.update(key);
        h.finalize().into()
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for t in Table::ALL {
            assert_eq!(Table::from_code(t.code()), Some(t));
        }
        assert_eq!(Table::from_code(0), None);
        assert_eq!(Table::from_code(10), None);
    }

    #[test]
    fn a_key_with_zero_bytes_cannot_pose_as_another_table() {
        // The old ambiguity: tag `status-chunk` with key `uri ‖ 00 ‖ n` vs tag
        // `status-chunk\0uri` with key `n`. With one-byte codes the split is fixed.
        let key = [
            b"did:civis:x/status/a".as_slice(),
            &[0],
            &7u64.to_be_bytes(),
        ]
        .concat();
        let paths: Vec<Hash> = Table::ALL.iter().map(|t| t.path(&key)).collect();
        for (i, a) in paths.iter().enumerate() {
            for b in paths.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        // Moving the first key byte into the "table" is no longer expressible: the code is
        // always exactly one byte, so `(StatusChunk, k)` and any other pair differ.
        assert_ne!(
            Table::StatusChunk.path(&key),
            Table::StatusMeta.path(&[&[Table::StatusChunk.code()], key.as_slice()].concat())
        );
    }
}
