//! P-256 keys and ES256 verification.
//!
//! Key types come from `p256`. Verification runs on `ring`, chosen by measurement:
//! `cargo bench -p civis-core --features bench-aws-lc --bench es256` on the 2-core reference
//! machine gives ring and aws-lc-rs the same speed within 1% in interleaved runs (about 97 µs
//! per verify) and p256 about 4.7× slower; with speed tied, ring wins on build weight (seconds
//! against minutes of C for aws-lc-sys). The `p256` path stays available as [`verify_p256`] for
//! the benchmark and for cross-checks in tests.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::signature::Verifier as _;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use rand_core::CryptoRngCore;
use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A P-256 public key, kept both as a curve point and as uncompressed SEC1 bytes for the backend.
#[derive(Clone, PartialEq, Eq)]
pub struct EcPublicKey {
    point: p256::PublicKey,
    sec1: [u8; 65],
}

impl std::fmt::Debug for EcPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcPublicKey({})", hex::encode(self.compressed()))
    }
}

impl EcPublicKey {
    /// From SEC1 bytes (compressed or uncompressed); the point is checked to be on the curve.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        let point = p256::PublicKey::from_sec1_bytes(bytes)
            .map_err(|_| Error::InvalidKey("not a P-256 point".into()))?;
        Ok(Self::from_point(point))
    }

    /// From affine coordinates, each 32 bytes big-endian.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Self> {
        if x.len() != 32 || y.len() != 32 {
            return Err(Error::InvalidKey(
                "P-256 coordinates must be 32 bytes".into(),
            ));
        }
        let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
        let key = Option::<p256::PublicKey>::from(p256::PublicKey::from_encoded_point(&point))
            .ok_or_else(|| Error::InvalidKey("not a P-256 point".into()))?;
        Ok(Self::from_point(key))
    }

    fn from_point(point: p256::PublicKey) -> Self {
        let mut sec1 = [0u8; 65];
        sec1.copy_from_slice(point.to_encoded_point(false).as_bytes());
        Self { point, sec1 }
    }

    /// The `p256` point.
    pub fn point(&self) -> &p256::PublicKey {
        &self.point
    }

    /// Uncompressed SEC1 (`04 || x || y`).
    pub fn uncompressed(&self) -> &[u8; 65] {
        &self.sec1
    }

    /// Compressed SEC1 (33 bytes).
    pub fn compressed(&self) -> Vec<u8> {
        self.point.to_encoded_point(true).as_bytes().to_vec()
    }

    /// The x coordinate.
    pub fn x(&self) -> &[u8] {
        self.sec1.get(1..33).unwrap_or_default()
    }

    /// The y coordinate.
    pub fn y(&self) -> &[u8] {
        self.sec1.get(33..65).unwrap_or_default()
    }

    /// Verify an ES256 signature in the COSE / JOSE form (r || s, 64 bytes) over `msg`.
    pub fn verify_es256(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.sec1[..])
            .verify(msg, sig)
            .map_err(|_| Error::BadSignature("ES256 signature"))
    }

    /// Verify an ECDSA P-256 / SHA-256 signature in strict DER form (X.509).
    pub fn verify_es256_der(&self, msg: &[u8], sig: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.sec1[..])
            .verify(msg, sig)
            .map_err(|_| Error::BadSignature("ECDSA signature"))
    }
}

/// The same check as [`EcPublicKey::verify_es256`] on the pure-Rust `p256` crate (benchmark peer).
pub fn verify_p256(key: &EcPublicKey, msg: &[u8], sig: &[u8]) -> Result<()> {
    let vk = p256::ecdsa::VerifyingKey::from(key.point());
    let sig = p256::ecdsa::Signature::from_slice(sig)
        .map_err(|_| Error::BadSignature("ES256 signature"))?;
    vk.verify(msg, &sig)
        .map_err(|_| Error::BadSignature("ES256 signature"))
}

/// The same check on `aws-lc-rs` (benchmark peer; feature `bench-aws-lc`).
#[cfg(feature = "bench-aws-lc")]
pub fn verify_aws_lc(key: &EcPublicKey, msg: &[u8], sig: &[u8]) -> Result<()> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED as AWS_FIXED, UnparsedPublicKey as AwsKey};
    AwsKey::new(&AWS_FIXED, &key.sec1[..])
        .verify(msg, sig)
        .map_err(|_| Error::BadSignature("ES256 signature"))
}

/// A software P-256 private key (tests, phone wallets, key files). Cards and HSMs keep theirs inside.
#[derive(Clone)]
pub struct SoftwareKey {
    key: p256::ecdsa::SigningKey,
    public: EcPublicKey,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareKey({:?})", self.public)
    }
}

impl SoftwareKey {
    /// A fresh key from the given randomness.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_signing_key(p256::ecdsa::SigningKey::random(rng))
    }

    /// From the 32-byte scalar `d`.
    pub fn from_scalar(d: &[u8]) -> Result<Self> {
        let key = p256::ecdsa::SigningKey::from_slice(d)
            .map_err(|_| Error::InvalidKey("not a P-256 private scalar".into()))?;
        Ok(Self::from_signing_key(key))
    }

    fn from_signing_key(key: p256::ecdsa::SigningKey) -> Self {
        let public = EcPublicKey::from_point(p256::PublicKey::from(key.verifying_key()));
        Self { key, public }
    }

    /// The public half.
    pub fn public_key(&self) -> &EcPublicKey {
        &self.public
    }

    /// The private scalar (for writing key files).
    pub fn scalar(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.to_bytes().to_vec())
    }

    /// ES256 signature (r || s) over `msg`, deterministic (RFC 6979).
    pub fn sign_es256(&self, msg: &[u8]) -> [u8; 64] {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }

    /// ECDH with a peer's public key: the 32-byte x coordinate of the shared point.
    pub fn ecdh(&self, peer: &EcPublicKey) -> [u8; 32] {
        let secret =
            p256::ecdh::diffie_hellman(self.key.as_nonzero_scalar(), peer.point().as_affine());
        let mut out = [0u8; 32];
        out.copy_from_slice(secret.raw_secret_bytes());
        out
    }
}

/// The low-S form of an ES256 signature (`r ‖ s`, 64 bytes): `s` replaced by `n − s` when it is
/// above `n / 2`. Both forms verify, so anyone holding one can make the other; where a
/// signature's bytes name something (a chain transaction's id), only the low form is accepted.
/// `None` for bytes that are not a signature.
pub fn low_s(sig: &[u8]) -> Option<[u8; 64]> {
    let parsed = p256::ecdsa::Signature::from_slice(sig).ok()?;
    let low = parsed.normalize_s().unwrap_or(parsed);
    let mut out = [0u8; 64];
    out.copy_from_slice(&low.to_bytes());
    Some(out)
}

/// Whether an ES256 signature is in its low-S form ([`low_s`]).
pub fn is_low_s(sig: &[u8]) -> bool {
    low_s(sig).is_some_and(|low| low.as_slice() == sig)
}
