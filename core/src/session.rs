//! ISO 18013-5 §9.1.1 session encryption and §9.1.3 MAC keys.
//!
//! Keys: HKDF-SHA-256 over the ECDH shared secret (x coordinate), salt = SHA-256 of
//! SessionTranscriptBytes, info `"SKReader"`, `"SKDevice"` or `"EMacKey"`, 32 bytes.
//! Messages: AES-256-GCM, no AAD, IV = 8-byte identifier (reader all zero, mdoc `…01`) followed by
//! a 4-byte big-endian message counter starting at 1, one counter per direction.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};

/// Which side of the session we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The mdoc reader (kiosk).
    Reader,
    /// The mdoc (card, wallet).
    Device,
}

/// HKDF-SHA-256 of `shared_secret` with salt SHA-256(`transcript_tagged`) and `info`.
pub fn derive_key(
    shared_secret: &[u8],
    session_transcript_bytes: &[u8],
    info: &[u8],
) -> Zeroizing<[u8; 32]> {
    let salt = Sha256::digest(session_transcript_bytes);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared_secret);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = hk.expand(info, out.as_mut());
    out
}

/// `EMacKey` for deviceMac: ECDH of our private key with the peer's public key.
pub fn emac_key(
    own: &SoftwareKey,
    peer: &EcPublicKey,
    session_transcript_bytes: &[u8],
) -> Zeroizing<[u8; 32]> {
    let shared = Zeroizing::new(own.ecdh(peer));
    derive_key(shared.as_ref(), session_transcript_bytes, b"EMacKey")
}

/// An established, encrypted session.
pub struct Session {
    role: Role,
    sk_reader: Zeroizing<[u8; 32]>,
    sk_device: Zeroizing<[u8; 32]>,
    sent: u32,
    received: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Derive both session keys from our ephemeral key, the peer's, and SessionTranscriptBytes.
    pub fn new(
        role: Role,
        own: &SoftwareKey,
        peer: &EcPublicKey,
        session_transcript_bytes: &[u8],
    ) -> Self {
        let shared = Zeroizing::new(own.ecdh(peer));
        Self::from_shared_secret(role, shared.as_ref(), session_transcript_bytes)
    }

    /// Derive from a shared secret computed elsewhere (a card computes ECDH inside).
    pub fn from_shared_secret(role: Role, shared: &[u8], session_transcript_bytes: &[u8]) -> Self {
        Self {
            role,
            sk_reader: derive_key(shared, session_transcript_bytes, b"SKReader"),
            sk_device: derive_key(shared, session_transcript_bytes, b"SKDevice"),
            sent: 0,
            received: 0,
        }
    }

    /// SKReader (for test vectors).
    pub fn sk_reader(&self) -> &[u8; 32] {
        &self.sk_reader
    }

    /// SKDevice (for test vectors).
    pub fn sk_device(&self) -> &[u8; 32] {
        &self.sk_device
    }

    fn nonce(sender: Role, counter: u32) -> [u8; 12] {
        let mut iv = [0u8; 12];
        if sender == Role::Device {
            iv[7] = 1;
        }
        iv[8..].copy_from_slice(&counter.to_be_bytes());
        iv
    }

    fn key_for(&self, sender: Role) -> &[u8; 32] {
        match sender {
            Role::Reader => &self.sk_reader,
            Role::Device => &self.sk_device,
        }
    }

    /// Encrypt our next message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let counter = self
            .sent
            .checked_add(1)
            .ok_or(Error::invalid("session", "message counter exhausted"))?;
        let cipher = Aes256Gcm::new(self.key_for(self.role).into());
        let out = cipher
            .encrypt(
                Nonce::from_slice(&Self::nonce(self.role, counter)),
                plaintext,
            )
            .map_err(|_| Error::invalid("session", "encryption failed"))?;
        self.sent = counter;
        Ok(out)
    }

    /// Decrypt the peer's next message. A replayed or reordered message fails, and the counter
    /// does not advance, so the session stays usable for the right message.
    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let peer = match self.role {
            Role::Reader => Role::Device,
            Role::Device => Role::Reader,
        };
        let counter = self.received.checked_add(1).ok_or(Error::Decrypt)?;
        let cipher = Aes256Gcm::new(self.key_for(peer).into());
        let out = cipher
            .decrypt(Nonce::from_slice(&Self::nonce(peer, counter)), ciphertext)
            .map_err(|_| Error::Decrypt)?;
        self.received = counter;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_replay_fails() {
        let mut rng = rand_core::OsRng;
        let reader = SoftwareKey::generate(&mut rng);
        let device = SoftwareKey::generate(&mut rng);
        let st = b"transcript";
        let mut r = Session::new(Role::Reader, &reader, device.public_key(), st);
        let mut d = Session::new(Role::Device, &device, reader.public_key(), st);
        let c1 = r.encrypt(b"request").unwrap();
        assert_eq!(d.decrypt(&c1).unwrap(), b"request");
        assert_eq!(
            d.decrypt(&c1).unwrap_err(),
            Error::Decrypt,
            "replay must fail"
        );
        let reply = d.encrypt(b"response").unwrap();
        assert_eq!(r.decrypt(&reply).unwrap(), b"response");
    }
}
