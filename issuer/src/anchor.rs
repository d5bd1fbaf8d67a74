//! The chain worker: registers each agency's issuer DID and status list, and carries pending
//! status changes to the chain as batched `update-status` transactions.
//!
//! Every transaction is written to the outbox *before* it is sent, with the changes it carries
//! bound to it, so after a crash or a registry outage the same bytes (the same sequence number)
//! are sent again: a change is never applied twice and never signed into two transactions. One
//! transaction per agency is in flight at a time, which keeps changes in the order they were
//! decided.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use civis_core::api::TxOutcome;
use civis_core::chain::state::status_uri;
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::status::StatusDelta;
use civis_registry_client::{Client, Error as ClientError};
use sha2::Digest as _;

use crate::agency::Agency;
use crate::error::{Error, Result};
use crate::service::Service;
use crate::store::OutboxRow;

/// Bits per status entry (Token Status List: valid / revoked / suspended).
const BITS: u8 = 2;

fn registry(e: ClientError) -> Error {
    Error::Registry(e.to_string())
}

/// What one round did, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Transactions that became final.
    pub final_txs: u64,
    /// Status changes anchored.
    pub anchored: u64,
}

/// Run rounds until `stop` fires; registry failures are counted and retried.
pub async fn run(svc: Arc<Service>, client: Client, stop: Arc<tokio::sync::Notify>) {
    let idle = Duration::from_millis(svc.config.anchoring.idle_ms);
    loop {
        let mut busy = false;
        let mut failed = false;
        for agency in svc.agencies.values() {
            let result = round(&svc, &client, agency).await;
            svc.set_anchoring(agency.id(), result.is_ok());
            match result {
                Ok(r) => busy |= r.final_txs > 0,
                Err(e) => {
                    failed = true;
                    svc.metrics.registry_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(agency = agency.id(), code = e.code(), "anchoring: {e}");
                }
            }
        }
        if busy && !failed {
            continue;
        }
        // After a failure wait longer: an outage or a refusal is not fixed by hammering.
        let pause = if failed {
            idle.max(Duration::from_secs(2))
        } else {
            idle
        };
        tokio::select! {
            () = stop.notified() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One round for one agency: finish what is in flight, register what is missing, then send
/// the next batch of pending changes.
pub async fn round(svc: &Service, client: &Client, agency: &Agency) -> Result<Round> {
    let _chain = agency.chain.lock().await;
    let mut out = Round::default();
    if crate::rotate::in_progress(agency) {
        // A rotation was cut short: finish it before signing anything else.
        crate::rotate::finish(svc, client, agency).await?;
    }
    for row in svc.store.unfinished_txs(agency.id()).await? {
        if !finish(svc, client, &row, false).await? {
            // Still pending: keep the order, try again next round.
            return Ok(out);
        }
        out.final_txs += 1;
    }
    if !svc.is_registered(agency.id()) {
        if register(svc, client, agency).await? {
            svc.set_registered(agency.id());
        } else {
            out.final_txs += 1;
            return Ok(out);
        }
    }
    let max = i64::try_from(svc.config.anchoring.max_changes_per_tx).unwrap_or(i64::MAX);
    let pending = svc
        .store
        .pending_changes(agency.id(), &agency.config.status_list, max)
        .await?;
    if pending.is_empty() {
        return Ok(out);
    }
    let seq = client.did(&agency.did).await.map_err(registry)?.next_seq;
    let mut changes = Vec::with_capacity(pending.len());
    for c in &pending {
        let idx = u64::try_from(c.idx).map_err(|_| Error::Corrupt("index"))?;
        let value = u8::try_from(c.value).map_err(|_| Error::Corrupt("value"))?;
        changes.push((idx, value));
    }
    let op = Op::UpdateStatus {
        list: agency.config.status_list.clone(),
        delta: StatusDelta::from_changes(changes),
    };
    let ids: Vec<i64> = pending.iter().map(|c| c.id).collect();
    send(svc, client, agency, seq, "update-status", op, &ids).await?;
    out.final_txs += 1;
    out.anchored += ids.len() as u64;
    Ok(out)
}

/// Make sure the agency's DID and status list are on chain; true once both are. Each
/// registration transaction goes through the outbox like any other; a final one is not sent
/// again even while a lagging node does not show it yet.
async fn register(svc: &Service, client: &Client, agency: &Agency) -> Result<bool> {
    let store = &svc.store;
    let answer = match client.did(&agency.did).await {
        Ok(a) => Some(a),
        Err(ClientError::NotFound(_)) => None,
        Err(e) => return Err(registry(e)),
    };
    let Some(answer) = answer else {
        if !store.has_final(agency.id(), "create-did").await? {
            let op = Op::CreateDid {
                key: agency.keys().signer.public_key(),
                next: agency.keys().next,
            };
            send(svc, client, agency, 0, "create-did", op, &[]).await?;
        }
        return Ok(false);
    };
    if store.has_final(agency.id(), "create-status-list").await? {
        return Ok(true);
    }
    let uri = status_uri(&agency.did, &agency.config.status_list);
    match client.status_list(&uri.replace('/', "%2F")).await {
        Ok(_) => Ok(true),
        Err(ClientError::NotFound(_)) => {
            let op = Op::CreateStatusList {
                list: agency.config.status_list.clone(),
                bits: BITS,
                size: agency.config.status_list_size,
            };
            // Refused until governance accredits the issuer; the worker backs off and asks
            // again.
            send(
                svc,
                client,
                agency,
                answer.next_seq,
                "create-status-list",
                op,
                &[],
            )
            .await?;
            Ok(true)
        }
        Err(e) => Err(registry(e)),
    }
}

/// Sign, stage in the outbox (with the changes it carries), send, and wait for the outcome.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    svc: &Service,
    client: &Client,
    agency: &Agency,
    seq: u64,
    kind: &str,
    op: Op,
    change_ids: &[i64],
) -> Result<()> {
    let keys = agency.keys();
    let tx = SignedTx::sign(
        Tx {
            chain: svc.chain_id.clone(),
            seq,
            op,
        },
        keys.kid.clone(),
        keys.signer.as_ref(),
    )?;
    let bytes = tx.bytes().to_vec();
    let row = OutboxRow {
        id: hex::encode(sha2::Sha256::digest(&bytes)),
        seq: i64::try_from(seq).map_err(|_| Error::Corrupt("seq"))?,
        kind: kind.to_owned(),
        bytes,
    };
    svc.store
        .stage_tx(agency.id(), &row, change_ids, svc.now())
        .await?;
    if !finish(svc, client, &row, true).await? {
        return Err(Error::Registry(format!("{kind} not final yet; will retry")));
    }
    Ok(())
}

/// Send a staged transaction if the registry does not know it, and record its outcome.
/// Returns false while it is still pending. A `fresh` one was just staged and is sent without
/// asking first: signatures are deterministic, so a transaction refused earlier (say, before
/// governance accredited the issuer) has the same id, and the registry would answer with that
/// old refusal.
async fn finish(svc: &Service, client: &Client, row: &OutboxRow, fresh: bool) -> Result<bool> {
    let known = if fresh {
        None
    } else {
        match client.transaction(&row.id).await {
            Ok(a) => Some(a.outcome),
            Err(ClientError::NotFound(_)) => None,
            Err(e) => return Err(registry(e)),
        }
    };
    let outcome = match known {
        Some(TxOutcome::Pending) | None => {
            if known.is_none() {
                match client.submit(&row.bytes).await {
                    Ok(_) | Err(ClientError::Conflict(_)) => {}
                    Err(ClientError::Refused(reason)) => {
                        svc.store.finish_tx(&row.id, None).await?;
                        return Err(Error::Registry(format!("{} refused: {reason}", row.kind)));
                    }
                    Err(e) => return Err(registry(e)),
                }
            }
            let wait = Duration::from_secs(svc.config.anchoring.wait_secs);
            match client.wait(&row.id, wait).await {
                Ok(a) => a.outcome,
                Err(ClientError::Timeout(..)) => return Ok(false),
                Err(e) => return Err(registry(e)),
            }
        }
        Some(o) => o,
    };
    match outcome {
        TxOutcome::Included { height } => {
            let h = i64::try_from(height).map_err(|_| Error::Corrupt("height"))?;
            let n = svc.store.finish_tx(&row.id, Some(h)).await?;
            svc.metrics.anchored.fetch_add(n, Ordering::Relaxed);
            if row.kind == "update-status" {
                svc.metrics.anchor_txs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(true)
        }
        TxOutcome::Refused { reason } => {
            svc.store.finish_tx(&row.id, None).await?;
            Err(Error::Registry(format!("{} refused: {reason}", row.kind)))
        }
        TxOutcome::Pending => Ok(false),
    }
}
