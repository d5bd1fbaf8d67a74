//! Card personalization as one resumable state machine recorded in the database
//! (specs/issuer-personalization.md). The counter relays: it reads the card's facts, sends
//! them, and plays the commands it gets back; the issuer keeps the transport key, the state
//! and every decision. Each transition is a compare-and-set on the recorded state, so retried
//! and concurrent requests for one card converge on one credential.
//!
//! ```text
//! started ──card key checked──▶ key_checked ──index reserved──▶ index_allocated
//!    ──credential signed and recorded──▶ minted ──PIN, PUK, governance, elements, credential
//!    written──▶ written ──LOCK seen──▶ issued
//! ```

use civis_core::card::{self, TransportKey};
use civis_core::crypto::EcPublicKey;
use civis_core::issuer_api::{CardFacts, PersonalizeRequest, PersonalizeStep};

use crate::agency::Agency;
use crate::error::{Error, Result};
use crate::mint::CardCredential;
use crate::service::{Actor, CrashPoint, Service, check_request_key};
use crate::store::{MintedFor, PersoRow};

/// The slot the citizen credential goes in.
pub const SLOT: u8 = 0;

/// Transitions tried per request before answering (a request moves at most through every
/// state once).
const MAX_TRANSITIONS: usize = 8;

fn step(row: &PersoRow, commands: Vec<Vec<u8>>, needs: Vec<String>) -> PersonalizeStep {
    PersonalizeStep {
        personalization: row.id.clone(),
        state: row.state.clone(),
        commands: commands.iter().map(hex::encode).collect(),
        needs,
        credential: row.credential.clone(),
        done: row.state == "issued",
    }
}

fn serial_of(facts: &CardFacts) -> Result<[u8; 16]> {
    facts
        .serial
        .as_slice()
        .try_into()
        .map_err(|_| Error::Invalid {
            field: "card.serial",
            why: "must be 16 bytes",
        })
}

fn card_key_of(facts: &CardFacts) -> Result<Option<Vec<u8>>> {
    facts
        .public_key
        .as_deref()
        .map(|h| {
            hex::decode(h).map_err(|_| Error::Invalid {
                field: "card.publicKey",
                why: "must be hex",
            })
        })
        .transpose()
}

/// The card's VRF key from its facts, checked to be a P-256 point (compressed, 33 bytes).
/// Cards made before e-voting have none; their credentials then carry no pseudonym key.
fn vrf_key_of(facts: &CardFacts) -> Result<Option<Vec<u8>>> {
    let Some(h) = facts.vrf_key.as_deref() else {
        return Ok(None);
    };
    let bad = || Error::Invalid {
        field: "card.vrfKey",
        why: "must be a compressed P-256 point (33 bytes, hex)",
    };
    let key = hex::decode(h).map_err(|_| bad())?;
    if key.len() != 33 || civis_core::vrf::VrfPublicKey::from_sec1(&key).is_err() {
        return Err(bad());
    }
    Ok(Some(key))
}

fn digits(field: &'static str, s: &str, len: std::ops::RangeInclusive<usize>) -> Result<()> {
    if len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Invalid {
            field,
            why: if field == "pin" {
                "must be 4 to 12 digits"
            } else {
                "must be 8 to 16 digits"
            },
        })
    }
}

/// The commands that write everything but LOCK, skipping what the card's facts show written,
/// credential last (so a credential in its slot means everything before it was written).
#[allow(clippy::too_many_arguments)]
fn write_commands(
    key: &TransportKey,
    serial: &[u8; 16],
    facts: &CardFacts,
    pin: &str,
    puk: &str,
    governance: &[u8],
    pin_elements: &[u8],
    credential: &[u8],
) -> Vec<Vec<u8>> {
    let items: [(bool, u8, u16, &[u8]); 5] = [
        (
            facts.pin_set,
            card::ins::PUT_DATA,
            card::item::PIN,
            pin.as_bytes(),
        ),
        (
            facts.puk_set,
            card::ins::PUT_DATA,
            card::item::PUK,
            puk.as_bytes(),
        ),
        (
            facts.has_root,
            card::ins::PUT_DATA,
            card::item::GOVERNANCE,
            governance,
        ),
        // Not visible in the facts: written every time (it is small).
        (
            false,
            card::ins::PUT_DATA,
            card::item::PIN_ELEMENTS,
            pin_elements,
        ),
        (
            false,
            card::ins::PUT_CREDENTIAL,
            u16::from(SLOT) << 8,
            credential,
        ),
    ];
    let counter = facts.perso_counter;
    let mut out = Vec::new();
    let todo = items.into_iter().filter(|(done, ..)| !done);
    for (n, (_, ins, p1p2, body)) in todo.enumerate() {
        let [p1, p2] = p1p2.to_be_bytes();
        let c = counter.wrapping_add(u32::try_from(n).unwrap_or(0));
        for cmd in key.command(serial, c, [ins, p1, p2], body, 255) {
            out.push(cmd.encode().unwrap_or_default());
        }
    }
    out
}

