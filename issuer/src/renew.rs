//! Renewal of a locked card's credential before it expires (specs/issuer-personalization.md
//! §6), relayed by the counter like a personalization. The new credential is sealed to the
//! card key (only that card can open it) under the batch transport key's MAC; the card's
//! signed receipt is what moves the renewal to `issued`, and only then is the replaced
//! credential revoked, so a renewal cut short anywhere leaves the resident with a working
//! credential.
//!
//! ```text
//! started ──index reserved──▶ index_allocated ──new credential signed and recorded──▶ minted
//!    ──the card's receipt verified; old credential revoked──▶ issued
//! ```

use civis_core::card::{self, renewal};
use civis_core::cbor::CborForm;
use civis_core::crypto::EcPublicKey;
use civis_core::issuer_api::{RenewRequest, RenewStep};
use civis_core::mdoc::{IssuerSigned, MobileSecurityObject};
use rand_core::OsRng;

use crate::agency::Agency;
use crate::error::{Error, Result};
use crate::mint::CardCredential;
use crate::perso::SLOT;
use crate::service::{Actor, Service, check_request_key};
use crate::store::{MintedFor, PersoRow, RenewalRow};

/// Transitions tried per request before answering.
const MAX_TRANSITIONS: usize = 6;

fn step(row: &RenewalRow, commands: Vec<Vec<u8>>, counter: Option<u32>) -> RenewStep {
    RenewStep {
        renewal: row.id.clone(),
        state: row.state.clone(),
        commands: commands.iter().map(hex::encode).collect(),
        counter,
        replaces: row.replaces.clone(),
        credential: row.credential.clone(),
        done: row.state == "issued",
    }
}

/// The instant a stored credential stops being valid.
fn valid_until(issuer_signed: &[u8]) -> Result<i64> {
    let signed = IssuerSigned::from_slice(issuer_signed)?;
    let mso = MobileSecurityObject::from_issuer_auth(&signed.issuer_auth)?;
    Ok(mso.validity.valid_until.at.0)
}

/// Start or continue renewing the credential on a locked card; returns what the counter does
/// next.
pub async fn advance(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    req: &RenewRequest,
) -> Result<RenewStep> {
    check_request_key(&req.request_key)?;
    // A locked card's facts are sealed to its batch's key; the batch is inside them.
    let facts = &req.card.unseal(agency.transport_keys()).map_err(|_| {
        Error::CardRefused("the card's sealed facts open under none of this agency's batch keys")
    })?;
    let serial: [u8; 16] = facts
        .serial
        .as_slice()
        .try_into()
        .map_err(|_| Error::Invalid {
            field: "card.serial",
            why: "must be 16 bytes",
        })?;
    let store = &svc.store;
    // Only a card this agency personalized; another agency's card is not found.
    let card = store
        .issued_card(agency.id(), &serial)
        .await?
        .ok_or(Error::NotFound("card"))?;
    same_key(&card, facts.public_key.as_deref())?;
    if !facts.locked {
        return Err(Error::CardRefused("the card is not locked"));
    }
    let transport = agency
        .transport_key(&card.batch)
        .ok_or(Error::NotFound("batch"))?;
    let now = svc.now();
    let mut row = match store
        .renewal_by_request(agency.id(), &req.request_key)
        .await?
    {
        Some(row) => row,
        None => start(svc, agency, actor, &req.request_key, &serial, now).await?,
    };
    if row.serial != serial {
        return Err(Error::Conflict(
            "this request key was used for another card",
        ));
    }
    for _ in 0..MAX_TRANSITIONS {
        match row.state.as_str() {
            "started" => {
                let idx = svc.pool.next(store, agency).await?;
                store
                    .record_index(
                        MintedFor::Renewal,
                        &row.id,
                        &agency.config.status_list,
                        idx,
                        now,
                    )
                    .await?;
            }
            "index_allocated" => mint(svc, agency, actor, &card, &row, now).await?,
            "minted" => {
                if req.receipt.is_none() {
                    // The replaced credential was suspended or revoked meanwhile (a lost card):
                    // write nothing new to the card.
                    let old = store.credential(agency.id(), &row.replaces).await?;
                    if old.is_none_or(|c| c.wanted != 0) {
                        return Err(Error::CardRefused(
                            "the credential being renewed was suspended or revoked",
                        ));
                    }
                }
                let credential = svc
                    .credential_by_id(agency, row.credential.as_deref())
                    .await?;
                let key = card_key(&card)?;
                if let Some(receipt) = &req.receipt {
                    renewal::verify_receipt(
                        &key,
                        &serial,
                        receipt.counter,
                        SLOT,
                        &credential,
                        &receipt.signature,
                    )
                    .map_err(|_| Error::CardRefused("the card's receipt does not verify"))?;
                    let audit = actor.audit(
                        agency,
                        "renew",
                        row.credential.as_deref().unwrap_or_default(),
                        &req.request_key,
                        now,
                    );
                    store.record_renewed(&row, &audit).await?;
                    svc.metrics.issued();
                } else {
                    let counter = facts.perso_counter;
                    let sealed =
                        renewal::seal(&key, &serial, counter, SLOT, &credential, &mut OsRng)?;
                    let commands = transport
                        .command(
                            &serial,
                            counter,
                            [card::ins::RENEW_CREDENTIAL, SLOT, 0],
                            &sealed,
                            255,
                        )
                        .iter()
                        .map(|c| c.encode().unwrap_or_default())
                        .collect();
                    return Ok(step(&row, commands, Some(counter)));
                }
            }
            "issued" => return Ok(step(&row, vec![], None)),
            _ => return Err(Error::Corrupt("renewal state")),
        }
        row = store
            .renewal_by_request(agency.id(), &req.request_key)
            .await?
            .ok_or(Error::Corrupt("renewal vanished"))?;
    }
    Ok(step(&row, vec![], None))
}

