//! ECVRF-P256-SHA256-TAI (RFC 9381, suite `0x01`): a verifiable random function on P-256.
//!
//! The card proves `beta = VRF(sk, alpha)` for an election's `alpha`; anyone holding the public
//! key checks the proof and gets the same `beta` (the election pseudonym), and without the key
//! the outputs for two `alpha`s cannot be linked. Built on the `p256` arithmetic the crate
//! already uses (the field's VRF crates need a pre-release RustCrypto stack). Checked against
//! RFC 9381 Appendix B.1 (`../shared/vectors/vrf-rfc9381`).

use p256::elliptic_curve::bigint::ArrayEncoding as _;
use p256::elliptic_curve::group::Group as _;
use p256::elliptic_curve::ops::Reduce as _;
use p256::elliptic_curve::sec1::{FromEncodedPoint as _, ToEncodedPoint as _};
use p256::elliptic_curve::{Curve as _, PrimeField as _};
use p256::{
    AffinePoint, EncodedPoint, FieldBytes, NistP256, NonZeroScalar, ProjectivePoint, Scalar,
};
use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The suite string of ECVRF-P256-SHA256-TAI.
const SUITE: u8 = 0x01;
/// Length of a proof: Gamma (33, compressed) ‖ c (16) ‖ s (32).
pub const PROOF_LEN: usize = 81;
/// Length of the output `beta`.
pub const OUTPUT_LEN: usize = 32;
/// Length of a compressed point.
const POINT_LEN: usize = 33;
/// Length of the challenge `c`.
const C_LEN: usize = 16;

const WHAT: &str = "VRF proof";

/// A VRF public key (a P-256 point other than the identity).
#[derive(Clone, PartialEq, Eq)]
pub struct VrfPublicKey {
    point: AffinePoint,
}

impl std::fmt::Debug for VrfPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfPublicKey({})", hex::encode(self.to_bytes()))
    }
}

impl VrfPublicKey {
    /// From SEC1 bytes (compressed or uncompressed); the identity and points off the curve are
    /// refused (RFC 9381 §5.4.5: with cofactor 1 the identity is the only weak key).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        let point = p256::PublicKey::from_sec1_bytes(bytes)
            .map_err(|_| Error::InvalidKey("not a P-256 VRF public key".into()))?;
        Ok(Self {
            point: *point.as_affine(),
        })
    }

    /// The compressed SEC1 form (33 bytes), as the VRF hashes it.
    pub fn to_bytes(&self) -> [u8; POINT_LEN] {
        point_bytes(&ProjectivePoint::from(self.point))
    }
}

/// A VRF secret key. Cards keep theirs inside; this one is for tests, the virtual card and
/// software wallets.
#[derive(Clone)]
pub struct VrfSecretKey {
    x: NonZeroScalar,
    public: VrfPublicKey,
}

impl std::fmt::Debug for VrfSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfSecretKey({:?})", self.public)
    }
}

impl VrfSecretKey {
    /// A fresh key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_nonzero(NonZeroScalar::random(rng))
    }

    /// From the 32-byte big-endian scalar (1 ≤ x < q).
    pub fn from_scalar(bytes: &[u8]) -> Result<Self> {
        let repr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidKey("a VRF secret key is 32 bytes".into()))?;
        let x = Option::<NonZeroScalar>::from(NonZeroScalar::from_repr(repr.into()))
            .ok_or_else(|| Error::InvalidKey("not a P-256 private scalar".into()))?;
        Ok(Self::from_nonzero(x))
    }

    fn from_nonzero(x: NonZeroScalar) -> Self {
        let point = (ProjectivePoint::GENERATOR * *x).to_affine();
        Self {
            x,
            public: VrfPublicKey { point },
        }
    }

    /// The public key `Y = x·B`.
    pub fn public_key(&self) -> &VrfPublicKey {
        &self.public
    }

    /// The scalar, for the card's storage.
    pub fn scalar(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.x.to_repr().into())
    }

    /// `ECVRF_prove(SK, alpha)` (RFC 9381 §5.1). Deterministic: the nonce is RFC 6979's.
    pub fn prove(&self, alpha: &[u8]) -> Result<VrfProof> {
        let y = ProjectivePoint::from(self.public.point);
        let h = encode_to_curve(&self.public.to_bytes(), alpha)?;
        let h_string = point_bytes(&h);
        let gamma = h * *self.x;
        // The nonce reveals the key with s: wiped when dropped.
        let k = Zeroizing::new(nonce(&self.x, &h_string));
        let c = challenge(&[
            &y,
            &h,
            &gamma,
            &(ProjectivePoint::GENERATOR * *k),
            &(h * *k),
        ]);
        let s = *k + scalar_of_c(&c) * *self.x;
        Ok(VrfProof {
            gamma: gamma.to_affine(),
            c,
            s,
        })
    }
}

