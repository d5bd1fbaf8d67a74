//! Wycheproof ECDSA P-256 / SHA-256 (P1363 and DER) through the chosen backend (ring) and the
//! p256 peer: every "valid" case accepted, every "invalid" case refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use civis_core::crypto::{EcPublicKey, verify_p256};
use wycheproof::TestResult;
use wycheproof::ecdsa::{TestName, TestSet};

fn run(name: TestName, der: bool) -> usize {
    let set = TestSet::load(name).unwrap();
    let mut n = 0;
    for group in set.test_groups {
        let Ok(key) = EcPublicKey::from_sec1(&group.key.key) else {
            // Every group key in these sets is a valid point; refusing one would be a bug.
            panic!("group key refused");
        };
        for t in group.tests {
            let ok = if der {
                key.verify_es256_der(&t.msg, &t.sig).is_ok()
            } else {
                key.verify_es256(&t.msg, &t.sig).is_ok()
            };
            match t.result {
                TestResult::Valid => assert!(ok, "tc {} ({:?}) must verify", t.tc_id, t.comment),
                TestResult::Invalid => assert!(!ok, "tc {} ({:?}) must fail", t.tc_id, t.comment),
                TestResult::Acceptable => {}
            }
            if !der {
                let peer = verify_p256(&key, &t.msg, &t.sig).is_ok();
                match t.result {
                    TestResult::Valid => assert!(peer, "p256 tc {}", t.tc_id),
                    TestResult::Invalid => assert!(!peer, "p256 tc {}", t.tc_id),
                    TestResult::Acceptable => {}
                }
            }
            n += 1;
        }
    }
    n
}

#[test]
fn p1363_full_agreement() {
    assert!(run(TestName::EcdsaSecp256r1Sha256P1363, false) > 200);
}

#[test]
fn der_full_agreement() {
    assert!(run(TestName::EcdsaSecp256r1Sha256, true) > 200);
}