/// Record a new renewal of the card's current credential: the newest one issued to it that is
/// still valid and unexpired.
async fn start(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    request_key: &str,
    serial: &[u8; 16],
    now: i64,
) -> Result<RenewalRow> {
    let store = &svc.store;
    let mut current = None;
    for c in store.credentials_on_card(agency.id(), serial).await? {
        if c.state == "issued" && c.wanted == 0 {
            let until = valid_until(&c.issuer_signed)?;
            if current.as_ref().is_none_or(|(u, _)| until > *u) {
                current = Some((until, c));
            }
        }
    }
    let Some((until, current)) = current else {
        return Err(Error::CardRefused(
            "the card holds no valid credential to renew (suspended, revoked or replaced)",
        ));
    };
    if until <= now {
        return Err(Error::CardRefused(
            "the card's credential has expired; personalize a new card",
        ));
    }
    let row = RenewalRow {
        id: svc.new_id(),
        agency: agency.id().to_owned(),
        request_key: request_key.to_owned(),
        replaces: current.id.clone(),
        serial: serial.to_vec(),
        state: "started".into(),
        list: None,
        idx: None,
        credential: None,
    };
    let audit = actor.audit(agency, "renewal", &current.id, request_key, now);
    match store.insert_renewal(&row, &audit).await {
        Ok(()) => Ok(row),
        Err(e) if e.is_unique_violation() => store
            .renewal_by_request(agency.id(), request_key)
            .await?
            .ok_or(Error::Conflict(
                "this credential is already being renewed under another request key",
            )),
        Err(e) => Err(e),
    }
}

fn card_key(card: &PersoRow) -> Result<EcPublicKey> {
    let key = card
        .card_key
        .as_deref()
        .ok_or(Error::Corrupt("issued card without key"))?;
    Ok(EcPublicKey::from_sec1(key)?)
}

fn same_key(card: &PersoRow, facts_key: Option<&str>) -> Result<()> {
    let facts = facts_key
        .and_then(|h| hex::decode(h).ok())
        .and_then(|k| EcPublicKey::from_sec1(&k).ok());
    match (&card.card_key, facts) {
        (Some(k), Some(f)) if f.uncompressed().as_slice() == k.as_slice() => Ok(()),
        _ => Err(Error::CardRefused(
            "the card's key is not the one recorded when it was personalized",
        )),
    }
}

async fn mint(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    card: &PersoRow,
    row: &RenewalRow,
    now: i64,
) -> Result<()> {
    let idx = row.idx.ok_or(Error::Corrupt("renewal without an index"))?;
    let card_key = card
        .card_key
        .as_deref()
        .ok_or(Error::Corrupt("issued card without key"))?;
    let spec = CardCredential {
        resident: &card.resident,
        card_key,
        vrf_key: card.vrf_key.as_deref(),
        serial: &card.serial,
        batch: &card.batch,
        list: row.list.as_deref().unwrap_or_default(),
        idx,
        // The credential's own request key names the renewal; personalizations use theirs bare.
        credential_key: format!("renewal/{}", row.request_key),
        request_key: &row.request_key,
    };
    crate::mint::for_card(svc, agency, actor, MintedFor::Renewal, &row.id, &spec, now).await
}
