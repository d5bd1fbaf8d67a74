//! Renewing a locked card's credential (specs/card-applet.md §7.4): the issuer seals the new
//! credential to the card key (ephemeral ECDH, HKDF-SHA-256, AES-256-GCM), the transport-key
//! MAC authorizes the command, and the card answers with a receipt signed by its key, so the
//! issuer learns that the card itself holds the new credential whole.
//!
//! ```text
//! body    = E (ephemeral public key, SEC1 uncompressed, 65 bytes) ‖ AES-256-GCM(K, 0¹², credential, AAD = 84 DC P1 P2)
//! K       = HKDF-SHA-256(salt = serial, IKM = ECDH(e, card key).x,
//!                        info = "civis/card-renew/v1" 00 ‖ counter (u32 BE) ‖ E ‖ card key (uncompressed))
//! receipt = ES256 by the card key over "civis/card-renew-receipt/v1" 00 ‖ serial ‖ counter ‖ P1 ‖ SHA-256(credential)
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{CLA_PERSO, MAX_CREDENTIAL_LEN, ins};
use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};

/// Bytes a sealed credential adds: the ephemeral key and the GCM tag.
pub const OVERHEAD: usize = 65 + 16;
/// Largest sealed body.
pub const MAX_SEALED_LEN: usize = MAX_CREDENTIAL_LEN + OVERHEAD;

fn header(slot: u8) -> [u8; 4] {
    [CLA_PERSO, ins::RENEW_CREDENTIAL, slot, 0]
}

fn key(
    shared: &[u8; 32],
    serial: &[u8; 16],
    counter: u32,
    ephemeral: &[u8; 65],
    card_key: &EcPublicKey,
) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(serial), shared);
    let mut info = Vec::with_capacity(20 + 4 + 65 + 65);
    info.extend_from_slice(b"civis/card-renew/v1\0");
    info.extend_from_slice(&counter.to_be_bytes());
    info.extend_from_slice(ephemeral);
    info.extend_from_slice(card_key.uncompressed());
    let mut k = Zeroizing::new([0u8; 32]);
    if hk.expand(&info, k.as_mut()).is_err() {
        unreachable!("32 bytes is a valid HKDF-SHA-256 output length")
    }
    k
}

/// Seal `credential` for the card with `card_key`, for the command that will carry personalization
/// counter `counter` and go into `slot`. The key is fresh per call, so the all-zero nonce is
/// never used twice under one key.
pub fn seal(
    card_key: &EcPublicKey,
    serial: &[u8; 16],
    counter: u32,
    slot: u8,
    credential: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>> {
    if credential.is_empty() || credential.len() > MAX_CREDENTIAL_LEN {
        return Err(Error::invalid(
            "renewal",
            "credential is empty or too large",
        ));
    }
    let e = SoftwareKey::generate(rng);
    let ephemeral = *e.public_key().uncompressed();
    let k = key(&e.ecdh(card_key), serial, counter, &ephemeral, card_key);
    let sealed = Aes256Gcm::new(k.as_ref().into())
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: credential,
                aad: &header(slot),
            },
        )
        .map_err(|_| Error::invalid("renewal", "encryption failed"))?;
    let mut body = Vec::with_capacity(OVERHEAD + credential.len());
    body.extend_from_slice(&ephemeral);
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// Open a sealed body on the card: the credential, or [`Error::Decrypt`] for anything that is
/// not a body sealed to this card key, serial, counter and slot.
pub fn open(
    card_key: &SoftwareKey,
    serial: &[u8; 16],
    counter: u32,
    slot: u8,
    body: &[u8],
) -> Result<Vec<u8>> {
    if body.len() <= OVERHEAD || body.len() > MAX_SEALED_LEN {
        return Err(Error::Decrypt);
    }
    let (ephemeral, sealed) = body.split_at(65);
    let peer = EcPublicKey::from_sec1(ephemeral).map_err(|_| Error::Decrypt)?;
    let mut e = [0u8; 65];
    e.copy_from_slice(peer.uncompressed());
    let k = key(
        &card_key.ecdh(&peer),
        serial,
        counter,
        &e,
        card_key.public_key(),
    );
    Aes256Gcm::new(k.as_ref().into())
        .decrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: sealed,
                aad: &header(slot),
            },
        )
        .map_err(|_| Error::Decrypt)
}

