//! ISO/IEC 18013-5:2021 Annex D conformance (vectors in ../shared/vectors/iso18013-5).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use civis_core::cbor::{CborForm, Tagged};
use civis_core::cose::{self, Domain};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::mdoc::mso::MobileSecurityObject;
use civis_core::mdoc::{
    self, DeviceEngagement, DeviceRequest, DeviceResponse, SessionEstablishment, SessionTranscript,
};
use civis_core::session::{Role, Session};
use civis_core::verify::{Refusal, RejectReason, UndeterminedReason};
use civis_core::x509::Cert;
use civis_core::{Timestamp, cbor};
use common::{annex_d_key, read_hex, shared};

fn v(name: &str) -> Vec<u8> {
    read_hex(shared(&format!("iso18013-5/{name}")))
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

#[test]
fn every_structure_round_trips_byte_for_byte() {
    let resp = v("D.4.1.2_device_response.hex");
    assert_eq!(DeviceResponse::from_slice(&resp).unwrap().to_vec(), resp);
    let req = v("D.4.1.1_device_request.hex");
    assert_eq!(DeviceRequest::from_slice(&req).unwrap().to_vec(), req);
    let de = v("D.3.1_device_engagement.hex");
    assert_eq!(DeviceEngagement::from_slice(&de).unwrap().to_vec(), de);
    let se = v("D.5.1_session_establishment.hex");
    assert_eq!(SessionEstablishment::from_slice(&se).unwrap().to_vec(), se);
    let st = v("D.5.1_session_transcript_bytes.hex");
    assert_eq!(
        SessionTranscript::from_bytes(&st).unwrap().tagged_bytes(),
        st
    );
    let ia = v("D.5.2_issuer_auth.hex");
    assert_eq!(cose::encode_sign1(&cose::decode_sign1(&ia).unwrap()), ia);
    let ra = v("D.5.4_reader_auth.hex");
    assert_eq!(cose::encode_sign1(&cose::decode_sign1(&ra).unwrap()), ra);
    let da = v("D.5.3_device_auth.hex");
    let da_value = cbor::decode("DeviceAuth", &da, cbor::Limits::new(4096)).unwrap();
    assert_eq!(
        mdoc::DeviceAuth::from_value(&da_value).unwrap().to_vec(),
        da
    );
    // The MSO inside issuerAuth re-encodes too.
    let sign1 = cose::decode_sign1(&ia).unwrap();
    let wrapped = cbor::decode(
        "MSO",
        sign1.payload.as_ref().unwrap(),
        cbor::Limits::new(1 << 20),
    )
    .unwrap();
    let mso = Tagged::<MobileSecurityObject>::from_value(&wrapped).unwrap();
    assert_eq!(mso.inner().to_vec(), mso.bytes());
}

#[test]
fn issuer_auth_chains_to_iaca_and_digests_match() {
    let iaca = Cert::from_der(&v("iaca_certificate.der.hex")).unwrap();
    let resp = DeviceResponse::from_slice(&v("D.4.1.2_device_response.hex")).unwrap();
    let doc = &resp.documents.as_ref().unwrap()[0];
    let auth = &doc.issuer_signed.issuer_auth.cose;
    // The issuerAuth inside the response is the D.5.2 vector.
    assert_eq!(cose::encode_sign1(auth), v("D.5.2_issuer_auth.hex"));
    let chain = cose::x5chain(auth).unwrap();
    let ds = Cert::from_der(&chain[0]).unwrap();
    ds.verify_issued_by(&iaca, at("2021-01-01T00:00:00Z"))
        .unwrap();
    assert!(
        ds.verify_issued_by(&iaca, at("2021-10-02T00:00:00Z"))
            .is_err(),
        "DS cert expired"
    );
    assert!(
        ds.verify_issued_by(&iaca, at("2020-09-30T00:00:00Z"))
            .is_err(),
        "DS cert not yet valid"
    );
    cose::verify_sign1(auth, ds.public_key(), Domain::IsoIssuerAuth, None).unwrap();

    let wrapped = cbor::decode(
        "MSO",
        auth.payload.as_ref().unwrap(),
        cbor::Limits::new(1 << 20),
    )
    .unwrap();
    let mso = Tagged::<MobileSecurityObject>::from_value(&wrapped).unwrap();
    let mso = mso.inner();
    let mut checked = 0;
    for (ns, items) in doc.issuer_signed.name_spaces.as_ref().unwrap() {
        for item in items {
            let expected = mso.digest(ns, item.inner().digest_id).unwrap();
            assert_eq!(mso.digest_algorithm.digest(&item.tagged_bytes()), expected);
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "Annex D discloses six elements");
    // The device key in the MSO is the Annex D static device key.
    let dk = mso.device_public_key().unwrap();
    assert_eq!(dk.x(), annex_d_key("static_device_key.x"));
}

#[test]
fn session_keys_and_encrypted_request() {
    let se = SessionEstablishment::from_slice(&v("D.5.1_session_establishment.hex")).unwrap();
    let st = SessionTranscript::from_bytes(&v("D.5.1_session_transcript_bytes.hex")).unwrap();
    let device_eph = SoftwareKey::from_scalar(&annex_d_key("ephemeral_device_key.d")).unwrap();
    assert_eq!(
        device_eph.ecdh(&se.e_reader_key).to_vec(),
        annex_d_key("ecdh_shared_secret")
    );
    let mut session = Session::new(
        Role::Device,
        &device_eph,
        &se.e_reader_key,
        &st.tagged_bytes(),
    );
    assert_eq!(session.sk_reader().to_vec(), annex_d_key("sk_reader"));
    // The reader's first message decrypts to the Annex D DeviceRequest.
    let plain = session.decrypt(&se.data).unwrap();
    assert_eq!(plain, v("D.4.1.1_device_request.hex"));
    // The reader side derives the same keys from its ephemeral key.
    let reader = SoftwareKey::from_scalar(&annex_d_key("ephemeral_reader_key.d")).unwrap();
    assert_eq!(reader.public_key(), &se.e_reader_key);
    let de = DeviceEngagement::from_slice(&v("D.3.1_device_engagement.hex")).unwrap();
    let reader_session = Session::new(Role::Reader, &reader, &de.e_device_key, &st.tagged_bytes());
    assert_eq!(
        reader_session.sk_reader().to_vec(),
        annex_d_key("sk_reader")
    );
}

#[test]
fn device_authentication_bytes_and_mac() {
    let st = SessionTranscript::from_bytes(&v("D.5.1_session_transcript_bytes.hex")).unwrap();
    let resp = DeviceResponse::from_slice(&v("D.4.1.2_device_response.hex")).unwrap();
    let doc = &resp.documents.as_ref().unwrap()[0];
    let da = st.device_authentication_bytes(&doc.doc_type, &doc.device_signed.name_spaces);
    assert_eq!(da, v("D.5.3_device_authentication_bytes.hex"));

    let reader = SoftwareKey::from_scalar(&annex_d_key("ephemeral_reader_key.d")).unwrap();
    let iaca = Cert::from_der(&v("iaca_certificate.der.hex")).unwrap();
    let anchors = [mdoc::TrustAnchor::Iaca(Box::new(iaca))];
    let ctx = mdoc::VerifyContext {
        transcript: &st,
        anchors: &anchors,
        at: at("2021-01-01T00:00:00Z"),
        reader_key: Some(&reader),
        request: None,
    };
    let docs = mdoc::verify(&resp, &ctx).unwrap();
    assert_eq!(docs[0].doc_type, "org.iso.18013.5.1.mDL");
    assert_eq!(docs[0].disclosed[0].1.len(), 6);

    // Recomputing the MAC with the device's static key gives the vector's tag.
    let device = SoftwareKey::from_scalar(&annex_d_key("static_device_key.d")).unwrap();
    let remade = mdoc::mac_device(
        &device,
        reader.public_key(),
        &st,
        &doc.doc_type,
        doc.device_signed.name_spaces.inner().clone(),
    )
    .unwrap();
    assert_eq!(
        remade.device_auth.to_vec(),
        doc.device_signed.device_auth.to_vec()
    );

    // Without the reader key the MAC cannot be checked: undetermined, not accept.
    let no_key = mdoc::VerifyContext {
        reader_key: None,
        ..ctx
    };
    assert_eq!(
        mdoc::verify(&resp, &no_key).unwrap_err(),
        Refusal::Undetermined(UndeterminedReason::MacKeyUnavailable)
    );
    // A different reader key yields a different EMacKey.
    let other = SoftwareKey::from_scalar(&[3u8; 32]).unwrap();
    let wrong = mdoc::VerifyContext {
        reader_key: Some(&other),
        ..ctx
    };
    assert!(matches!(
        mdoc::verify(&resp, &wrong).unwrap_err(),
        Refusal::Reject(RejectReason::DeviceAuthentication(_))
    ));
    // Outside the DS certificate's validity the chain fails.
    let late = mdoc::VerifyContext {
        at: at("2022-01-01T00:00:00Z"),
        ..ctx
    };
    assert!(matches!(
        mdoc::verify(&resp, &late).unwrap_err(),
        Refusal::Reject(RejectReason::Certificate(_))
    ));
}

#[test]
fn reader_auth_verifies_against_reader_root() {
    let st = SessionTranscript::from_bytes(&v("D.5.1_session_transcript_bytes.hex")).unwrap();
    let req = DeviceRequest::from_slice(&v("D.4.1.1_device_request.hex")).unwrap();
    let doc_req = &req.doc_requests[0];
    let ra_bytes = st.reader_authentication_bytes(&doc_req.items_request);
    assert_eq!(ra_bytes, v("D.5.4_reader_authentication_bytes.hex"));
    let reader_auth = doc_req.reader_auth.as_ref().unwrap();
    assert_eq!(
        cose::encode_sign1(&reader_auth.cose),
        v("D.5.4_reader_auth.hex")
    );
    let root = Cert::from_der(&v("reader_root_certificate.der.hex")).unwrap();
    let leaf = Cert::from_der(&cose::x5chain(&reader_auth.cose).unwrap()[0]).unwrap();
    leaf.verify_issued_by(&root, at("2021-01-01T00:00:00Z"))
        .unwrap();
    cose::verify_sign1(
        &reader_auth.cose,
        leaf.public_key(),
        Domain::IsoReaderAuth,
        Some(&ra_bytes),
    )
    .unwrap();
    // The same through the library function, which also refuses other roots and times.
    let checked = mdoc::reader_auth::verify(
        doc_req,
        &st,
        std::slice::from_ref(&root),
        at("2021-01-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(checked.public_key(), leaf.public_key());
    let iaca = Cert::from_der(&v("iaca_certificate.der.hex")).unwrap();
    assert!(mdoc::reader_auth::verify(doc_req, &st, &[iaca], at("2021-01-01T00:00:00Z")).is_err());
    assert!(
        mdoc::reader_auth::verify(
            doc_req,
            &st,
            std::slice::from_ref(&root),
            at("2035-01-01T00:00:00Z")
        )
        .is_err()
    );
    let other_st = SessionTranscript::new(None, None, ciborium::Value::Null);
    assert!(
        mdoc::reader_auth::verify(
            doc_req,
            &other_st,
            std::slice::from_ref(&root),
            at("2021-01-01T00:00:00Z")
        )
        .is_err()
    );
    // Bound to the transcript: another transcript's bytes do not verify.
    let other = SessionTranscript::new(None, None, ciborium::Value::Null);
    let wrong = other.reader_authentication_bytes(&doc_req.items_request);
    assert!(
        cose::verify_sign1(
            &reader_auth.cose,
            leaf.public_key(),
            Domain::IsoReaderAuth,
            Some(&wrong)
        )
        .is_err()
    );
    let _: &EcPublicKey = leaf.public_key();
}

#[test]
fn bounded_decoder_agrees_with_ciborium_on_every_vector() {
    // Differential check: the single-pass decoder builds exactly the value ciborium's serde path does.
    let mut n = 0;
    for dir in ["iso18013-5"] {
        for entry in std::fs::read_dir(shared(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("hex")
                || path.to_string_lossy().contains("der.hex")
            {
                continue;
            }
            let bytes = read_hex(path.clone());
            let ours = cbor::decode("vector", &bytes, cbor::Limits::new(1 << 20)).unwrap();
            let theirs: ciborium::Value = ciborium::de::from_reader(bytes.as_slice()).unwrap();
            assert_eq!(ours, theirs, "{}", path.display());
            assert_eq!(cbor::encode(&ours), bytes, "{}", path.display());
            n += 1;
        }
    }
    for name in [
        "device_response.cbor",
        "issuer_signed.cbor",
        "device_request.cbor",
        "session_transcript.cbor",
    ] {
        let bytes = std::fs::read(common::own(&format!("citizen/{name}"))).unwrap();
        let theirs: ciborium::Value = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(
            cbor::decode("vector", &bytes, cbor::Limits::new(1 << 20)).unwrap(),
            theirs
        );
        n += 1;
    }
    assert!(n >= 13);
}