fn single(key: &TransportKey, serial: &[u8; 16], counter: u32, ins: u8) -> Vec<Vec<u8>> {
    key.command(serial, counter, [ins, 0, 0], &[], 255)
        .iter()
        .map(|c| c.encode().unwrap_or_default())
        .collect()
}

/// Start or continue a personalization; returns what the counter does next.
pub async fn advance(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    req: &PersonalizeRequest,
) -> Result<PersonalizeStep> {
    check_request_key(&req.request_key)?;
    let transport = agency
        .transport_key(&req.batch)
        .ok_or(Error::NotFound("batch"))?;
    // A locked card's facts are sealed to its batch's key.
    let facts = &req.card.unseal([transport]).map_err(|_| {
        Error::CardRefused("the card's sealed facts do not open under the batch's transport key")
    })?;
    let serial = serial_of(facts)?;
    let store = &svc.store;
    let now = svc.now();
    let mut row = match store
        .perso_by_request(agency.id(), &req.request_key)
        .await?
    {
        Some(row) => row,
        None => {
            if store.resident(agency.id(), &req.resident).await?.is_none() {
                return Err(Error::NotFound("resident"));
            }
            if facts.locked {
                return Err(Error::CardRefused("the card is locked"));
            }
            let row = PersoRow {
                id: svc.new_id(),
                agency: agency.id().to_owned(),
                request_key: req.request_key.clone(),
                resident: req.resident.clone(),
                batch: req.batch.clone(),
                serial: serial.to_vec(),
                state: "started".into(),
                card_key: None,
                vrf_key: None,
                list: None,
                idx: None,
                credential: None,
            };
            let audit = actor.audit(agency, "personalize", &row.id, &req.request_key, now);
            match store.insert_perso(&row, &audit).await {
                Ok(()) => row,
                Err(e) if e.is_unique_violation() => {
                    // A concurrent duplicate of this request, or another request for this card.
                    store
                        .perso_by_request(agency.id(), &req.request_key)
                        .await?
                        .ok_or(Error::Conflict(
                            "this card is already personalized under another request key",
                        ))?
                }
                Err(e) => return Err(e),
            }
        }
    };
    if row.serial != serial || row.resident != req.resident || row.batch != req.batch {
        return Err(Error::Conflict(
            "this request key was used for another card, resident or batch",
        ));
    }
    let facts_key = card_key_of(facts)?;
    for _ in 0..MAX_TRANSITIONS {
        match row.state.as_str() {
            "started" => {
                let Some(key) = &facts_key else {
                    return Ok(step(
                        &row,
                        single(
                            transport,
                            &serial,
                            facts.perso_counter,
                            card::ins::GENERATE_KEY,
                        ),
                        vec![],
                    ));
                };
                let vrf_key = vrf_key_of(facts)?;
                let checked = match check_card_key(svc, agency, &row, key).await {
                    Ok(()) => store
                        .record_card_key(&row, key, vrf_key.as_deref(), now)
                        .await
                        .map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = checked {
                    // A concurrent request of this same personalization may have recorded
                    // the key first; then the key is ours and the state has moved on.
                    let seen = e.is_unique_violation() || matches!(e, Error::CardKeyRefused(_));
                    let fresh = store
                        .perso_by_request(agency.id(), &req.request_key)
                        .await?;
                    match fresh {
                        Some(f) if seen && f.state != "started" => {}
                        _ if e.is_unique_violation() => {
                            return Err(Error::CardKeyRefused("seen before on another card"));
                        }
                        _ => return Err(e),
                    }
                }
            }
            "key_checked" => {
                same_key(&row, facts_key.as_deref())?;
                let idx = svc.pool.next(store, agency).await?;
                store
                    .record_index(
                        MintedFor::Personalization,
                        &row.id,
                        &agency.config.status_list,
                        idx,
                        now,
                    )
                    .await?;
                svc.crash_point(CrashPoint::AfterIndex);
            }
            "index_allocated" => {
                same_key(&row, facts_key.as_deref())?;
                mint_for_card(svc, agency, actor, &row, now).await?;
            }
            "minted" => {
                same_key(&row, facts_key.as_deref())?;
                let written = facts.pin_set
                    && facts.puk_set
                    && facts.has_root
                    && facts.credentials.contains(&SLOT);
                if written {
                    svc.crash_point(CrashPoint::AfterWrite);
                    store.move_perso(&row.id, "minted", "written", now).await?;
                } else if facts.locked {
                    return Err(Error::CardRefused(
                        "the card was locked without its credential",
                    ));
                } else {
                    let (Some(pin), Some(puk)) = (&req.pin, &req.puk) else {
                        return Ok(step(&row, vec![], vec!["pin".into(), "puk".into()]));
                    };
                    digits("pin", pin, 4..=12)?;
                    digits("puk", puk, 8..=16)?;
                    let credential = svc.credential_bytes(agency, &row).await?;
                    let elements = agency
                        .config
                        .pin_elements
                        .iter()
                        .map(|e| (civis_core::mdoc::citizen::NAMESPACE.to_owned(), e.clone()))
                        .collect::<Vec<_>>();
                    let commands = write_commands(
                        transport,
                        &serial,
                        facts,
                        pin,
                        puk,
                        &card::governance::GovernanceSet::inception_value(
                            &svc.chain_id,
                            &svc.governance,
                        ),
                        &card::pin_elements_value(&elements),
                        &credential,
                    );
                    return Ok(step(&row, commands, vec![]));
                }
            }
            "written" => {
                same_key(&row, facts_key.as_deref())?;
                if facts.locked {
                    let audit = actor.audit(
                        agency,
                        "issue",
                        row.credential.as_deref().unwrap_or_default(),
                        &req.request_key,
                        now,
                    );
                    store.record_issued(&row, &audit).await?;
                    svc.metrics.issued();
                } else {
                    let lock = single(transport, &serial, facts.perso_counter, card::ins::LOCK);
                    svc.crash_point(CrashPoint::BeforeLock);
                    return Ok(step(&row, lock, vec![]));
                }
            }
            "issued" => {
                same_key(&row, facts_key.as_deref())?;
                return Ok(step(&row, vec![], vec![]));
            }
            _ => return Err(Error::Corrupt("personalization state")),
        }
        row = store
            .perso_by_request(agency.id(), &req.request_key)
            .await?
            .ok_or(Error::Corrupt("personalization vanished"))?;
    }
    Ok(step(&row, vec![], vec![]))
}

fn same_key(row: &PersoRow, facts_key: Option<&[u8]>) -> Result<()> {
    match (&row.card_key, facts_key) {
        (Some(k), Some(f))
            if EcPublicKey::from_sec1(f)
                .is_ok_and(|f| f.uncompressed().as_slice() == k.as_slice()) =>
        {
            Ok(())
        }
        _ => Err(Error::CardRefused(
            "the card's key is not the one checked for this personalization",
        )),
    }
}

/// A device or card key as the issuer accepts it: an uncompressed SEC1 point on P-256 that is
/// not the generator (whose private key, 1, everyone knows) or its negation.
pub fn acceptable_key(key: &[u8]) -> std::result::Result<EcPublicKey, &'static str> {
    const G_X: [u8; 32] = [
        0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
        0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98,
        0xc2, 0x96,
    ];
    if key.len() != 65 || key.first() != Some(&0x04) {
        return Err("must be an uncompressed SEC1 point (65 bytes)");
    }
    let point = EcPublicKey::from_sec1(key).map_err(|_| "not a valid P-256 point")?;
    if key.get(1..33) == Some(&G_X[..]) {
        return Err("is a well-known key");
    }
    Ok(point)
}

