//! The registry's HTTP bodies (`specs/registry-api.md`): what a node sends and what clients
//! read, as typed structs, so the node, the CLI, the issuer and the kiosk share one definition.
//!
//! Binary fields travel as lowercase hex. Nothing here is trusted by being decoded: a DID answer
//! is only as good as [`DidAnswer::verify`] makes it.

use serde::{Deserialize, Serialize};

use crate::cbor::CborForm as _;
use crate::chain::block::Header;
use crate::chain::smt::{self, Hash};
use crate::chain::state::DidRecord;
use crate::chain::table::Table;
use crate::did::{Did, DidDocument};
use crate::error::{Error, Result};

/// Hex (de)serialization of byte strings.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as lowercase hex.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Deserialize from hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// Hex (de)serialization of 32-byte hashes.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as lowercase hex.
    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Deserialize from 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <&str>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod hex32_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(list: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        list.iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(t, &mut out).map(|()| out)
            })
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<&str>::deserialize(d)?
            .map(|t| hex::decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// An error answer: `{"error": kind, "message": text}` with an HTTP status that says whose fault
/// it is (`specs/registry-api.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable kind: `malformed`, `too_large`, `refused`, `conflict`, `busy`, `rate_limited`,
    /// `not_found`, `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The answer to `POST /v1/transactions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The transaction id: SHA-256 of its bytes, hex.
    pub id: String,
    /// Always `pending`.
    pub status: String,
}

/// What happened to a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TxOutcome {
    /// Waiting for a block.
    Pending,
    /// In the finalized block at `height`.
    Included {
        /// The block.
        height: u64,
    },
    /// Dropped, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The answer to `GET /v1/transactions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAnswer {
    /// The transaction id.
    pub id: String,
    /// Its outcome.
    #[serde(flatten)]
    pub outcome: TxOutcome,
}

/// A sparse-Merkle proof in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// One sibling hash per level, from the root down.
    #[serde(with = "hex32_list")]
    pub siblings: Vec<Hash>,
    /// For a non-inclusion proof, the other leaf found on the path.
    pub leaf: Option<ProofLeaf>,
}

/// The leaf a proof ends at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofLeaf {
    /// Its path.
    #[serde(with = "hex32")]
    pub path: Hash,
    /// The hash of its value.
    #[serde(with = "hex32")]
    pub value_hash: Hash,
}

impl From<&smt::Proof> for MerkleProof {
    fn from(p: &smt::Proof) -> Self {
        Self {
            siblings: p.siblings.clone(),
            leaf: p
                .leaf
                .map(|(path, value_hash)| ProofLeaf { path, value_hash }),
        }
    }
}

impl From<&MerkleProof> for smt::Proof {
    fn from(p: &MerkleProof) -> Self {
        Self {
            siblings: p.siblings.clone(),
            leaf: p.leaf.as_ref().map(|l| (l.path, l.value_hash)),
        }
    }
}

/// The proof part of a DID answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DidProof {
    /// Always `public`: DID records live in the public tree.
    pub tree: String,
    /// The encoded DID record (the proven value).
    #[serde(with = "hex_bytes")]
    pub record: Vec<u8>,
    /// Its inclusion proof against the header's public root.
    pub merkle: MerkleProof,
}

/// The answer to `GET /v1/dids/{did}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DidAnswer {
    /// The DID.
    pub did: String,
    /// The node's rendering of the DID document, for people; [`DidAnswer::verify`] builds the
    /// document from the proven record instead.
    pub document: serde_json::Value,
    /// The next sequence number the chain expects from this DID.
    pub seq: u64,
    /// The next free sequence number counting the node's pending transactions.
    pub next_seq: u64,
    /// Height of the header the proof is against.
    pub height: u64,
    /// That header (CBOR).
    #[serde(with = "hex_bytes")]
    pub header: Vec<u8>,
    /// Its state root.
    #[serde(with = "hex32")]
    pub state_root: Hash,
    /// The record and its proof.
    pub proof: DidProof,
}

/// A DID answer whose record was proven against the header it names.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDid {
    /// The header the record is proven against. Its trust is the caller's to establish (a
    /// certificate, or a synced kiosk snapshot at that height): the proof shows only that the
    /// record is the one this header commits to.
    pub header: Header,
    /// The proven record.
    pub record: DidRecord,
    /// The DID document built from the proven record.
    pub document: DidDocument,
}

impl DidAnswer {
    /// Check the answer for `did`: the record's inclusion proof against the public root of the
    /// header it names, the record decoded. Returns the document built from that record, never
    /// the unproven `document` field.
    pub fn verify(&self, did: &Did) -> Result<VerifiedDid> {
        const W: &str = "DID answer";
        if self.did != did.as_str() {
            return Err(Error::malformed(W, "answers for another DID"));
        }
        let header = Header::from_slice(&self.header)?;
        if header.height != self.height {
            return Err(Error::malformed(W, "height differs from its header"));
        }
        if self.proof.tree != "public" {
            return Err(Error::malformed(W, "DID records live in the public tree"));
        }
        smt::verify(
            &header.public_root,
            &Table::Did.path(did.as_str().as_bytes()),
            Some(&smt::value_hash(&self.proof.record)),
            &(&self.proof.merkle).into(),
        )
        .map_err(|e| Error::malformed(W, format!("proof does not verify: {e}")))?;
        let record = DidRecord::decode(&self.proof.record)?;
        // The plain fields must say what the proven parts say.
        if header.state_root() != self.state_root || record.seq != self.seq {
            return Err(Error::malformed(
                W,
                "stateRoot or seq differs from the proven header and record",
            ));
        }
        Ok(VerifiedDid {
            document: record.document(did),
            header,
            record,
        })
    }
}