/// A VRF proof `pi`: Gamma, c, s.
#[derive(Clone, PartialEq, Eq)]
pub struct VrfProof {
    gamma: AffinePoint,
    c: [u8; C_LEN],
    s: Scalar,
}

impl std::fmt::Debug for VrfProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VrfProof({})", hex::encode(self.to_bytes()))
    }
}

impl VrfProof {
    /// `ECVRF_decode_proof` (RFC 9381 §5.4.4): exactly 81 bytes, Gamma a point on the curve in
    /// compressed form, s below the group order.
    pub fn from_bytes(pi: &[u8]) -> Result<Self> {
        if pi.len() != PROOF_LEN {
            return Err(Error::malformed(
                WHAT,
                format!("{} bytes, expected {PROOF_LEN}", pi.len()),
            ));
        }
        let (gamma, rest) = pi.split_at(POINT_LEN);
        let (c, s) = rest.split_at(C_LEN);
        // Compressed only: the proof's encoding is fixed, so one proof has one byte string.
        if !matches!(gamma.first(), Some(0x02 | 0x03)) {
            return Err(Error::malformed(WHAT, "Gamma is not a compressed point"));
        }
        let gamma = EncodedPoint::from_bytes(gamma)
            .ok()
            .and_then(|e| Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&e)))
            .ok_or_else(|| Error::malformed(WHAT, "Gamma is not a point on P-256"))?;
        let s_bytes: [u8; 32] = s
            .try_into()
            .map_err(|_| Error::malformed(WHAT, "s is not 32 bytes"))?;
        let s = Option::<Scalar>::from(Scalar::from_repr(s_bytes.into()))
            .ok_or_else(|| Error::malformed(WHAT, "s is not below the group order"))?;
        let c: [u8; C_LEN] = c
            .try_into()
            .map_err(|_| Error::malformed(WHAT, "c is not 16 bytes"))?;
        Ok(Self { gamma, c, s })
    }

    /// The 81-byte encoding.
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        let mut out = [0u8; PROOF_LEN];
        let (g, rest) = out.split_at_mut(POINT_LEN);
        let (c, s) = rest.split_at_mut(C_LEN);
        g.copy_from_slice(&point_bytes(&ProjectivePoint::from(self.gamma)));
        c.copy_from_slice(&self.c);
        s.copy_from_slice(&self.s.to_repr());
        out
    }

    /// `ECVRF_proof_to_hash` (RFC 9381 §5.2): the output `beta`. Only meaningful for a proof
    /// that [`verify`] accepted.
    pub fn output(&self) -> [u8; OUTPUT_LEN] {
        let mut hash = Sha256::new();
        hash.update([SUITE, 0x03]);
        hash.update(point_bytes(&ProjectivePoint::from(self.gamma)));
        hash.update([0x00]);
        hash.finalize().into()
    }
}

