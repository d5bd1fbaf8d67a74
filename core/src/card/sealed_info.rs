//! GET DATA on a locked card (specs/card-applet.md §4.3): the card's facts — serial, keys,
//! counter, tries — are stable across taps, so a locked card gives them only sealed to its
//! batch's transport key, under a fresh random nonce: a reader without the key sees different
//! bytes at every read, and the issuer (which keeps the key) opens them.
//!
//! ```text
//! K      = HKDF-SHA-256(salt = none, IKM = transport key, info = "civis/card-info/v1")
//! sealed = nonce (12 random bytes) ‖ AES-256-GCM(K, nonce, padded, AAD = "civis/card-info/v1")
//! padded = len (u16 BE) ‖ CardInfo bytes ‖ zeros, 512 bytes in all
//! ```
//!
//! The padding keeps the length the same for every card: CardInfo's length varies with the
//! counter, the tries, the slots and the time floor, and a stable length per card would be a
//! few bits of identity.

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
/// The padded plaintext's length (a CardInfo is at most about 260 bytes).
const PADDED_LEN: usize = 512;

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
    let info = info.encode();
    let len = u16::try_from(info.len()).unwrap_or(u16::MAX);
    let mut plain = len.to_be_bytes().to_vec();
    plain.extend_from_slice(&info);
    plain.resize(PADDED_LEN.max(plain.len()), 0);
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
    let (len, rest) = plain
        .split_at_checked(2)
        .ok_or_else(|| Error::malformed("sealed card info", "too short"))?;
    let len = <[u8; 2]>::try_from(len)
        .map(|b| usize::from(u16::from_be_bytes(b)))
        .map_err(|_| Error::malformed("sealed card info", "too short"))?;
    let info = rest
        .get(..len)
        .ok_or_else(|| Error::malformed("sealed card info", "length"))?;
    CardInfo::decode(info)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::OsRng;

    fn info(counter: u32, floor: i64, slots: Vec<u8>) -> CardInfo {
        CardInfo {
            version: "1.0".into(),
            serial: [1; 16],
            locked: true,
            perso_counter: counter,
            public_key: Some(vec![4; 65]),
            vrf_key: Some(vec![2; 33]),
            pin_tries: Some(3),
            puk_tries: Some(10),
            credentials: slots,
            has_root: true,
            time_floor: floor,
        }
    }

    #[test]
    fn every_card_seals_to_the_same_length_and_only_its_batch_opens_it() {
        let k = TransportKey([9; 32]);
        let small = info(1, 0, vec![0]);
        let large = info(u32::MAX, i64::MAX, vec![0, 1, 2, 3]);
        let a = seal(&k, &small, &mut OsRng);
        let b = seal(&k, &large, &mut OsRng);
        assert_eq!(a.len(), b.len());
        assert_ne!(seal(&k, &small, &mut OsRng), a, "a fresh nonce each time");
        assert_eq!(open(&k, &a).unwrap(), small);
        assert_eq!(open(&k, &b).unwrap(), large);
        assert!(open(&TransportKey([8; 32]), &a).is_err());
        for i in 0..a.len() {
            let mut bad = a.clone();
            bad[i] ^= 1;
            assert!(open(&k, &bad).is_err());
        }
        assert!(open(&k, &a[..11]).is_err());
    }
}
