//! RFC 9052 COSE_Sign1 / ES256 examples from the COSE WG (../shared/vectors/cose).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use civis_core::Error;
use civis_core::cose;
use civis_core::jwk::Jwk;
use common::{hex_text, shared};
use serde_json::Value as Json;

fn load(name: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(shared(&format!("cose/{name}.json"))).unwrap())
        .unwrap()
}

fn key_of(j: &Json) -> civis_core::crypto::EcPublicKey {
    let k = &j["input"]["sign0"]["key"];
    let jwk = Jwk::from_json(
        &serde_json::json!({"kty": k["kty"], "crv": k["crv"], "x": k["x"], "y": k["y"]})
            .to_string(),
    )
    .unwrap();
    jwk.public_key().unwrap()
}

fn check(name: &str) -> Result<(), Error> {
    let j = load(name);
    let bytes = hex_text(j["output"]["cbor"].as_str().unwrap());
    let aad = j["input"]["sign0"]["external"]
        .as_str()
        .map(hex_text)
        .unwrap_or_default();
    let sign1 = cose::decode_sign1(&bytes)?;
    // The profile check comes first: ecdsa-sig-02 carries a P-384 key it never gets to.
    cose::check_alg(&sign1)?;
    let key = key_of(&j);
    cose::verify_sign1_with_aad(&sign1, &key, &aad, None)
}

#[test]
fn passing_examples_verify() {
    for name in ["ecdsa-sig-01", "sign-pass-02", "sign-pass-03"] {
        check(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // sign-pass-02 binds its external AAD: without it the signature fails.
    let j = load("sign-pass-02");
    let sign1 = cose::decode_sign1(&hex_text(j["output"]["cbor"].as_str().unwrap())).unwrap();
    assert!(cose::verify_sign1_with_aad(&sign1, &key_of(&j), b"", None).is_err());
}

#[test]
fn every_failing_example_is_rejected() {
    let dir = shared("cose");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".json")
            && stem.starts_with("sign-fail-")
        {
            assert!(load(stem)["fail"].as_bool().unwrap());
            assert!(check(stem).is_err(), "{stem} must be rejected");
            n += 1;
        }
    }
    assert!(n >= 6, "found {n} sign-fail vectors");
}

#[test]
fn outside_the_profile_is_refused_with_the_right_reason() {
    // ES384.
    match check("ecdsa-sig-02") {
        Err(Error::Unsupported(m)) => assert!(m.contains("-35"), "{m}"),
        other => panic!("ecdsa-sig-02: {other:?}"),
    }
    // COSE_Sign (tag 98) is not a COSE_Sign1.
    let j = load("ecdsa-01");
    let err = cose::decode_sign1(&hex_text(j["output"]["cbor"].as_str().unwrap())).unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("COSE_Sign")),
        "{err:?}"
    );
    // alg only in the unprotected header: refused for that reason, not as a bad signature.
    match check("sign-pass-01") {
        Err(Error::Unsupported(m)) => assert!(m.contains("unprotected"), "{m}"),
        other => panic!("sign-pass-01: {other:?}"),
    }
}
