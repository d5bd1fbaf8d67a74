//! Validator keys: Civis's P-256 types to commonware's, and the participants of a set.

use civis_core::crypto::{EcPublicKey, SoftwareKey};
use commonware_codec::{Copying, DecodeExt as _};
use commonware_cryptography::secp256r1::standard::{PrivateKey, PublicKey};
use commonware_utils::TryCollect as _;
use commonware_utils::ordered::BiMap;

use crate::error::Error;

/// commonware's form of a validator's private key.
pub fn private_key(key: &SoftwareKey) -> Result<PrivateKey, Error> {
    PrivateKey::decode(Copying(key.scalar().as_slice()))
        .map_err(|e| Error::Config(format!("validator key: {e}")))
}

/// commonware's form of a public key.
pub fn public_key(key: &EcPublicKey) -> Result<PublicKey, Error> {
    PublicKey::decode(Copying(key.compressed().as_slice()))
        .map_err(|e| Error::Config(format!("validator public key: {e}")))
}

/// The participant map of a validator set (identity = signing key).
pub fn participants(validators: &[EcPublicKey]) -> Result<BiMap<PublicKey, PublicKey>, Error> {
    validators
        .iter()
        .map(|k| public_key(k).map(|p| (p.clone(), p)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .try_collect()
        .map_err(|_| Error::Config("duplicate validator keys".into()))
}
