//! IETF Token Status List examples (../shared/vectors/token-status-list).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use civis_core::jwk::Jwk;
use civis_core::status::{self, StatusList};
use common::{hex_text, shared};
use serde_json::Value as Json;

/// The hex after "encoded:" (or the whole file when there is no such line).
fn encoded_hex(md: &str) -> Vec<u8> {
    let body = md.split_once("encoded:").map_or(md, |(_, rest)| rest);
    hex_text(body)
}

#[test]
fn every_encoding_example_decodes_to_its_expected_entries() {
    let mut checked = 0;
    for entry in std::fs::read_dir(shared("token-status-list")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".expected.json") else {
            continue;
        };
        let expected: Json = serde_json::from_str(
            &std::fs::read_to_string(shared(&format!("token-status-list/{name}"))).unwrap(),
        )
        .unwrap();
        let md = std::fs::read_to_string(shared(&format!("token-status-list/{stem}.md"))).unwrap();
        let list = StatusList::from_cbor(&encoded_hex(&md)).unwrap();
        assert_eq!(
            u64::from(list.bits().get()),
            expected["bits"].as_u64().unwrap(),
            "{stem}"
        );
        let entries = expected["entries"].as_u64().unwrap();
        assert!(list.len() >= entries, "{stem}: {} < {entries}", list.len());
        let nonzero = expected["nonzero"].as_object().unwrap();
        for i in 0..entries {
            let want = nonzero
                .get(&i.to_string())
                .map_or(0, |v| v.as_u64().unwrap());
            assert_eq!(u64::from(list.get(i).unwrap()), want, "{stem} entry {i}");
        }
        // Re-encode and decode again.
        let again = StatusList::from_cbor(&list.to_cbor()).unwrap();
        assert_eq!(again, list, "{stem}");
        checked += 1;
    }
    assert_eq!(checked, 6);
}

fn signing_key() -> civis_core::crypto::EcPublicKey {
    Jwk::from_json(
        &std::fs::read_to_string(shared("token-status-list/signing_key.jwk.json")).unwrap(),
    )
    .unwrap()
    .public_key()
    .unwrap()
}

#[test]
fn status_list_token_and_referenced_token_verify() {
    let key = signing_key();
    let cwt =
        hex_text(&std::fs::read_to_string(shared("token-status-list/status_list_cwt.md")).unwrap());
    let token = status::verify_status_list_cwt(&cwt, &key).unwrap();
    assert_eq!(token.sub, "https://example.com/statuslists/1");
    assert_eq!(token.list.bits().get(), 1);
    assert_eq!(token.list.get(0), Some(1));
    assert_eq!(token.list.get(1), Some(0));
    assert!(token.ttl.is_some() && token.exp.is_some());

    let rt = hex_text(
        &std::fs::read_to_string(shared("token-status-list/referenced_token_cwt.md")).unwrap(),
    );
    let r = status::verify_referenced_token_cwt(&rt, &key).unwrap();
    assert_eq!(
        (r.idx, r.uri.as_str()),
        (0, "https://example.com/statuslists/1")
    );

    // A flipped signature bit fails; another key fails.
    let mut bad = cwt.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(status::verify_status_list_cwt(&bad, &key).is_err());
    let other = civis_core::crypto::SoftwareKey::from_scalar(&[5u8; 32]).unwrap();
    assert!(status::verify_status_list_cwt(&cwt, other.public_key()).is_err());
}
