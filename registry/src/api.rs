//! The node's HTTP API (axum). Formats are in `specs/registry-api.md` and `openapi.json`.
//!
//! Errors are JSON `{"error": kind, "message": text}` with a status that says whose fault it is:
//! 400 malformed, 404 unknown, 409 conflicting pending transaction, 413 too large, 422 refused by
//! the registry rules, 503 busy (mempool full; retry), 500 the node's own failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use civis_core::api::{
    BlockAnswer, BlockTx, DidAnswer, DidProof, ErrorBody, Health, MempoolHealth, MerkleProof,
    StatusListAnswer, StatusListBody, Submitted, TxAnswer, TxOutcome,
};
use civis_core::chain::tx::MAX_TX_LEN;
use civis_core::did::Did;
use serde::Deserialize;

use crate::bulk_reads::{BulkReads, Kind};
use crate::error::Error;
use crate::ledger::Ledger;
use crate::mempool::{Outcome, TxId};
use crate::store::Store;

/// The OpenAPI document served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Extra metrics text (the consensus engine's), appended to `/metrics`.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers share.
pub struct Api<S> {
    /// The ledger.
    pub ledger: Ledger<S>,
    /// This node's validator index, if it is one.
    pub validator: Option<usize>,
    /// Consensus metrics.
    pub metrics: Option<MetricsSource>,
    /// Unix seconds now (a parameter so tests can fix it).
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Bulk reads (sync bundles, status lists, blocks): caches, work permit, per-client limits.
    pub bulk: BulkReads,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Error::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            Error::Refused(_) | Error::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Error::RateLimited(secs) => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        error: "rate_limited".into(),
                        message: self.to_string(),
                    }),
                )
                    .into_response();
                if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Store(_) | Error::Consensus(_) | Error::Config(_) | Error::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        (
            status,
            Json(ErrorBody {
                error: kind.into(),
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// The router.
pub fn router<S: Store + Send + Sync + 'static>(api: Arc<Api<S>>) -> Router {
    Router::new()
        .route(
            "/v1/transactions",
            post(submit::<S>).layer(DefaultBodyLimit::max(MAX_TX_LEN)),
        )
        .route("/v1/transactions/{id}", get(transaction::<S>))
        .route("/v1/blocks/{height}", get(block::<S>))
        .route("/v1/dids/{did}", get(did::<S>))
        .route("/v1/status-lists/{id}", get(status_list::<S>))
        .route("/v1/sync", get(sync::<S>))
        .route("/v1/health", get(health::<S>))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::<S>))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(api)
}

async fn submit<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Ok((
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(ErrorBody {
                    error: "too_large".into(),
                    message: format!("a transaction is at most {MAX_TX_LEN} bytes"),
                }),
            )
                .into_response());
        }
        Err(e) => return Err(Error::Malformed(e.body_text())),
    };
    if body.is_empty() {
        return Err(Error::Malformed(
            "empty body: send the transaction's COSE_Sign1 bytes".into(),
        ));
    }
    let id = api.ledger.submit(&body)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            id: id.to_string(),
            status: "pending".into(),
        }),
    )
        .into_response())
}

async fn transaction<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
    Path(id): Path<String>,
) -> Result<Json<TxAnswer>, Error> {
    let raw: [u8; 32] = hex::decode(&id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::Malformed("a transaction id is 64 hex digits".into()))?;
    let out = api
        .ledger
        .outcome(&TxId(raw))
        .ok_or_else(|| Error::NotFound(format!("transaction {id} is not known to this node")))?;
    Ok(Json(TxAnswer {
        id,
        outcome: match out {
            Outcome::Pending => TxOutcome::Pending,
            Outcome::Included(height) => TxOutcome::Included { height },
            Outcome::Refused(reason) => TxOutcome::Refused { reason },
        },
    }))
}

async fn block<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
    extensions: axum::http::Extensions,
    Path(height): Path<u64>,
) -> Result<Response, Error> {
    admit(&api, Kind::Blocks, &extensions)?;
    let json = |bytes: Arc<Vec<u8>>| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            axum::body::Bytes::from_owner(ArcBytes(bytes)),
        )
            .into_response()
    };
    if let Some(hit) = api.bulk.cached_block(height) {
        return Ok(json(hit));
    }
    // No chain reaches such heights; stores index heights as i64, so ask them nothing.
    if i64::try_from(height).is_err() {
        return Err(Error::NotFound(format!(
            "no committed block at height {height}"
        )));
    }
    let (block, finalization) = api
        .ledger
        .store()
        .block(height)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no committed block at height {height}")))?;
    // Rendering a large block is CPU work: off the runtime threads, one at a time, cached.
    let rendered = api
        .bulk
        .render_block(height, move || {
            let h = &block.header;
            let answer = BlockAnswer {
                height: h.height,
                digest: h.digest(),
                parent: h.parent,
                time: h.time,
                epoch: h.epoch,
                state_root: h.state_root(),
                kiosk_root: h.kiosk_root,
                public_root: h.public_root,
                transactions: block
                    .txs
                    .iter()
                    .map(|t| BlockTx {
                        id: TxId::of(t).to_string(),
                        cose: t.bytes().to_vec(),
                    })
                    .collect(),
                header: civis_core::cbor::CborForm::to_vec(h),
                finalization,
            };
            serde_json::to_vec(&answer).map_err(|e| Error::Malformed(e.to_string()))
        })
        .await?;
    Ok(json(rendered))
}

