//! Finality certificates of the registry chain: commonware simplex `Finalization` under the
//! secp256r1 signing scheme, verified byte for byte from the pinned validator set.
//!
//! Wire form (`specs/chain-certificate.md`):
//! `Proposal = varint(epoch) || varint(view) || varint(parent_view) || payload[32]` (LEB128,
//! canonical); `Finalization = Proposal || bitlen: u64 BE || bitmap[ceil(n/8)] (bit i = byte i/8,
//! mask 1 << (i % 8); trailing bits zero) || varint(count) || count × signature[64]` with
//! signatures in ascending signer order. Each signature is ECDSA P-256 / SHA-256, low-S, r || s,
//! over `varint(len(ns_f)) || ns_f || Proposal` where `ns_f = namespace || "_FINALIZE"`.
//! A signer's index is the position of its compressed SEC1 key in the byte-sorted set.

use p256::ecdsa::Signature;

use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::error::{Error, Result};

/// Suffix commonware appends to the chain namespace for finalize votes.
pub const FINALIZE_SUFFIX: &[u8] = b"_FINALIZE";
/// Largest validator set accepted when decoding.
pub const MAX_VALIDATORS: usize = 1024;

/// LEB128 varint as commonware's codec writes it.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Read a canonical LEB128 varint (no redundant trailing zero groups, at most 10 bytes).
pub fn read_varint(input: &mut &[u8]) -> Result<u64> {
    let mut v: u64 = 0;
    for i in 0..10u32 {
        let (&b, rest) = input
            .split_first()
            .ok_or_else(|| Error::malformed("varint", "truncated"))?;
        *input = rest;
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(Error::malformed("varint", "overflows u64"));
        }
        v |= low << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(Error::malformed("varint", "not canonical"));
            }
            return Ok(v);
        }
    }
    Err(Error::malformed("varint", "too long"))
}

/// The validator set a certificate is checked against, with its chain namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    namespace: Vec<u8>,
    keys: Vec<EcPublicKey>,
}

impl ValidatorSet {
    /// Sort the keys as commonware does (by encoded bytes); duplicates and empty sets are refused.
    pub fn new(namespace: &[u8], mut keys: Vec<EcPublicKey>) -> Result<Self> {
        if keys.is_empty() || keys.len() > MAX_VALIDATORS {
            return Err(Error::invalid("validator set", "needs 1..=1024 validators"));
        }
        keys.sort_by_key(EcPublicKey::compressed);
        if keys.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Err(Error::invalid("validator set", "a key appears twice"));
        }
        Ok(Self {
            namespace: namespace.to_vec(),
            keys,
        })
    }

    /// Keys in signer-index order.
    pub fn keys(&self) -> &[EcPublicKey] {
        &self.keys
    }

    /// Number of validators n.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty (never, once constructed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signatures needed: n − ⌊(n − 1) / 3⌋ (2f + 1 when n = 3f + 1).
    pub fn quorum(&self) -> usize {
        let n = self.keys.len();
        n.saturating_sub(n.saturating_sub(1) / 3)
    }

    /// Certify `proposal` with the validators' own software keys (test networks and tools): one
    /// low-S signature per key, in signer-index order. Refuses a key outside the set or twice.
    pub fn certify(&self, proposal: Proposal, keys: &[&SoftwareKey]) -> Result<Finalization> {
        const W: &str = "certify";
        let msg = self.finalize_message(&proposal);
        let mut signed = keys
            .iter()
            .map(|k| {
                let index = self
                    .keys
                    .iter()
                    .position(|v| v == k.public_key())
                    .ok_or_else(|| Error::invalid(W, "a key is not in the validator set"))?;
                let raw = k.sign_es256(&msg);
                let sig = Signature::from_slice(&raw)
                    .map_err(|_| Error::invalid(W, "signature out of range"))?;
                let mut low = [0u8; 64];
                low.copy_from_slice(&sig.normalize_s().unwrap_or(sig).to_bytes());
                Ok((index, low))
            })
            .collect::<Result<Vec<_>>>()?;
        signed.sort_by_key(|(i, _)| *i);
        if signed.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
            return Err(Error::invalid(W, "a validator signs twice"));
        }
        Ok(Finalization {
            proposal,
            signers: signed.iter().map(|(i, _)| *i).collect(),
            signatures: signed.into_iter().map(|(_, s)| s).collect(),
            bit_len: self.keys.len() as u64,
        })
    }

    /// The bytes a validator signs to finalize `proposal`.
    pub fn finalize_message(&self, proposal: &Proposal) -> Vec<u8> {
        let mut ns = self.namespace.clone();
        ns.extend_from_slice(FINALIZE_SUFFIX);
        let mut out = Vec::with_capacity(ns.len().saturating_add(64));
        write_varint(&mut out, ns.len() as u64);
        out.extend_from_slice(&ns);
        out.extend(proposal.encode());
        out
    }
}