async fn check_card_key(svc: &Service, agency: &Agency, row: &PersoRow, key: &[u8]) -> Result<()> {
    let point = acceptable_key(key).map_err(Error::CardKeyRefused)?;
    if agency.is_weak(&point) {
        return Err(Error::CardKeyRefused("on the weak-key list"));
    }
    if svc.store.card_key_seen(key).await? {
        return Err(Error::CardKeyRefused("seen before on another card"));
    }
    if svc.store.batch_suspended(agency.id(), &row.batch).await? {
        return Err(Error::CardRefused("the card's batch is suspended"));
    }
    Ok(())
}

async fn mint_for_card(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    row: &PersoRow,
    now: i64,
) -> Result<()> {
    let (Some(card_key), Some(idx)) = (&row.card_key, row.idx) else {
        return Err(Error::Corrupt("personalization without key or index"));
    };
    let card = CardCredential {
        resident: &row.resident,
        card_key,
        vrf_key: row.vrf_key.as_deref(),
        serial: &row.serial,
        batch: &row.batch,
        list: row.list.as_deref().unwrap_or_default(),
        idx,
        credential_key: row.request_key.clone(),
        request_key: &row.request_key,
    };
    crate::mint::for_card(
        svc,
        agency,
        actor,
        MintedFor::Personalization,
        &row.id,
        &card,
        now,
    )
    .await
}