/// One transaction of a block answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockTx {
    /// Its id.
    pub id: String,
    /// Its COSE_Sign1 bytes.
    #[serde(with = "hex_bytes")]
    pub cose: Vec<u8>,
}

/// The answer to `GET /v1/blocks/{height}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAnswer {
    /// Height.
    pub height: u64,
    /// Header digest.
    #[serde(with = "hex32")]
    pub digest: Hash,
    /// Parent digest.
    #[serde(with = "hex32")]
    pub parent: Hash,
    /// Block time (Unix seconds).
    pub time: i64,
    /// Consensus epoch.
    pub epoch: u64,
    /// Combined state root.
    #[serde(with = "hex32")]
    pub state_root: Hash,
    /// Kiosk sub-root.
    #[serde(with = "hex32")]
    pub kiosk_root: Hash,
    /// Public sub-root.
    #[serde(with = "hex32")]
    pub public_root: Hash,
    /// Transactions in order.
    pub transactions: Vec<BlockTx>,
    /// The header (CBOR).
    #[serde(with = "hex_bytes")]
    pub header: Vec<u8>,
    /// Its finalization certificate, if the block was finalized directly.
    #[serde(with = "hex_opt")]
    pub finalization: Option<Vec<u8>>,
}

/// The mempool part of a health answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolHealth {
    /// Pending transactions.
    pub transactions: usize,
    /// Pending bytes.
    pub bytes: usize,
}

/// The answer to `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// Chain id.
    pub chain_id: String,
    /// Committed height.
    pub height: u64,
    /// Consensus epoch of that block.
    pub epoch: u64,
    /// Its state root.
    #[serde(with = "hex32")]
    pub state_root: Hash,
    /// Its time.
    pub block_time: i64,
    /// Seconds since then.
    pub age_secs: i64,
    /// This node's validator index, if it is one.
    pub validator: Option<usize>,
    /// The mempool.
    pub mempool: MempoolHealth,
}

/// The IETF status list part of a status-list answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListBody {
    /// Bits per entry.
    pub bits: u8,
    /// The zlib-compressed list, base64url without padding.
    pub lst: String,
}

/// The answer to `GET /v1/status-lists/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListAnswer {
    /// The chain-assigned list number.
    pub id: u64,
    /// The list's URI.
    pub uri: String,
    /// Entries.
    pub size: u64,
    /// Height it was read at.
    pub height: u64,
    /// The list.
    pub status_list: StatusListBody,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::chain::state::{Genesis, State};
    use crate::chain::tx::{Op, SignedTx, Tx};
    use crate::crypto::SoftwareKey;
    use crate::did::KeyCommitment;

    /// A state with one DID besides governance, and the node's answer for it.
    fn answer() -> (Did, DidAnswer) {
        let k = |i: u8| SoftwareKey::from_scalar(&[i; 32]).unwrap();
        let genesis = Genesis {
            chain_id: "api".into(),
            time: 0,
            validators: vec![k(1).public_key().clone()],
            governance: vec![(
                k(2).public_key().clone(),
                KeyCommitment::to(k(3).public_key()),
            )],
            governance_threshold: 1,
            epoch_length: 100,
        };
        let mut state = State::genesis(&genesis).unwrap();
        let next = KeyCommitment::to(k(5).public_key());
        let did = Did::from_inception(k(4).public_key(), &next);
        let tx = SignedTx::sign(
            Tx {
                chain: "api".into(),
                seq: 0,
                op: Op::CreateDid {
                    key: k(4).public_key().clone(),
                    next,
                },
            },
            did.key_url(1),
            &k(4),
        )
        .unwrap();
        state.apply(&tx, 1).unwrap();
        let header = Header::genesis(&state, 1);
        let key = did.as_str().as_bytes();
        let record = state.public_tree().get(Table::Did, key).unwrap().to_vec();
        let answer = DidAnswer {
            did: did.to_string(),
            document: serde_json::Value::Null,
            seq: 0,
            next_seq: 0,
            height: header.height,
            header: header.to_vec(),
            state_root: header.state_root(),
            proof: DidProof {
                tree: "public".into(),
                record,
                merkle: MerkleProof::from(&state.public_tree().prove(Table::Did, key)),
            },
        };
        (did, answer)
    }

    #[test]
    fn a_proven_answer_verifies_and_every_lie_is_refused() {
        let (did, good) = answer();
        let verified = good.verify(&did).unwrap();
        assert_eq!(verified.document.id, did);
        // Through JSON, as a client reads it.
        let json = serde_json::to_string(&good).unwrap();
        let back: DidAnswer = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(&did).unwrap(), verified);

        let (other, _) = {
            let k = SoftwareKey::from_scalar(&[9; 32]).unwrap();
            let d = Did::from_inception(k.public_key(), &KeyCommitment::to(k.public_key()));
            (d, ())
        };
        assert!(good.verify(&other).is_err(), "an answer for another DID");
        let mut lie = good.clone();
        let last = lie.proof.record.len() - 1;
        lie.proof.record[last] ^= 1;
        assert!(lie.verify(&did).is_err(), "a changed record");
        let mut lie = good.clone();
        lie.proof.merkle.siblings.push([0; 32]);
        assert!(lie.verify(&did).is_err(), "a changed proof");
        let mut lie = good.clone();
        lie.seq = 7;
        assert!(lie.verify(&did).is_err(), "a seq the record does not say");
        let mut lie = good.clone();
        lie.state_root = [1; 32];
        assert!(
            lie.verify(&did).is_err(),
            "a state root the header does not say"
        );
        let mut lie = good;
        lie.proof.tree = "kiosk".into();
        assert!(lie.verify(&did).is_err(), "another tree");
    }
}