/// What the card signs once the new credential is stored. The ASCII tag keeps it from ever
/// being a COSE `Sig_structure` (which starts with a CBOR array).
pub fn receipt_message(serial: &[u8; 16], counter: u32, slot: u8, credential: &[u8]) -> Vec<u8> {
    let mut m = b"civis/card-renew-receipt/v1\0".to_vec();
    m.extend_from_slice(serial);
    m.extend_from_slice(&counter.to_be_bytes());
    m.push(slot);
    m.extend_from_slice(&Sha256::digest(credential));
    m
}

/// Check a card's receipt (`r ‖ s`) for a renewal.
pub fn verify_receipt(
    card_key: &EcPublicKey,
    serial: &[u8; 16],
    counter: u32,
    slot: u8,
    credential: &[u8],
    signature: &[u8],
) -> Result<()> {
    card_key
        .verify_es256(
            &receipt_message(serial, counter, slot, credential),
            signature,
        )
        .map_err(|_| Error::BadSignature("renewal receipt"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    const SERIAL: [u8; 16] = [7; 16];

    #[test]
    fn only_the_card_opens_what_was_sealed_for_its_counter_and_slot() {
        let card = SoftwareKey::generate(&mut OsRng);
        let other = SoftwareKey::generate(&mut OsRng);
        let body = seal(card.public_key(), &SERIAL, 5, 0, b"credential", &mut OsRng).unwrap();
        assert_eq!(open(&card, &SERIAL, 5, 0, &body).unwrap(), b"credential");
        assert!(open(&other, &SERIAL, 5, 0, &body).is_err(), "another card");
        assert!(
            open(&card, &SERIAL, 6, 0, &body).is_err(),
            "another counter"
        );
        assert!(open(&card, &SERIAL, 5, 1, &body).is_err(), "another slot");
        assert!(
            open(&card, &[8; 16], 5, 0, &body).is_err(),
            "another serial"
        );
        for i in [0, 64, 65, body.len() - 1] {
            let mut bad = body.clone();
            bad[i] ^= 1;
            assert!(
                open(&card, &SERIAL, 5, 0, &bad).is_err(),
                "flipped byte {i}"
            );
        }
        for n in [0, 65, OVERHEAD, body.len() - 1] {
            assert!(
                open(&card, &SERIAL, 5, 0, &body[..n]).is_err(),
                "cut to {n}"
            );
        }
        assert!(open(&card, &SERIAL, 5, 0, &vec![4; MAX_SEALED_LEN + 1]).is_err());
        // The plaintext does not show through.
        assert!(!body.windows(10).any(|w| w == b"credential"));
    }

    #[test]
    fn a_receipt_names_its_card_counter_slot_and_credential() {
        let card = SoftwareKey::generate(&mut OsRng);
        let sig = card.sign_es256(&receipt_message(&SERIAL, 9, 0, b"new"));
        let pk = card.public_key();
        assert!(verify_receipt(pk, &SERIAL, 9, 0, b"new", &sig).is_ok());
        assert!(verify_receipt(pk, &SERIAL, 8, 0, b"new", &sig).is_err());
        assert!(verify_receipt(pk, &SERIAL, 9, 1, b"new", &sig).is_err());
        assert!(verify_receipt(pk, &SERIAL, 9, 0, b"old", &sig).is_err());
        assert!(verify_receipt(pk, &[1; 16], 9, 0, b"new", &sig).is_err());
        let other = SoftwareKey::generate(&mut OsRng);
        assert!(verify_receipt(other.public_key(), &SERIAL, 9, 0, b"new", &sig).is_err());
    }

    #[test]
    fn an_empty_or_oversized_credential_is_not_sealed() {
        let card = SoftwareKey::generate(&mut OsRng);
        let pk = card.public_key();
        assert!(seal(pk, &SERIAL, 0, 0, b"", &mut OsRng).is_err());
        let big = vec![0; MAX_CREDENTIAL_LEN + 1];
        assert!(seal(pk, &SERIAL, 0, 0, &big, &mut OsRng).is_err());
        let max = vec![0; MAX_CREDENTIAL_LEN];
        let body = seal(pk, &SERIAL, 0, 0, &max, &mut OsRng).unwrap();
        assert_eq!(body.len(), MAX_SEALED_LEN);
        assert_eq!(open(&card, &SERIAL, 0, 0, &body).unwrap(), max);
    }
}