/// `ECVRF_verify(Y, pi, alpha)` (RFC 9381 §5.3): the output `beta` when the proof is valid.
pub fn verify(public: &VrfPublicKey, alpha: &[u8], proof: &VrfProof) -> Result<[u8; OUTPUT_LEN]> {
    let y = ProjectivePoint::from(public.point);
    let h = encode_to_curve(&public.to_bytes(), alpha)?;
    let gamma = ProjectivePoint::from(proof.gamma);
    let c = scalar_of_c(&proof.c);
    let u = ProjectivePoint::GENERATOR * proof.s - y * c;
    let v = h * proof.s - gamma * c;
    let expected = challenge(&[&y, &h, &gamma, &u, &v]);
    // Both sides are public: a plain comparison leaks nothing.
    if expected == proof.c {
        Ok(proof.output())
    } else {
        Err(Error::BadSignature("VRF proof"))
    }
}

/// `ECVRF_encode_to_curve_try_and_increment` (RFC 9381 §5.4.1.1) with the public key as salt.
fn encode_to_curve(salt: &[u8], alpha: &[u8]) -> Result<ProjectivePoint> {
    for ctr in 0..=u8::MAX {
        let mut hash = Sha256::new();
        hash.update([SUITE, 0x01]);
        hash.update(salt);
        hash.update(alpha);
        hash.update([ctr, 0x00]);
        let digest = hash.finalize();
        // interpret_hash_value_as_a_point: 0x02 ‖ hash as a compressed point.
        let mut candidate = [0u8; POINT_LEN];
        candidate[0] = 0x02;
        candidate[1..].copy_from_slice(&digest);
        if let Ok(e) = EncodedPoint::from_bytes(candidate)
            && let Some(p) = Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&e))
        {
            return Ok(ProjectivePoint::from(p));
        }
    }
    // Each try succeeds with probability about 1/2: 256 failures do not happen.
    Err(Error::invalid(
        "VRF input",
        "no curve point after 256 tries",
    ))
}

/// `ECVRF_challenge_generation` (RFC 9381 §5.4.3): the first 16 bytes of the hash of the five
/// points.
fn challenge(points: &[&ProjectivePoint; 5]) -> [u8; C_LEN] {
    let mut hash = Sha256::new();
    hash.update([SUITE, 0x02]);
    for p in points {
        hash.update(point_bytes(p));
    }
    hash.update([0x00]);
    let digest: [u8; 32] = hash.finalize().into();
    let (c, _) = digest.split_at(C_LEN);
    let mut out = [0u8; C_LEN];
    out.copy_from_slice(c);
    out
}

/// `ECVRF_nonce_generation_RFC6979` (RFC 9381 §5.4.2.1): RFC 6979 §3.2 with SHA-256 over
/// `h_string`.
fn nonce(x: &NonZeroScalar, h_string: &[u8]) -> Scalar {
    let h1 = Sha256::digest(h_string);
    // bits2octets: the hash as an integer, reduced modulo q.
    let h = <Scalar as p256::elliptic_curve::ops::Reduce<p256::U256>>::reduce_bytes(&h1);
    let x_bytes = Zeroizing::new(x.to_repr());
    let k = rfc6979::generate_k::<Sha256, _>(
        &x_bytes,
        &NistP256::ORDER.to_be_byte_array(),
        &h.to_repr(),
        &[],
    );
    // generate_k returns 1 ≤ k < q, so the fallback is never taken.
    Option::<Scalar>::from(Scalar::from_repr(k)).unwrap_or(Scalar::ONE)
}

/// c (16 bytes) as a scalar: always below q.
fn scalar_of_c(c: &[u8; C_LEN]) -> Scalar {
    let mut repr = FieldBytes::default();
    let (_, low) = repr.split_at_mut(32 - C_LEN);
    low.copy_from_slice(c);
    Scalar::reduce_bytes(&repr)
}

/// `point_to_string`: compressed SEC1. The identity (only reachable from crafted proofs) encodes
/// as 33 zero bytes, which no hash of a real point matches.
fn point_bytes(p: &ProjectivePoint) -> [u8; POINT_LEN] {
    let mut out = [0u8; POINT_LEN];
    if bool::from(p.is_identity()) {
        return out;
    }
    let e = p.to_affine().to_encoded_point(true);
    out.copy_from_slice(e.as_bytes());
    out
}
