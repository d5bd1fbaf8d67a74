//! The kiosk's stored snapshot file: what a kiosk keeps between syncs, checked again on load.

use ciborium::Value;

use super::bundle::{entries_from, entries_value, hash32};
use super::snapshot::{KioskSnapshot, checked_lists};
use super::{SyncError, malformed};
use crate::cbor::{self, CborForm, Limits, access, text_map};
use crate::chain::block::Header;
use crate::chain::cert::ValidatorSet;
use crate::chain::smt::Hash;
use crate::chain::state::{CHAIN_RECORD, ChainRecord, Entry, Genesis, Tree};
use crate::chain::table::Table;
use crate::crypto::EcPublicKey;

/// Largest snapshot file accepted.
pub const MAX_SNAPSHOT_LEN: usize = 512 * 1024 * 1024;

/// The file format: 2 since entries name their table by a one-byte code.
const FILE_VERSION: u64 = 2;

impl KioskSnapshot {
    /// The kiosk's stored form: the genesis digest it is pinned to, the certified header, the
    /// epoch and validator set, the kiosk subtree and any equivocation evidence. Lists and the
    /// genesis tree are derived again on load.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("v", Value::Integer(FILE_VERSION.into())),
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
            return Err(SyncError::ForeignGenesis);
        }
        if header.chain != snap.chain_id {
            return Err(SyncError::ForeignChain(header.chain));
        }
        let tree = Tree::from_entries(entries);
        if tree.root() != header.kiosk_root {
            return Err(SyncError::SubRootMismatch);
        }
        let record = tree
            .get(Table::Chain, CHAIN_RECORD)
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
        let lists = checked_lists(&tree)?;
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
        if access::uint(W, access::req(W, m, "v")?)? != FILE_VERSION {
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
