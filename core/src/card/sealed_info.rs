//! GET DATA on a locked card (specs/card-applet.md §4.3): the card's facts — serial, keys,
//! counter, tries — are stable across taps, so a locked card gives them only sealed to its
//! batch's transport key, under a fresh random nonce: a reader without the key sees different
//! bytes at every read, and the issuer (which keeps the key) opens them.
//!
//! ```text
//! K      = HKDF-SHA-256(salt = none, IKM = transport key, info = "civis/card-info/v1")
//! sealed = nonce (12 random bytes) ‖ AES-256-GCM(K, nonce, CardInfo bytes, AAD = "civis/card-info/v1")
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{CardInfo, TransportKey};
use crate::error::{Error, Result};

const DOMAIN: &[u8] = b"civis/card-info/v1";
/// Largest sealed info: the CardInfo decoder's limit plus nonce and tag.
pub const MAX_SEALED_INFO_LEN: usize = 1024 + 12 + 16;

fn key(transport: &TransportKey) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, &transport.0);
    let mut k = Zeroizing::new([0u8; 32]);
    if hk.expand(DOMAIN, k.as_mut()).is_err() {
        unreachable!("32 bytes is a valid HKDF-SHA-256 output length")
    }
    k
}

/// Seal `info` to the batch's transport key.
pub fn seal(transport: &TransportKey, info: &CardInfo, rng: &mut impl CryptoRngCore) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let k = key(transport);
    let plain = info.encode();
    let sealed = Aes256Gcm::new(k.as_ref().into()).encrypt(
        Nonce::from_slice(&nonce),
        Payload {
            msg: &plain,
            aad: DOMAIN,
        },
    );
    let mut out = nonce.to_vec();
    // Encryption of a kilobyte cannot fail; an empty seal would fail to open.
    out.extend(sealed.unwrap_or_default());
    out
}

/// Open sealed info with the batch's transport key; any other key, a flipped bit or a cut fails.
pub fn open(transport: &TransportKey, sealed: &[u8]) -> Result<CardInfo> {
    if sealed.len() > MAX_SEALED_INFO_LEN {
        return Err(Error::malformed("sealed card info", "too long"));
    }
    let Some((nonce, body)) = sealed.split_at_checked(12) else {
        return Err(Error::malformed("sealed card info", "too short"));
    };
    let k = key(transport);
    let plain = Aes256Gcm::new(k.as_ref().into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: DOMAIN,
            },
        )
        .map_err(|_| Error::Decrypt)?;
    CardInfo::decode(&plain)
}
