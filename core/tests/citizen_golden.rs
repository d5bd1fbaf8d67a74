//! Golden vectors of the citizen credential (specs/vectors/citizen): regenerated from fixed keys
//! and seeded salts and compared byte for byte; decoded independently with `minicbor`.
//! `CIVIS_BLESS=1 cargo test -p civis-core --test citizen_golden` rewrites them after a deliberate
//! format change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "common/citizen.rs"]
mod citizen;
mod common;

use civis_core::cbor::CborForm;
use civis_core::jwk::Jwk;
use civis_core::mdoc::{self, TrustAnchor, VerifyContext};
use common::own;
use minicbor::data::{Tag, Type};
use sha2::{Digest, Sha256};

fn pinned(name: &str, bytes: &[u8]) {
    let path = own(&format!("citizen/{name}"));
    if std::env::var_os("CIVIS_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(on_disk, bytes, "{name} differs from its golden file");
}

#[test]
fn golden_files_are_reproduced_byte_for_byte() {
    let f = citizen::fixture();
    pinned("device_response.cbor", &f.response.to_vec());
    pinned(
        "issuer_signed.cbor",
        &mdoc::issue::encode_issuer_signed(&f.issuer_signed),
    );
    pinned("session_transcript.cbor", &f.transcript.tagged_bytes());
    pinned("device_request.cbor", &f.request.to_vec());
    pinned("status_list.cbor", &f.status_list.to_cbor());
    let issuer_pub = Jwk::from_public(f.issuer_key.public_key(), Some(f.issuer_kid.clone()));
    pinned("issuer_key.jwk.json", issuer_pub.to_json().as_bytes());
    pinned(
        "device_response.diag",
        minicbor::display(&f.response.to_vec())
            .to_string()
            .as_bytes(),
    );
}

#[test]
fn golden_response_verifies() {
    let f = citizen::fixture();
    let bytes = std::fs::read(own("citizen/device_response.cbor")).unwrap();
    let jwk = Jwk::from_json(&std::fs::read_to_string(own("citizen/issuer_key.jwk.json")).unwrap())
        .unwrap();
    let anchors = [TrustAnchor::DidKey {
        kid: civis_core::did::DidUrl::parse(jwk.kid.as_deref().unwrap()).unwrap(),
        key: jwk.public_key().unwrap(),
    }];
    let ctx = VerifyContext {
        transcript: &f.transcript,
        anchors: &anchors,
        at: citizen::now(),
        reader_key: None,
        request: Some(&f.request),
    };
    let docs = mdoc::verify_bytes(&bytes, &ctx).unwrap();
    let names: Vec<_> = docs[0].disclosed[0]
        .1
        .iter()
        .map(|(e, _)| e.as_str())
        .collect();
    assert_eq!(names.len(), citizen::DISCLOSED.len());
    assert_eq!(docs[0].status.as_ref().unwrap().idx, 42);
}

/// A minimal tree built by minicbor, independent of ciborium.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Int(i128),
    Bytes(Vec<u8>),
    Text(String),
    Bool(bool),
    Null,
    Tag(u64, Box<Node>),
    Array(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

fn read(d: &mut minicbor::Decoder<'_>) -> Node {
    match d.datatype().unwrap() {
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => Node::Int(i128::from(d.int().unwrap())),
        Type::Bytes => Node::Bytes(d.bytes().unwrap().to_vec()),
        Type::String => Node::Text(d.str().unwrap().to_owned()),
        Type::Bool => Node::Bool(d.bool().unwrap()),
        Type::Null => {
            d.null().unwrap();
            Node::Null
        }
        Type::Tag => {
            let t: Tag = d.tag().unwrap();
            Node::Tag(t.as_u64(), Box::new(read(d)))
        }
        Type::Array => {
            let n = d.array().unwrap().unwrap();
            Node::Array((0..n).map(|_| read(d)).collect())
        }
        Type::Map => {
            let n = d.map().unwrap().unwrap();
            Node::Map((0..n).map(|_| (read(d), read(d))).collect())
        }
        other => panic!("unexpected CBOR type {other:?} in a golden vector"),
    }
}

fn decode(bytes: &[u8]) -> Node {
    let mut d = minicbor::Decoder::new(bytes);
    let n = read(&mut d);
    assert_eq!(d.position(), bytes.len(), "trailing bytes");
    n
}

fn get<'a>(n: &'a Node, key: &str) -> &'a Node {
    match n {
        Node::Map(m) => {
            &m.iter()
                .find(|(k, _)| *k == Node::Text(key.into()))
                .unwrap_or_else(|| panic!("no {key}"))
                .1
        }
        _ => panic!("not a map looking for {key}"),
    }
}

