//! Status management: suspend, unsuspend, revoke (final), a whole batch, a lost card. Each
//! decision is recorded as a pending change with its audit entry; the anchoring worker
//! ([`crate::anchor`]) carries pending changes to the chain in batches.

use civis_core::issuer_api::{
    BulkStatusAnswer, CredentialStatus, StatusChangeAnswer, StatusRequest,
};
use civis_core::status::Status;

use crate::agency::Agency;
use crate::error::{Error, Result};
use crate::service::{Actor, Service, check_request_key};
use crate::store::{ChangeRow, NewChange};

/// Token Status List value of a wanted status.
pub fn value_name(v: i64) -> &'static str {
    match v {
        0 => "valid",
        1 => "revoked",
        2 => "suspended",
        _ => "unknown",
    }
}

/// The value an action sets.
fn target(action: &str) -> Result<i64> {
    Ok(match action {
        "suspend" => i64::from(Status::Suspended.value()),
        "unsuspend" => i64::from(Status::Valid.value()),
        "revoke" => i64::from(Status::Invalid.value()),
        _ => {
            return Err(Error::Invalid {
                field: "action",
                why: "must be suspend, unsuspend or revoke",
            });
        }
    })
}

/// Change one credential's status.
pub async fn change(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    credential: &str,
    req: &StatusRequest,
) -> Result<CredentialStatus> {
    check_request_key(&req.request_key)?;
    let value = target(&req.action)?;
    let row = svc
        .store
        .credential(agency.id(), credential)
        .await?
        .ok_or(Error::NotFound("credential"))?;
    if let Some((other, set)) = svc
        .store
        .change_of_request(agency.id(), &req.request_key)
        .await?
        && (other != row.id || set != value)
    {
        return Err(Error::Conflict(
            "this request key changed another credential or asked for another action; use a \
             new request key",
        ));
    }
    if row.wanted == 1 && value != 1 {
        return Err(Error::Conflict("the credential is revoked for good"));
    }
    // Recorded even when it changes nothing (a change to the current value): the key then
    // names this request, and a late retry of it cannot undo a later decision.
    let change = NewChange {
        credential: row.id.clone(),
        list: row.list.clone(),
        idx: row.idx,
        value,
    };
    let audit = actor.audit(agency, "status", &row.id, &req.request_key, svc.now());
    let what = format!("{}:{value}", row.id);
    let n = svc
        .store
        .record_changes(&[change], &audit, ("status", &what))
        .await?;
    svc.metrics
        .status_changes
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    status_of(svc, agency, credential).await
}

/// What the issuer wants and what the chain holds for a credential.
pub async fn status_of(
    svc: &Service,
    agency: &Agency,
    credential: &str,
) -> Result<CredentialStatus> {
    let row = svc
        .store
        .credential(agency.id(), credential)
        .await?
        .ok_or(Error::NotFound("credential"))?;
    let changes = svc.store.changes_of(&row.id).await?;
    let answer = |c: &ChangeRow| StatusChangeAnswer {
        change: u64::try_from(c.id).unwrap_or(0),
        value: value_name(c.value).to_owned(),
        state: if c.state == "anchored" {
            "anchored".into()
        } else {
            "pending".into()
        },
        height: c.height.and_then(|h| u64::try_from(h).ok()),
    };
    Ok(CredentialStatus {
        credential: row.id.clone(),
        wanted: value_name(row.wanted).to_owned(),
        anchored: changes
            .iter()
            .rev()
            .find(|c| c.state == "anchored")
            .map(answer),
        pending: changes
            .iter()
            .filter(|c| c.state != "anchored")
            .map(answer)
            .collect(),
    })
}

/// Suspend every credential of a card batch in one step.
pub async fn suspend_batch(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    batch: &str,
    request_key: &str,
) -> Result<BulkStatusAnswer> {
    check_request_key(request_key)?;
    if agency.transport_key(batch).is_none() {
        return Err(Error::NotFound("batch"));
    }
    let audit = actor.audit(agency, "batch-suspend", batch, request_key, svc.now());
    let (n, created) = svc.store.suspend_batch(batch, &audit).await?;
    if created {
        svc.metrics
            .status_changes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(BulkStatusAnswer {
        credentials: n,
        created,
    })
}

/// A card is reported lost: suspend its credentials at once.
pub async fn card_lost(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    serial_hex: &str,
    request_key: &str,
) -> Result<BulkStatusAnswer> {
    check_request_key(request_key)?;
    let serial = hex::decode(serial_hex)
        .ok()
        .filter(|s| s.len() == 16)
        .ok_or(Error::NotFound("card"))?;
    let rows = svc.store.credentials_on_card(agency.id(), &serial).await?;
    if rows.is_empty() {
        return Err(Error::NotFound("card"));
    }
    let changes: Vec<NewChange> = rows
        .iter()
        .filter(|r| r.wanted == 0)
        .map(|r| NewChange {
            credential: r.id.clone(),
            list: r.list.clone(),
            idx: r.idx,
            value: i64::from(Status::Suspended.value()),
        })
        .collect();
    let audit = actor.audit(agency, "card-lost", serial_hex, request_key, svc.now());
    let n = svc
        .store
        .record_changes(&changes, &audit, ("lost", &hex::encode(&serial)))
        .await?;
    svc.metrics
        .status_changes
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok(BulkStatusAnswer {
        credentials: n,
        created: n > 0,
    })
}
