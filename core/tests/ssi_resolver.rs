//! `did:civis` through `ssi` 0.16: a W3C VC 2.0 credential (VC-JOSE, ES256) issued by a
//! `did:civis` key is verified by ssi's own verification API at a fixed time, resolving the
//! issuer from a kiosk snapshot the light client built from a certified sync bundle; plus the
//! issuer binding that ssi leaves out. Needs core's `ssi` feature, which the test script turns on
//! (`--features civis/ssi`); nothing the `civis` binary links compiles `ssi`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::chain::block;
use civis_core::chain::cert::{Proposal, ValidatorSet};
use civis_core::chain::light::{KioskSnapshot, SyncBundle};
use civis_core::chain::state::{Genesis, State};
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use civis_core::jwk::Jwk;
use civis_core::ssi_did::DidCivis;
use sha2::Digest;
use ssi::claims::VerificationParameters;
use ssi::claims::chrono::{TimeZone, Utc};
use ssi::claims::jws::JwsPayload;
use ssi::claims::vc::v2::JsonCredential;
use ssi::claims::vc_jose_cose::JoseVc;
use ssi::dids::DIDResolver;
use ssi::verification_methods::AnyMethod;

const CHAIN: &str = "civis-ssi";
const T0: i64 = 1_780_000_000;

fn key(label: &str) -> SoftwareKey {
    SoftwareKey::from_scalar(&sha2::Sha256::digest(label.as_bytes())).unwrap()
}

struct Issuer {
    key: SoftwareKey,
    next: KeyCommitment,
    did: Did,
}

/// A kiosk snapshot holding two accredited issuers' keys, built the way a kiosk builds it:
/// genesis, a block, a certificate by the validator, a cold sync bundle, the light client.
fn snapshot() -> (KioskSnapshot, Issuer, Issuer) {
    let validator = key("validator");
    let gov = (key("gov/0"), key("gov/1"));
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        time: T0,
        validators: vec![validator.public_key().clone()],
        governance: vec![(
            gov.0.public_key().clone(),
            KeyCommitment::to(gov.1.public_key()),
        )],
        governance_threshold: 1,
        epoch_length: civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
    };
    let state = State::genesis(&genesis).unwrap();
    let head = block::Header::genesis(&state, T0);
    let issuers: Vec<Issuer> = ["alice", "bob"]
        .iter()
        .map(|l| {
            let k = key(l);
            let next = KeyCommitment::to(key(&format!("{l}/next")).public_key());
            Issuer {
                did: Did::from_inception(k.public_key(), &next),
                key: k,
                next,
            }
        })
        .collect();
    let gov_did = Did::from_inception(gov.0.public_key(), &KeyCommitment::to(gov.1.public_key()));
    let mut txs: Vec<SignedTx> = issuers
        .iter()
        .map(|i| {
            SignedTx::sign(
                Tx {
                    chain: CHAIN.into(),
                    seq: 0,
                    op: Op::CreateDid {
                        key: i.key.public_key().clone(),
                        next: i.next,
                    },
                },
                i.did.key_url(1),
                &i.key,
            )
            .unwrap()
        })
        .collect();
    // Kiosks hold the keys of accredited issuers only: governance accredits both.
    for (seq, i) in (0u64..).zip(&issuers) {
        txs.push(
            SignedTx::sign(
                Tx {
                    chain: CHAIN.into(),
                    seq,
                    op: Op::AccreditIssuer {
                        issuer: i.did.clone(),
                        doc_types: vec!["VerifiableCredential".into()],
                        until: T0 + 10 * 365 * 86_400,
                    },
                },
                gov_did.key_url(1),
                &gov.0,
            )
            .unwrap(),
        );
    }
    let built = block::build(&state, &head, txs, T0 + 5);
    assert!(built.refused.is_empty());
    let set = ValidatorSet::new(CHAIN.as_bytes(), genesis.validators.clone()).unwrap();
    let proposal = Proposal {
        epoch: 0,
        view: 1,
        parent_view: 0,
        payload: built.block.header.digest(),
    };
    let fin = set.certify(proposal, &[&validator]).unwrap().encode();
    let bundle = SyncBundle::build(
        built.block.header.clone(),
        fin,
        Vec::new(),
        None,
        state.kiosk_tree(),
        built.state.kiosk_tree(),
    );
    let mut kiosk = KioskSnapshot::from_genesis(&genesis).unwrap();
    kiosk.apply(&bundle).unwrap();
    let mut it = issuers.into_iter();
    (kiosk, it.next().unwrap(), it.next().unwrap())
}