/// What a validator votes on: a block digest at (epoch, view) with its parent's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// Epoch (validator-set generation).
    pub epoch: u64,
    /// Consensus view.
    pub view: u64,
    /// View of the parent block.
    pub parent_view: u64,
    /// The block digest.
    pub payload: [u8; 32],
}

impl Proposal {
    /// Wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 30);
        write_varint(&mut out, self.epoch);
        write_varint(&mut out, self.view);
        write_varint(&mut out, self.parent_view);
        out.extend_from_slice(&self.payload);
        out
    }

    fn read(input: &mut &[u8]) -> Result<Self> {
        let epoch = read_varint(input)?;
        let view = read_varint(input)?;
        let parent_view = read_varint(input)?;
        let (payload, rest) = input
            .split_first_chunk::<32>()
            .ok_or_else(|| Error::malformed("proposal", "truncated payload"))?;
        *input = rest;
        Ok(Self {
            epoch,
            view,
            parent_view,
            payload: *payload,
        })
    }
}

/// A finalization certificate: a proposal and a quorum of finalize signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalization {
    /// What was finalized.
    pub proposal: Proposal,
    /// Signer indexes, ascending.
    pub signers: Vec<usize>,
    /// Signatures in the same order.
    pub signatures: Vec<[u8; 64]>,
    /// The bitmap length as encoded (must equal the set size).
    pub bit_len: u64,
}

