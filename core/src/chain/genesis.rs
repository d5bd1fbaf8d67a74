//! `genesis.json`: the text form of [`Genesis`] that validators start from and kiosks pin.
//!
//! Keys are Multikey strings (the same form DID documents use), commitments multibase. The
//! file is strict: unknown fields are refused, so a typo cannot silently yield another chain.

use serde::{Deserialize, Serialize};

use super::state::{DEFAULT_EPOCH_LENGTH, Genesis};
use crate::did::{KeyCommitment, multikey_decode, multikey_encode};
use crate::error::{Error, Result};

/// Largest genesis file accepted.
pub const MAX_GENESIS_LEN: usize = 1024 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GenesisJson {
    chain_id: String,
    time: i64,
    validators: Vec<String>,
    governance: Vec<MemberJson>,
    governance_threshold: usize,
    #[serde(default = "default_epoch_length")]
    epoch_length: u64,
}

fn default_epoch_length() -> u64 {
    DEFAULT_EPOCH_LENGTH
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MemberJson {
    key: String,
    next_key_commitment: String,
}

impl Genesis {
    /// The `genesis.json` text.
    pub fn to_json(&self) -> String {
        let j = GenesisJson {
            chain_id: self.chain_id.clone(),
            time: self.time,
            validators: self.validators.iter().map(multikey_encode).collect(),
            governance: self
                .governance
                .iter()
                .map(|(k, c)| MemberJson {
                    key: multikey_encode(k),
                    next_key_commitment: c.to_multibase(),
                })
                .collect(),
            governance_threshold: self.governance_threshold,
            epoch_length: self.epoch_length,
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string_pretty(&j).unwrap_or_default()
    }

    /// Parse `genesis.json`. The state rules (non-empty sets, threshold in range) are checked when
    /// the genesis state is built.
    pub fn from_json(text: &str) -> Result<Self> {
        const W: &str = "genesis.json";
        if text.len() > MAX_GENESIS_LEN {
            return Err(Error::malformed(W, "larger than 1 MiB"));
        }
        let j: GenesisJson =
            serde_json::from_str(text).map_err(|e| Error::malformed(W, e.to_string()))?;
        Ok(Self {
            chain_id: j.chain_id,
            time: j.time,
            validators: j
                .validators
                .iter()
                .map(|k| multikey_decode(k))
                .collect::<Result<_>>()?,
            governance: j
                .governance
                .iter()
                .map(|m| {
                    Ok((
                        multikey_decode(&m.key)?,
                        KeyCommitment::from_multibase(&m.next_key_commitment)?,
                    ))
                })
                .collect::<Result<_>>()?,
            governance_threshold: j.governance_threshold,
            epoch_length: j.epoch_length,
        })
    }
}