fn ssi_jwk(key: &SoftwareKey, kid: &str) -> ssi::JWK {
    serde_json::from_str(&Jwk::from_private(key, Some(kid.to_owned())).to_json()).unwrap()
}

fn credential(issuer: &Did) -> JsonCredential {
    serde_json::from_value(serde_json::json!({
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "type": ["VerifiableCredential"],
        "issuer": issuer.as_str(),
        "validFrom": "2026-01-01T00:00:00Z",
        "validUntil": "2031-01-01T00:00:00Z",
        "credentialSubject": {"id": "urn:uuid:6a1c1b1e-citizen", "residentOf": "Civitas"},
    }))
    .unwrap()
}

async fn sign(cred: JsonCredential, key: &SoftwareKey, kid: &str) -> ssi::claims::jws::JwsBuf {
    JwsPayload::sign(&JoseVc(cred), &ssi_jwk(key, kid))
        .await
        .unwrap()
}

/// ssi's verdict: Ok(true) valid, Ok(false) invalid, Err could not verify.
async fn verify(
    jws: &ssi::claims::jws::JwsSlice,
    resolver: &DidCivis,
    year: i32,
) -> Result<bool, String> {
    let vmr = resolver.clone().into_vm_resolver::<AnyMethod>();
    let params = VerificationParameters::from_resolver(&vmr)
        .with_date_time(Utc.with_ymd_and_hms(year, 6, 1, 12, 0, 0).unwrap());
    let decoded = JoseVc::decode_any(jws).map_err(|e| e.to_string())?;
    match decoded.verify(&params).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(_)) => Ok(false),
        Err(ssi::claims::ProofValidationError::InvalidSignature) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn ssi_verifies_a_did_civis_credential_from_the_kiosk_snapshot() {
    futures::executor::block_on(async {
        let (kiosk, alice, bob) = snapshot();
        let resolver = DidCivis::from_snapshot(&kiosk);
        // ssi's own resolution sees the document.
        let out = resolver
            .resolve(ssi::dids::DID::new(alice.did.as_str()).unwrap())
            .await
            .unwrap();
        assert_eq!(out.document.id.as_str(), alice.did.as_str());

        let kid = alice.did.key_url(1).to_string();
        let jws = sign(credential(&alice.did), &alice.key, &kid).await;
        assert_eq!(verify(&jws, &resolver, 2026).await, Ok(true));
        resolver
            .check_issuer_binding(&kid, alice.did.as_str())
            .unwrap();

        // Expired at the fixed time: invalid.
        assert_eq!(verify(&jws, &resolver, 2032).await, Ok(false));

        // A tampered payload: invalid.
        let text = jws.as_str();
        let parts: Vec<&str> = text.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = String::from_utf8(b64.decode(parts[1]).unwrap())
            .unwrap()
            .replace("Civitas", "Elsewhere");
        let forged = format!("{}.{}.{}", parts[0], b64.encode(payload), parts[2]);
        let forged = ssi::claims::jws::JwsVec::new(forged.into_bytes()).unwrap();
        assert_eq!(verify(&forged, &resolver, 2026).await, Ok(false));

        // Signed by a key of a DID the registry does not know: cannot be verified.
        let stranger = key("stranger");
        let stranger_did = Did::from_inception(
            stranger.public_key(),
            &KeyCommitment::to(key("s2").public_key()),
        );
        let kid_s = stranger_did.key_url(1).to_string();
        let jws_s = sign(credential(&stranger_did), &stranger, &kid_s).await;
        assert!(verify(&jws_s, &resolver, 2026).await.is_err());

        // The checks ssi leaves out. Bob signs a credential naming Alice as issuer: ssi accepts
        // the signature (Bob's key is real), the binding check refuses it.
        let kid_b = bob.did.key_url(1).to_string();
        let jws_b = sign(credential(&alice.did), &bob.key, &kid_b).await;
        assert_eq!(
            verify(&jws_b, &resolver, 2026).await,
            Ok(true),
            "ssi alone accepts"
        );
        assert!(
            resolver
                .check_issuer_binding(&kid_b, alice.did.as_str())
                .is_err()
        );
        // A key id that is not in the document.
        assert!(
            resolver
                .check_issuer_binding(&alice.did.key_url(7).to_string(), alice.did.as_str())
                .is_err()
        );
    });
}