impl Finalization {
    /// Decode, refusing anything but the exact canonical form.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const W: &str = "finalization";
        let mut input = bytes;
        let proposal = Proposal::read(&mut input)?;
        let (len, rest) = input
            .split_first_chunk::<8>()
            .ok_or_else(|| Error::malformed(W, "truncated bitmap length"))?;
        input = rest;
        let bit_len = u64::from_be_bytes(*len);
        let n = usize::try_from(bit_len)
            .ok()
            .filter(|n| *n <= MAX_VALIDATORS)
            .ok_or_else(|| Error::malformed(W, "bitmap longer than the largest validator set"))?;
        let (bitmap, rest) = input
            .split_at_checked(n.div_ceil(8))
            .ok_or_else(|| Error::malformed(W, "truncated bitmap"))?;
        input = rest;
        let mut signers = Vec::new();
        for i in 0..bitmap.len().saturating_mul(8) {
            let set = bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
            if set && i >= n {
                return Err(Error::malformed(W, "bits set past the bitmap length"));
            }
            if set {
                signers.push(i);
            }
        }
        let count = read_varint(&mut input)?;
        if count == 0 || usize::try_from(count).ok() != Some(signers.len()) {
            return Err(Error::malformed(
                W,
                "signature count does not match the signers",
            ));
        }
        let mut signatures = Vec::with_capacity(signers.len());
        for _ in 0..signers.len() {
            let (sig, rest) = input
                .split_first_chunk::<64>()
                .ok_or_else(|| Error::malformed(W, "truncated signature"))?;
            signatures.push(*sig);
            input = rest;
        }
        if !input.is_empty() {
            return Err(Error::malformed(W, "trailing bytes"));
        }
        Ok(Self {
            proposal,
            signers,
            signatures,
            bit_len,
        })
    }

    /// Wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.proposal.encode();
        out.extend_from_slice(&self.bit_len.to_be_bytes());
        let n = usize::try_from(self.bit_len).unwrap_or(0);
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for &i in &self.signers {
            if let Some(b) = bitmap.get_mut(i / 8) {
                *b |= 1 << (i % 8);
            }
        }
        out.extend(bitmap);
        write_varint(&mut out, self.signatures.len() as u64);
        for s in &self.signatures {
            out.extend_from_slice(s);
        }
        out
    }

    /// Check against `set`: bitmap length n, a quorum of distinct signers, every signature
    /// low-S and valid under its signer's key.
    pub fn verify(&self, set: &ValidatorSet) -> Result<()> {
        const W: &str = "finalization";
        if usize::try_from(self.bit_len).ok() != Some(set.len()) {
            return Err(Error::invalid(
                W,
                "bitmap length differs from the validator set",
            ));
        }
        if self.signers.len() != self.signatures.len()
            || self
                .signers
                .windows(2)
                .any(|w| matches!(w, [a, b] if a >= b))
        {
            return Err(Error::invalid(W, "signers must be distinct and ascending"));
        }
        if self.signers.len() < set.quorum() {
            return Err(Error::invalid(
                W,
                format!("{} signers, quorum is {}", self.signers.len(), set.quorum()),
            ));
        }
        let msg = set.finalize_message(&self.proposal);
        for (&i, sig) in self.signers.iter().zip(&self.signatures) {
            let key = set
                .keys()
                .get(i)
                .ok_or_else(|| Error::invalid(W, "signer outside the validator set"))?;
            let parsed = Signature::from_slice(sig)
                .map_err(|_| Error::BadSignature("finalize signature"))?;
            if parsed.normalize_s().is_some() {
                return Err(Error::BadSignature("finalize signature (high S)"));
            }
            key.verify_es256(&msg, sig)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SoftwareKey;

    fn keys(n: u8) -> Vec<SoftwareKey> {
        (1..=n)
            .map(|i| SoftwareKey::from_scalar(&[i; 32]).unwrap())
            .collect()
    }

    fn low_s(sig: [u8; 64]) -> [u8; 64] {
        let s = Signature::from_slice(&sig).unwrap();
        let mut out = [0u8; 64];
        out.copy_from_slice(&s.normalize_s().unwrap_or(s).to_bytes());
        out
    }

    fn certify(
        set: &ValidatorSet,
        all: &[SoftwareKey],
        p: Proposal,
        who: &[usize],
    ) -> Finalization {
        let msg = set.finalize_message(&p);
        let signatures = who
            .iter()
            .map(|&i| {
                let k = all
                    .iter()
                    .find(|k| k.public_key() == &set.keys()[i])
                    .unwrap();
                low_s(k.sign_es256(&msg))
            })
            .collect();
        Finalization {
            proposal: p,
            signers: who.to_vec(),
            signatures,
            bit_len: set.len() as u64,
        }
    }

    #[test]
    fn message_bytes_match_the_commonware_layout() {
        let set = ValidatorSet::new(
            b"REGISTRY_V1",
            keys(4).iter().map(|k| k.public_key().clone()).collect(),
        )
        .unwrap();
        let p = Proposal {
            epoch: 0,
            view: 300,
            parent_view: 299,
            payload: [0xab; 32],
        };
        let mut want = vec![0x14];
        want.extend_from_slice(b"REGISTRY_V1_FINALIZE");
        want.extend_from_slice(&[0x00, 0xac, 0x02, 0xab, 0x02]);
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(set.finalize_message(&p), want);
        assert_eq!(set.quorum(), 3);
    }

    #[test]
    fn quorum_certificate_round_trips_and_verifies() {
        let all = keys(4);
        let set = ValidatorSet::new(
            b"REGISTRY_V1",
            all.iter().map(|k| k.public_key().clone()).collect(),
        )
        .unwrap();
        let p = Proposal {
            epoch: 0,
            view: 300,
            parent_view: 299,
            payload: [7; 32],
        };
        let fin = certify(&set, &all, p, &[0, 1, 3]);
        let bytes = fin.encode();
        assert_eq!(bytes.len(), 239, "3-of-4 finalization size");
        let back = Finalization::decode(&bytes).unwrap();
        assert_eq!(back, fin);
        back.verify(&set).unwrap();
    }

    #[test]
    fn refusals() {
        let all = keys(4);
        let set = ValidatorSet::new(
            b"REGISTRY_V1",
            all.iter().map(|k| k.public_key().clone()).collect(),
        )
        .unwrap();
        let p = Proposal {
            epoch: 0,
            view: 9,
            parent_view: 8,
            payload: [1; 32],
        };
        // Below quorum.
        assert!(certify(&set, &all, p, &[0, 2]).verify(&set).is_err());
        // A signer counted twice.
        let mut twice = certify(&set, &all, p, &[0, 1, 2]);
        twice.signers[2] = 1;
        twice.signatures[2] = twice.signatures[1];
        assert!(twice.verify(&set).is_err());
        // A forged signature.
        let mut forged = certify(&set, &all, p, &[0, 1, 2]);
        forged.signatures[1][5] ^= 1;
        assert!(forged.verify(&set).is_err());
        // Signed by outsiders in the right slots.
        let outsiders = keys(8).split_off(4);
        let other = ValidatorSet::new(
            b"REGISTRY_V1",
            outsiders.iter().map(|k| k.public_key().clone()).collect(),
        )
        .unwrap();
        assert!(
            certify(&other, &outsiders, p, &[0, 1, 2])
                .verify(&set)
                .is_err()
        );
        // Another chain's namespace.
        let foreign = ValidatorSet::new(
            b"OTHER",
            all.iter().map(|k| k.public_key().clone()).collect(),
        )
        .unwrap();
        assert!(certify(&foreign, &all, p, &[0, 1, 2]).verify(&set).is_err());
        // High-S form of a valid signature.
        let mut high = certify(&set, &all, p, &[0, 1, 2]);
        let s = Signature::from_slice(&high.signatures[0]).unwrap();
        let (r, s_low) = s.split_scalars();
        let neg = -*s_low;
        let high_sig = Signature::from_scalars(r.to_bytes(), neg.to_bytes()).unwrap();
        high.signatures[0].copy_from_slice(&high_sig.to_bytes());
        assert!(high.verify(&set).is_err());
        // Wire-level: trailing bytes, bits past n, count mismatch, non-canonical varint.
        let good = certify(&set, &all, p, &[0, 1, 2]).encode();
        let mut t = good.clone();
        t.push(0);
        assert!(Finalization::decode(&t).is_err());
        let mut bits = good.clone();
        bits[3 + 32 + 8] |= 0x80;
        assert!(Finalization::decode(&bits).is_err());
        assert!(read_varint(&mut &[0x80, 0x00][..]).is_err());
        assert!(Finalization::decode(&good[..good.len() - 1]).is_err());
    }
}
