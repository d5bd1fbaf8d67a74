//! ECVRF-P256-SHA256-TAI against RFC 9381 Appendix B.1 (`../shared/vectors/vrf-rfc9381`), and
//! what a forger can try: every single-bit change of a proof, another input, another key,
//! truncated, oversized and malformed proofs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use civis_core::vrf::{self, PROOF_LEN, VrfProof, VrfPublicKey, VrfSecretKey};
use serde_json::Value;

struct Vector {
    name: String,
    sk: Vec<u8>,
    pk: Vec<u8>,
    alpha: Vec<u8>,
    pi: Vec<u8>,
    beta: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let path = common::shared("vrf-rfc9381/ecvrf_p256_sha256_tai.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(doc["suite"], "ECVRF-P256-SHA256-TAI");
    let hex = |v: &Value, k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
    let out: Vec<Vector> = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            sk: hex(v, "sk"),
            pk: hex(v, "pk"),
            alpha: hex(v, "alpha"),
            pi: hex(v, "pi"),
            beta: hex(v, "beta"),
        })
        .collect();
    assert_eq!(out.len(), 3, "RFC 9381 has three P-256 TAI examples");
    out
}

#[test]
fn the_rfc_9381_p256_tai_examples_prove_hash_and_verify_byte_for_byte() {
    for v in vectors() {
        let sk = VrfSecretKey::from_scalar(&v.sk).unwrap();
        assert_eq!(sk.public_key().to_bytes().to_vec(), v.pk, "{}: pk", v.name);
        let proof = sk.prove(&v.alpha).unwrap();
        assert_eq!(proof.to_bytes().to_vec(), v.pi, "{}: pi", v.name);
        assert_eq!(proof.output().to_vec(), v.beta, "{}: beta", v.name);
        let pk = VrfPublicKey::from_sec1(&v.pk).unwrap();
        let decoded = VrfProof::from_bytes(&v.pi).unwrap();
        assert_eq!(decoded, proof);
        assert_eq!(
            vrf::verify(&pk, &v.alpha, &decoded).unwrap().to_vec(),
            v.beta
        );
    }
}

#[test]
fn a_changed_bit_another_input_or_another_key_is_refused() {
    let vs = vectors();
    for v in &vs {
        let pk = VrfPublicKey::from_sec1(&v.pk).unwrap();
        // Every single-bit change of pi: refused when decoding or when verifying.
        for bit in 0..PROOF_LEN * 8 {
            let mut pi = v.pi.clone();
            pi[bit / 8] ^= 1 << (bit % 8);
            let refused = VrfProof::from_bytes(&pi).and_then(|p| vrf::verify(&pk, &v.alpha, &p));
            assert!(
                refused.is_err(),
                "{}: bit {bit} flipped was accepted",
                v.name
            );
        }
        let proof = VrfProof::from_bytes(&v.pi).unwrap();
        let mut other_alpha = v.alpha.clone();
        other_alpha.push(b'!');
        assert!(
            vrf::verify(&pk, &other_alpha, &proof).is_err(),
            "{}",
            v.name
        );
        assert!(vrf::verify(&pk, &[], &proof).is_err(), "{}", v.name);
    }
    // Example 12 has another key than examples 10 and 11.
    let (a, b) = (&vs[0], &vs[2]);
    assert_ne!(a.pk, b.pk);
    let foreign = VrfPublicKey::from_sec1(&b.pk).unwrap();
    let proof = VrfProof::from_bytes(&a.pi).unwrap();
    assert!(vrf::verify(&foreign, &a.alpha, &proof).is_err());
}

#[test]
fn malformed_proofs_and_keys_are_refused_without_panicking() {
    let v = &vectors()[0];
    // Truncated and oversized.
    for len in [0, 1, 33, 49, PROOF_LEN - 1, PROOF_LEN + 1, 4096] {
        let mut pi = v.pi.clone();
        pi.resize(len, 0);
        assert!(VrfProof::from_bytes(&pi).is_err(), "{len} bytes");
    }
    // s = q (not below the order), s all ones.
    let order =
        hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
    let mut pi = v.pi.clone();
    pi[49..].copy_from_slice(&order);
    assert!(VrfProof::from_bytes(&pi).is_err());
    pi[49..].fill(0xff);
    assert!(VrfProof::from_bytes(&pi).is_err());
    // Gamma: the identity, an x off the curve, an uncompressed prefix.
    let mut pi = v.pi.clone();
    pi[..33].fill(0);
    assert!(VrfProof::from_bytes(&pi).is_err());
    let mut pi = v.pi.clone();
    pi[0] = 0x04;
    assert!(VrfProof::from_bytes(&pi).is_err());
    let mut off_curve = None;
    for x in 0u8..=255 {
        let mut pi = v.pi.clone();
        pi[1..33].fill(x);
        if VrfProof::from_bytes(&pi).is_err() {
            off_curve = Some(x);
            break;
        }
    }
    assert!(off_curve.is_some(), "some x is not on the curve");
    // Keys: the identity, short, off the curve.
    assert!(VrfPublicKey::from_sec1(&[0x00]).is_err());
    assert!(VrfPublicKey::from_sec1(&v.pk[..32]).is_err());
    assert!(VrfSecretKey::from_scalar(&[0u8; 32]).is_err());
    assert!(VrfSecretKey::from_scalar(&order).is_err());
    assert!(VrfSecretKey::from_scalar(&v.sk[..31]).is_err());
}

#[test]
fn one_key_gives_one_output_per_input_and_different_outputs_across_inputs() {
    let sk = VrfSecretKey::generate(&mut rand_core::OsRng);
    let a = sk.prove(b"civis/evote/v1 chain-a election-2027").unwrap();
    let b = sk.prove(b"civis/evote/v1 chain-a election-2027").unwrap();
    let c = sk.prove(b"civis/evote/v1 chain-a election-2028").unwrap();
    assert_eq!(a, b, "deterministic");
    assert_ne!(a.output(), c.output());
    let pk = sk.public_key();
    assert_eq!(
        vrf::verify(pk, b"civis/evote/v1 chain-a election-2028", &c).unwrap(),
        c.output()
    );
    // Round trip of the secret scalar.
    let again = VrfSecretKey::from_scalar(&*sk.scalar()).unwrap();
    assert_eq!(again.public_key(), pk);
}