fn tag24(n: &Node) -> &[u8] {
    match n {
        Node::Tag(24, inner) => match &**inner {
            Node::Bytes(b) => b,
            _ => panic!("tag 24 without bstr"),
        },
        _ => panic!("expected tag 24"),
    }
}

#[test]
fn minicbor_reads_the_golden_response_independently() {
    let bytes = std::fs::read(own("citizen/device_response.cbor")).unwrap();
    let resp = decode(&bytes);
    assert_eq!(get(&resp, "version"), &Node::Text("1.0".into()));
    assert_eq!(get(&resp, "status"), &Node::Int(0));
    let Node::Array(docs) = get(&resp, "documents") else {
        panic!()
    };
    let doc = &docs[0];
    assert_eq!(
        get(doc, "docType"),
        &Node::Text("org.civis.citizen.1".into())
    );
    let issuer_signed = get(doc, "issuerSigned");
    // issuerAuth = [protected bstr, unprotected map, payload bstr, signature bstr(64)].
    let Node::Array(auth) = get(issuer_signed, "issuerAuth") else {
        panic!()
    };
    assert_eq!(auth.len(), 4);
    let Node::Bytes(protected) = &auth[0] else {
        panic!()
    };
    let Node::Map(ph) = decode(protected) else {
        panic!()
    };
    assert!(
        ph.contains(&(Node::Int(1), Node::Int(-7))),
        "alg ES256 protected"
    );
    let Node::Bytes(sig) = &auth[3] else { panic!() };
    assert_eq!(sig.len(), 64);
    let Node::Bytes(payload) = &auth[2] else {
        panic!()
    };
    let mso = decode(tag24(&decode(payload)));
    assert_eq!(get(&mso, "digestAlgorithm"), &Node::Text("SHA-256".into()));
    assert_eq!(
        get(&mso, "docType"),
        &Node::Text("org.civis.citizen.1".into())
    );
    let status = get(get(&mso, "status"), "status_list");
    assert_eq!(get(status, "idx"), &Node::Int(42));
    let digests = get(get(&mso, "valueDigests"), "org.civis.citizen.1");
    let Node::Map(digests) = digests else {
        panic!()
    };
    assert_eq!(
        digests.len(),
        13,
        "all 13 elements are digested, 10 disclosed"
    );

    // Every disclosed item hashes (SHA-256 over its tag-24 encoding) to its MSO digest.
    let Node::Map(ns) = get(issuer_signed, "nameSpaces") else {
        panic!()
    };
    let Node::Array(items) = &ns[0].1 else {
        panic!()
    };
    assert_eq!(items.len(), 10);
    let rec = citizen::record();
    for item_node in items {
        let item_bytes = tag24(item_node);
        let mut enc = vec![0xd8, 0x18];
        // Re-frame as bstr: minicbor re-encodes the header independently of ciborium.
        let mut e = minicbor::Encoder::new(Vec::new());
        e.bytes(item_bytes).unwrap();
        enc.extend(e.into_writer());
        let item = decode(item_bytes);
        let Node::Int(id) = get(&item, "digestID") else {
            panic!()
        };
        let (_, d) = digests.iter().find(|(k, _)| *k == Node::Int(*id)).unwrap();
        assert_eq!(d, &Node::Bytes(Sha256::digest(&enc).to_vec()));
        let Node::Bytes(salt) = get(&item, "random") else {
            panic!()
        };
        assert_eq!(salt.len(), 32);
        match (get(&item, "elementIdentifier"), get(&item, "elementValue")) {
            (Node::Text(e), v) if e == "family_name" => {
                assert_eq!(v, &Node::Text(rec.family_name.clone()))
            }
            (Node::Text(e), v) if e == "age_over_18" => assert_eq!(v, &Node::Bool(true)),
            (Node::Text(e), v) if e == "age_over_65" => assert_eq!(v, &Node::Bool(false)),
            (Node::Text(e), v) if e == "issue_date" => {
                assert_eq!(
                    v,
                    &Node::Tag(1004, Box::new(Node::Text("2026-01-01".into())))
                )
            }
            (Node::Text(e), _) => assert!(citizen::DISCLOSED.contains(&e.as_str()), "{e}"),
            other => panic!("{other:?}"),
        }
    }
    // The diagnostic rendering is pinned too.
    let diag = std::fs::read_to_string(own("citizen/device_response.diag")).unwrap();
    assert_eq!(diag, minicbor::display(&bytes).to_string());
}