async fn did<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
    Path(did): Path<String>,
) -> Result<Json<DidAnswer>, Error> {
    let did = Did::parse(&did)?;
    let view = api
        .ledger
        .did(&did)
        .ok_or_else(|| Error::NotFound(format!("{did} is not registered")))?;
    let document = serde_json::to_value(view.record.document(&did))
        .map_err(|e| Error::Malformed(e.to_string()))?;
    Ok(Json(DidAnswer {
        did: did.to_string(),
        document,
        seq: view.record.seq,
        next_seq: view.next_seq,
        height: view.header.height,
        header: civis_core::cbor::CborForm::to_vec(&view.header),
        state_root: view.header.state_root(),
        proof: DidProof {
            tree: "public".into(),
            record: view.value,
            merkle: MerkleProof::from(&view.proof),
        },
    }))
}

async fn status_list<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
    extensions: axum::http::Extensions,
    Path(id): Path<String>,
) -> Result<Json<StatusListAnswer>, Error> {
    // A bulk read like a sync bundle: compressing a list of millions of entries costs
    // milliseconds, so it shares the per-client allowance and runs off the runtime threads.
    admit(&api, Kind::Sync, &extensions)?;
    let (head, state) = api.ledger.head();
    let wanted: Option<u64> = id.parse().ok();
    let (uri, info, list) = state
        .status_lists()
        .find(|(uri, info, _)| wanted.map_or(*uri == id, |n| info.id == n))
        .map(|(uri, info, list)| (uri.to_owned(), *info, list.clone()))
        .ok_or_else(|| Error::NotFound(format!("no status list {id}")))?;
    let (size, bits) = (list.len(), list.bits().get());
    let lst = api
        .bulk
        .run(move || Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(list.compressed())))
        .await?;
    Ok(Json(StatusListAnswer {
        id: info.id,
        uri,
        size,
        height: head.height,
        status_list: StatusListBody { bits, lst },
    }))
}

/// Take one request from the caller's allowance of `kind`. Without a peer address (a handler
/// called in-process) there is no client to limit.
fn admit<S>(api: &Api<S>, kind: Kind, extensions: &axum::http::Extensions) -> Result<(), Error> {
    if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() {
        api.bulk
            .admit(kind, peer.ip(), std::time::Instant::now())
            .map_err(|wait| Error::RateLimited(wait.as_secs().max(1)))?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct SyncQuery {
    since: Option<u64>,
}

async fn sync<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
    extensions: axum::http::Extensions,
    Query(q): Query<SyncQuery>,
) -> Result<Response, Error> {
    admit(&api, Kind::Sync, &extensions)?;
    let bundle = api.bulk.bundle(&api.ledger, q.since).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/cbor")],
        axum::body::Bytes::from_owner(ArcBytes(bundle)),
    )
        .into_response())
}

/// Shares a cached bundle with the response body without copying it.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

async fn health<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
) -> Json<Health> {
    let (head, _) = api.ledger.head();
    let (transactions, bytes) = api.ledger.mempool_size();
    Json(Health {
        status: "ok".into(),
        state_root: head.state_root(),
        chain_id: head.chain,
        height: head.height,
        epoch: head.epoch,
        block_time: head.time,
        age_secs: (api.clock)().saturating_sub(head.time).max(0),
        validator: api.validator,
        mempool: MempoolHealth {
            transactions,
            bytes,
        },
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics<S: Store + Send + Sync + 'static>(
    AxumState(api): AxumState<Arc<Api<S>>>,
) -> Response {
    let c = api.ledger.counters();
    let (head, _) = api.ledger.head();
    let (txs, bytes) = api.ledger.mempool_size();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "civis_height",
        "gauge",
        "Height of the last committed block.",
        head.height,
    );
    metric(
        "civis_mempool_transactions",
        "gauge",
        "Pending transactions.",
        txs as u64,
    );
    metric(
        "civis_mempool_bytes",
        "gauge",
        "Pending transaction bytes.",
        bytes as u64,
    );
    for (name, help, v) in [
        (
            "civis_transactions_submitted_total",
            "Transactions admitted to the mempool.",
            &c.submitted,
        ),
        (
            "civis_transactions_rejected_total",
            "Transactions refused at admission.",
            &c.rejected,
        ),
        (
            "civis_transactions_finalized_total",
            "Transactions in finalized blocks.",
            &c.finalized_txs,
        ),
        (
            "civis_blocks_proposed_total",
            "Blocks proposed by this node.",
            &c.proposed,
        ),
        (
            "civis_blocks_invalid_total",
            "Blocks this node refused to vote for.",
            &c.invalid_blocks,
        ),
        (
            "civis_sync_bundles_built_total",
            "Sync bundles built.",
            &api.bulk.counters().built,
        ),
        (
            "civis_sync_bundles_cached_total",
            "Sync bundles served from the cache.",
            &api.bulk.counters().cached,
        ),
        (
            "civis_bulk_rate_limited_total",
            "Bulk reads (sync, status lists, blocks) refused by a client's allowance.",
            &api.bulk.counters().limited,
        ),
        (
            "civis_bulk_busy_total",
            "Bulk reads refused because too many waited for the work permit.",
            &api.bulk.counters().busy,
        ),
    ] {
        metric(name, "counter", help, v.load(Ordering::Relaxed));
    }
    if let Some(extra) = &api.metrics {
        out.push_str(&extra());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
