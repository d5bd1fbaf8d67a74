//! Minting: a citizen credential for a device key, with its status reference, signed by the
//! agency's key. Pure apart from the signer; time and randomness are parameters.
//!
//! Status indexes come from [`IndexPool`]: ranges reserved durably in the database before any
//! index in them is used, so an index is never handed out twice, whatever crashes where. A
//! crash burns the rest of a range (documented in specs/issuer-storage.md).

use std::collections::HashMap;

use civis_core::Timestamp;
use civis_core::chain::state::status_uri;
use civis_core::crypto::EcPublicKey;
use civis_core::evote;
use civis_core::mdoc::citizen;
use civis_core::mdoc::{self, IssueParams, IssuerKeyId, StatusRef, TDate, ValidityInfo};
use civis_core::vrf::VrfPublicKey;
use rand_core::CryptoRngCore;
use tokio::sync::Mutex;

use crate::agency::Agency;
use crate::enroll::Attributes;
use crate::error::{Error, Result};
use crate::service::{Actor, CrashPoint, Service};
use crate::store::{CredentialRow, MintedFor, Store};
use rand_core::OsRng;

/// Indexes reserved per round trip to the database.
pub const RESERVE: i64 = 256;

/// Reserved, not yet used status indexes, per (agency, list).
#[derive(Debug, Default)]
pub struct IndexPool {
    ranges: Mutex<HashMap<(String, String), std::ops::Range<i64>>>,
}

impl IndexPool {
    /// The next fresh index of the agency's list.
    pub async fn next(&self, store: &Store, agency: &Agency) -> Result<i64> {
        let key = (agency.id().to_owned(), agency.config.status_list.clone());
        let mut ranges = self.ranges.lock().await;
        let range = ranges.entry(key).or_insert(0..0);
        if range.is_empty() {
            let size = i64::try_from(agency.config.status_list_size)
                .map_err(|_| Error::Config("status_list_size too large".into()))?;
            *range = store
                .reserve_indexes(agency.id(), &agency.config.status_list, RESERVE, size)
                .await?;
        }
        let idx = range.start;
        range.start += 1;
        Ok(idx)
    }
}

/// A card credential to mint: for whom, bound to which card, under which status entry and
/// request keys.
#[derive(Debug)]
pub struct CardCredential<'a> {
    /// Resident id.
    pub resident: &'a str,
    /// The card key (SEC1), recorded when it was checked.
    pub card_key: &'a [u8],
    /// The card's VRF key (SEC1 compressed), recorded with the card key.
    pub vrf_key: Option<&'a [u8]>,
    /// Card serial.
    pub serial: &'a [u8],
    /// Card batch.
    pub batch: &'a str,
    /// Status list.
    pub list: &'a str,
    /// Status index (allocated and recorded before).
    pub idx: i64,
    /// The request key the credential row carries (unique per agency).
    pub credential_key: String,
    /// The request key the audit entry names.
    pub request_key: &'a str,
}

/// Sign a card credential and record it, moving its personalization or renewal to `minted` in
/// the same transaction. A concurrent request that recorded first wins; its credential is the
/// one. Nothing signed leaves the service before it is recorded.
pub async fn for_card(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    owner: MintedFor,
    owner_id: &str,
    card: &CardCredential<'_>,
    now: i64,
) -> Result<()> {
    let attributes = svc
        .store
        .resident(agency.id(), card.resident)
        .await?
        .ok_or(Error::NotFound("resident"))?;
    let attributes = Attributes::from_bytes(&attributes)?;
    let device_key = EcPublicKey::from_sec1(card.card_key)?;
    let vrf_key = card.vrf_key.map(VrfPublicKey::from_sec1).transpose()?;
    let idx = u64::try_from(card.idx).map_err(|_| Error::Corrupt("index"))?;
    let bytes = mint(
        agency,
        &attributes,
        &device_key,
        vrf_key.as_ref(),
        idx,
        Timestamp(now),
        &mut OsRng,
    )?;
    svc.crash_point(CrashPoint::AfterSign);
    let credential = CredentialRow {
        id: svc.new_id(),
        agency: agency.id().to_owned(),
        resident: card.resident.to_owned(),
        request_key: card.credential_key.clone(),
        list: card.list.to_owned(),
        idx: card.idx,
        card_serial: Some(card.serial.to_vec()),
        batch: Some(card.batch.to_owned()),
        issuer_signed: bytes,
        state: "minted".into(),
        wanted: 0,
    };
    let audit = actor.audit(agency, "mint", &credential.id, card.request_key, now);
    match svc
        .store
        .record_minted(owner, owner_id, &credential, &audit)
        .await
    {
        Ok(_) => {
            svc.metrics.minted();
            Ok(())
        }
        Err(e) if e.is_unique_violation() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sign a credential for `device_key` with status entry `idx` of the agency's list, valid from
/// `now` for the agency's validity period. A card's `vrf_key` becomes the issuer-signed element
/// `vrf_key`, and the MSO then lets the card device-sign its election pseudonym. Returns the
/// IssuerSigned bytes the card stores.
pub fn mint(
    agency: &Agency,
    attributes: &Attributes,
    device_key: &EcPublicKey,
    vrf_key: Option<&VrfPublicKey>,
    idx: u64,
    now: Timestamp,
    rng: &mut dyn CryptoRngCore,
) -> Result<Vec<u8>> {
    if agency.rotating() {
        // The chain may already name the next key: a credential signed now with the current
        // one would not verify.
        return Err(Error::Unavailable(
            "the issuer key is being rotated; retry in a moment",
        ));
    }
    let today = time::OffsetDateTime::from_unix_timestamp(now.0)
        .map_err(|_| Error::Config("clock out of range".into()))?
        .date();
    let record = attributes.record(&agency.config, today)?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let mut name_spaces = record.to_name_spaces(&today.format(fmt).unwrap_or_default())?;
    if let (Some(vrf), Some((_, elements))) = (vrf_key, name_spaces.first_mut()) {
        elements.push((
            evote::VRF_KEY.to_owned(),
            ciborium::Value::Bytes(vrf.to_bytes().to_vec()),
        ));
    }
    let until = now.plus_secs(i64::from(agency.config.validity_days) * 86_400);
    let params = IssueParams {
        doc_type: citizen::DOC_TYPE,
        name_spaces: &name_spaces,
        device_key,
        validity: ValidityInfo {
            signed: TDate::new(now),
            valid_from: TDate::new(now),
            valid_until: TDate::new(until),
            expected_update: None,
        },
        status: Some(StatusRef {
            idx,
            uri: status_uri(&agency.did, &agency.config.status_list),
        }),
        key_authorizations: vrf_key.map(|_| evote::key_authorizations()),
    };
    // The key current now: after a rotation, new credentials use the new key at once.
    let keys = agency.keys();
    let signed = mdoc::issue(
        &params,
        keys.signer.as_ref(),
        &IssuerKeyId::Kid(keys.kid.to_string()),
        rng,
    )
    .map_err(|e| match e {
        civis_core::Error::Signer(m) => Error::Signing(m),
        other => Error::Core(other),
    })?;
    Ok(mdoc::issue::encode_issuer_signed(&signed))
}
