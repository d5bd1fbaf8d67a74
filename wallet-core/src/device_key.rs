//! Device signatures through one trait, so a card's key, a phone's secure enclave and a software
//! key for tests are interchangeable.

use civis_core::cose::Signer;
use civis_core::crypto::{EcPublicKey, SoftwareKey};

/// A key that signs for the holder's device (the key an mdoc's MSO binds).
pub trait DeviceKey {
    /// The public key verifiers find in the MSO's `deviceKeyInfo`.
    fn public_key(&self) -> EcPublicKey;
    /// ES256 over `tbs` (the complete COSE `Sig_structure`); `r ‖ s`, 64 bytes.
    fn sign(&self, tbs: &[u8]) -> civis_core::Result<[u8; 64]>;
}

impl DeviceKey for SoftwareKey {
    fn public_key(&self) -> EcPublicKey {
        SoftwareKey::public_key(self).clone()
    }

    fn sign(&self, tbs: &[u8]) -> civis_core::Result<[u8; 64]> {
        Ok(self.sign_es256(tbs))
    }
}

/// Adapts a [`DeviceKey`] to core's COSE [`Signer`].
pub struct AsSigner<'a>(pub &'a dyn DeviceKey);

impl Signer for AsSigner<'_> {
    fn public_key(&self) -> EcPublicKey {
        self.0.public_key()
    }

    fn sign(&self, tbs: &[u8]) -> civis_core::Result<Vec<u8>> {
        Ok(self.0.sign(tbs)?.to_vec())
    }
}
