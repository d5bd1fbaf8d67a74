//! The HTTP API (axum): routes, the JSON body extractor, token authentication, scopes and the
//! per-token rate limit. Routes and bodies are in specs/issuer-api.md and `openapi.json`.
//!
//! Every object route looks the object up *within the token's agency*, so another agency's
//! object is `404 not_found`, exactly like one that does not exist: a stranger learns nothing.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use civis_core::issuer_api::{
    AuditPage, CredentialAnswer, EnrollAnswer, EnrollRequest, ErrorBody, IssuerHealth,
    KeyedRequest, MintRequest, PersonalizeRequest, SCOPES, StatusRequest,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

use crate::agency::Agency;
use crate::enroll::Attributes;
use crate::error::{Error, Result};
use crate::service::{Actor, Service, check_request_key};
use crate::store::CredentialRow;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route: method and path template (the OpenAPI test checks both ways).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/v1/residents"),
    ("post", "/v1/credentials"),
    ("get", "/v1/credentials/{id}"),
    ("get", "/v1/credentials/{id}/status"),
    ("post", "/v1/credentials/{id}/status"),
    ("post", "/v1/personalizations"),
    ("post", "/v1/renewals"),
    ("post", "/v1/batches/{id}/suspend"),
    ("post", "/v1/cards/{serial}/lost"),
    ("get", "/v1/audit"),
    ("post", "/v1/tokens"),
    ("delete", "/v1/tokens/{id}"),
    ("post", "/v1/keys/rotate"),
];

/// How long an authenticated token is trusted without reading it again.
const TOKEN_CACHE: std::time::Duration = std::time::Duration::from_secs(60);

/// What handlers share.
pub struct Api {
    /// The service.
    pub svc: Arc<Service>,
    limiter: DefaultKeyedRateLimiter<String>,
    /// Look-ups of tokens not in the cache, per client address (a flood from one address does
    /// not lock out operators elsewhere).
    lookups_per_address: DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Look-ups of ids not in a recent id list, all addresses together.
    failures: governor::DefaultDirectRateLimiter,
    /// The ids of the tokens in the database, and when they were read.
    known: std::sync::Mutex<KnownIds>,
    /// Held by the one request that reads the id list again.
    refreshing: tokio::sync::Mutex<()>,
    /// Tokens that authenticated, with when they were read (bounded by the tokens in the
    /// database; read again after [`TOKEN_CACHE`], so a token revoked in the database stops
    /// working within that time).
    tokens: std::sync::Mutex<
        std::collections::HashMap<String, (std::time::Instant, crate::store::TokenRow)>,
    >,
}

/// How old the id list may be before an unknown id makes it be read again.
const KNOWN_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// The ids of the tokens in the database, and when they were read.
type KnownIds = (
    std::collections::HashSet<String>,
    Option<std::time::Instant>,
);

/// What the id list says of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// A token in the database.
    Yes,
    /// Not in the database: the list was read for this very request.
    No,
    /// Not in a list read less than [`KNOWN_FRESH`] ago: made since, or made up.
    NotLately,
}

fn fresh(k: &KnownIds) -> bool {
    k.1.is_some_and(|t| t.elapsed() < KNOWN_FRESH)
}

impl Api {
    /// Whether `id` names a token in the database, from the id list, which is read again (by
    /// one request at a time, at most every [`KNOWN_FRESH`]) when it does not hold `id`.
    async fn is_known(&self, id: &str) -> Result<Known> {
        let answer = |k: &KnownIds| {
            if k.0.contains(id) {
                Known::Yes
            } else {
                Known::NotLately
            }
        };
        if let Ok(k) = self.known.lock()
            && (k.0.contains(id) || fresh(&k))
        {
            return Ok(answer(&k));
        }
        let _one = self.refreshing.lock().await;
        if let Ok(k) = self.known.lock()
            && fresh(&k)
        {
            return Ok(answer(&k));
        }
        let ids = self.svc.store.token_ids().await?;
        let known = if ids.contains(id) {
            Known::Yes
        } else {
            Known::No
        };
        if let Ok(mut k) = self.known.lock() {
            *k = (ids, Some(std::time::Instant::now()));
        }
        Ok(known)
    }

    /// A token made by this process is known at once.
    fn learn(&self, id: &str) {
        if let Ok(mut k) = self.known.lock() {
            k.0.insert(id.to_owned());
        }
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = self.code(), "{self}");
        }
        let body = ErrorBody {
            code: self.code().to_owned(),
            message: self.public_message(),
        };
        let mut r = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"civis-issuer\""),
            );
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

/// The body limit, for the 413 message (set by [`router`]).
static MAX_BODY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A JSON body: `application/json` (415 otherwise), within the size limit (413), parsed into
/// `T` (400 with a message that never echoes the body's values).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Error::UnsupportedMediaType);
        }
        // A declared length over the limit is refused from the head, not after waiting for a
        // body that will be refused anyway.
        let max = MAX_BODY.load(std::sync::atomic::Ordering::Relaxed);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(Error::TooLarge(max));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::TooLarge(MAX_BODY.load(std::sync::atomic::Ordering::Relaxed))
                } else if too_slow(&e) {
                    Error::BodyTimeout
                } else {
                    Error::InvalidBody("the body could not be read".into())
                }
            })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            use serde_json::error::Category;
            Error::InvalidBody(match e.classify() {
                Category::Syntax | Category::Eof => {
                    format!("not JSON (line {}, column {})", e.line(), e.column())
                }
                Category::Data | Category::Io => format!(
                    "a field is missing, unknown or of the wrong type (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })
        })
    }
}

/// Whether a body read failed because the client did not send it in time (the server's body
/// deadline, `civis_http_serve::ServeLimits::body_timeout`).
fn too_slow(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// A path parameter; one that cannot be read (say, invalid UTF-8) names no object: a JSON 404.
#[derive(Debug)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|_| Error::NotFound("object"))
    }
}

/// The scopes a token may hold, one type each, so a route names its scope in its signature.
pub mod scope {
    /// A scope.
    pub trait Scope {
        /// Its name in tokens.
        const NAME: &'static str;
    }
    macro_rules! scopes {
        ($($ty:ident = $name:literal),*) => {$(
            #[doc = concat!("The `", $name, "` scope.")]
            #[derive(Debug)]
            pub struct $ty;
            impl Scope for $ty {
                const NAME: &'static str = $name;
            }
        )*};
    }
    scopes!(
        Enroll = "enroll",
        Personalize = "personalize",
        Status = "status",
        Audit = "audit",
        Admin = "admin"
    );
}

/// An authenticated caller holding scope `S`: token (401), scope (403) and the token's
/// allowance (429) are checked from the request head, before any body is read or parsed, so an
/// unauthenticated request costs no body and learns nothing from its parse errors.
#[derive(Debug)]
pub struct Auth<S>(pub Actor, pub Arc<Agency>, std::marker::PhantomData<S>);

impl<S: scope::Scope + Send + Sync> FromRequestParts<Arc<Api>> for Auth<S> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Error> {
        let caller = Caller::from_request_parts(parts, api).await?;
        let (actor, agency) = authorize(api, &caller, S::NAME).await?;
        Ok(Auth(actor, agency, std::marker::PhantomData))
    }
}

/// Who is calling: the request's headers and, when the server provides it, the peer address.
#[derive(Debug)]
pub struct Caller {
    headers: HeaderMap,
    ip: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Error> {
        Ok(Caller {
            headers: parts.headers.clone(),
            ip: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        })
    }
}

/// The router over a service.
pub fn router(svc: Arc<Service>) -> Router {
    let limits = &svc.config.limits;
    let quota = Quota::per_second(NonZeroU32::new(limits.per_second).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(limits.burst).unwrap_or(NonZeroU32::MIN));
    let per_address = Quota::per_second(NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(40).unwrap_or(NonZeroU32::MIN));
    let failures = Quota::per_second(NonZeroU32::new(500).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN));
    let max_body = limits.max_body;
    MAX_BODY.store(max_body, std::sync::atomic::Ordering::Relaxed);
    let api = Arc::new(Api {
        svc,
        limiter: RateLimiter::keyed(quota),
        lookups_per_address: RateLimiter::keyed(per_address),
        failures: RateLimiter::direct(failures),
        known: std::sync::Mutex::default(),
        refreshing: tokio::sync::Mutex::default(),
        tokens: std::sync::Mutex::default(),
    });
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/residents", post(enroll))
        .route("/v1/credentials", post(mint))
        .route("/v1/credentials/{id}", get(credential))
        .route(
            "/v1/credentials/{id}/status",
            get(status).post(change_status),
        )
        .route("/v1/personalizations", post(personalize))
        .route("/v1/renewals", post(renew))
        .route("/v1/batches/{id}/suspend", post(suspend_batch))
        .route("/v1/cards/{serial}/lost", post(card_lost))
        .route("/v1/audit", get(audit))
        .route("/v1/tokens", post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/keys/rotate", post(rotate_key))
        .fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(api)
}

/// A token's secret part and its stored hash.
pub fn token_hash(secret: &str) -> Vec<u8> {
    sha2::Sha256::digest(secret.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticate the bearer token, require `scope`, and charge the token's allowance.
async fn authorize(
    api: &Api,
    caller: &Caller,
    scope: &'static str,
) -> Result<(Actor, Arc<Agency>)> {
    let headers = &caller.headers;
    let refuse = |e: Error| {
        api.svc
            .metrics
            .auth_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(rest.trim_start())
        })
        .and_then(|v| v.strip_prefix("civis_"))
        .and_then(|v| v.split_once('.'))
        .filter(|(id, secret)| id.len() == 16 && secret.len() == 64);
    let Some((id, secret)) = token else {
        return Err(refuse(Error::Unauthorized));
    };
    let cached = api.tokens.lock().ok().and_then(|t| {
        t.get(id)
            .filter(|(at, _)| at.elapsed() < TOKEN_CACHE)
            .map(|(_, row)| row.clone())
    });
    let row = match cached {
        Some(row) => Some(row),
        None => {
            // Keyed limiters keep a cell per address seen; drop the ones that are full again
            // so a flood from many addresses does not grow memory without end.
            if api.lookups_per_address.len() > 10_000 {
                api.lookups_per_address.retain_recent();
                api.lookups_per_address.shrink_to_fit();
            }
            let address_ok = caller
                .ip
                .is_none_or(|ip| api.lookups_per_address.check_key(&ip).is_ok());
            if !address_ok {
                api.svc
                    .metrics
                    .rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(Error::RateLimited);
            }
            // Ids of real tokens are looked up; made-up ones cost at most a read of the id list
            // every 250 ms, plus look-ups from a shared budget for ids made since the last
            // read. Spent by a flood from many addresses, that budget only delays a brand-new
            // token until the next read (429 meanwhile): it locks nobody out (issue #11
            // attack review).
            let look_up = match api.is_known(id).await? {
                Known::Yes => true,
                Known::No => false,
                Known::NotLately if api.failures.check().is_ok() => true,
                Known::NotLately => {
                    api.svc
                        .metrics
                        .rate_limited
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(Error::RateLimited);
                }
            };
            if look_up {
                let row = api.svc.store.token(id).await?;
                // Cached whatever the secret, so guesses against a real id cost no look-up.
                if let (Some(r), Ok(mut t)) = (&row, api.tokens.lock()) {
                    t.insert(r.id.clone(), (std::time::Instant::now(), r.clone()));
                }
                row
            } else {
                None
            }
        }
    };
    let Some(row) =
        row.filter(|r| r.revoked.is_none() && constant_time_eq(&r.hash, &token_hash(secret)))
    else {
        return Err(refuse(Error::Unauthorized));
    };
    let scopes: Vec<String> = row.scopes.split(',').map(str::to_owned).collect();
    if !scopes.iter().any(|s| s == scope) {
        return Err(refuse(Error::Forbidden(scope)));
    }
    if api.limiter.check_key(&row.id).is_err() {
        api.svc
            .metrics
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(Error::RateLimited);
    }
    let agency = Arc::clone(api.svc.agency(&row.agency)?);
    Ok((
        Actor {
            token: row.id,
            agency: row.agency,
            scopes,
        },
        agency,
    ))
}

async fn health(State(api): State<Arc<Api>>) -> Result<Json<IssuerHealth>> {
    let pending = api.svc.pending_changes().await?;
    Ok(Json(IssuerHealth {
        status: "ok".into(),
        pending_changes: u64::try_from(pending).unwrap_or(0),
        unregistered: api
            .svc
            .agencies
            .keys()
            .filter(|a| !api.svc.is_registered(a))
            .cloned()
            .collect(),
        anchoring_failing: api.svc.anchoring_failing(),
    }))
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<Response> {
    let pending = api.svc.pending_changes().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.svc.metrics.render(pending),
    )
        .into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn enroll(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Enroll>,
    Body(req): Body<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollAnswer>)> {
    check_request_key(&req.request_key)?;
    let now = api.svc.now();
    let today = time::OffsetDateTime::from_unix_timestamp(now)
        .map_err(|_| Error::Config("clock out of range".into()))?
        .date();
    let attributes = Attributes::check(&req, &agency.config, today)?;
    let id = api.svc.new_id();
    let audit = actor.audit(&agency, "enroll", &id, &req.request_key, now);
    let (resident, created) = api
        .svc
        .store
        .enroll(&id, &attributes.to_bytes(), &audit)
        .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(EnrollAnswer { resident, created })))
}

fn answer(row: &CredentialRow, agency: &Agency, with_bytes: bool) -> CredentialAnswer {
    CredentialAnswer {
        credential: row.id.clone(),
        resident: row.resident.clone(),
        status_list: civis_core::chain::state::status_uri(&agency.did, &row.list),
        status_index: u64::try_from(row.idx).unwrap_or(0),
        state: row.state.clone(),
        issuer_signed: with_bytes
            .then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&row.issuer_signed)),
    }
}

async fn mint(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Personalize>,
    Body(req): Body<MintRequest>,
) -> Result<Json<CredentialAnswer>> {
    check_request_key(&req.request_key)?;
    Ok(Json(mint_for_key(&api.svc, &agency, &actor, &req).await?))
}

/// A repeated mint request key must name the same resident and device key: the caller never
/// gets a credential bound to a key it did not ask for.
fn same_mint(row: &CredentialRow, req: &MintRequest) -> Result<()> {
    use civis_core::cbor::CborForm as _;
    let bound = civis_core::mdoc::IssuerSigned::from_slice(&row.issuer_signed)
        .and_then(|s| civis_core::mdoc::MobileSecurityObject::from_issuer_auth(&s.issuer_auth))
        .and_then(|m| m.device_public_key())?;
    let asked = civis_core::crypto::EcPublicKey::from_sec1(&req.device_key).ok();
    if row.resident != req.resident || row.card_serial.is_some() || asked.as_ref() != Some(&bound) {
        return Err(Error::Conflict(
            "this request key was used for another request; use a new request key",
        ));
    }
    Ok(())
}

/// Mint for a device key, once per request key.
pub async fn mint_for_key(
    svc: &Service,
    agency: &Agency,
    actor: &Actor,
    req: &MintRequest,
) -> Result<CredentialAnswer> {
    let store = &svc.store;
    if let Some(row) = store
        .credential_by_request(agency.id(), &req.request_key)
        .await?
    {
        same_mint(&row, req)?;
        return Ok(answer(&row, agency, true));
    }
    let device_key =
        crate::perso::acceptable_key(&req.device_key).map_err(|why| Error::Invalid {
            field: "deviceKey",
            why,
        })?;
    if store.card_key_seen(device_key.uncompressed()).await? {
        return Err(Error::Invalid {
            field: "deviceKey",
            why: "is a card's key",
        });
    }
    let attributes = store
        .resident(agency.id(), &req.resident)
        .await?
        .ok_or(Error::NotFound("resident"))?;
    let attributes = Attributes::from_bytes(&attributes)?;
    let idx = svc.pool.next(store, agency).await?;
    let now = svc.now();
    let bytes = crate::mint::mint(
        agency,
        &attributes,
        &device_key,
        None,
        u64::try_from(idx).map_err(|_| Error::Corrupt("index"))?,
        civis_core::Timestamp(now),
        &mut rand_core::OsRng,
    )?;
    let row = CredentialRow {
        id: svc.new_id(),
        agency: agency.id().to_owned(),
        resident: req.resident.clone(),
        request_key: req.request_key.clone(),
        list: agency.config.status_list.clone(),
        idx,
        card_serial: None,
        batch: None,
        issuer_signed: bytes,
        state: "issued".into(),
        wanted: 0,
    };
    let audit = actor.audit(agency, "mint", &row.id, &req.request_key, now);
    match store.insert_credential(&row, &audit).await {
        Ok(()) => {
            svc.metrics.minted();
            Ok(answer(&row, agency, true))
        }
        Err(e) if e.is_unique_violation() => {
            // A concurrent duplicate won; its credential is the one (this index is burned).
            let row = store
                .credential_by_request(agency.id(), &req.request_key)
                .await?
                .ok_or(Error::Conflict("concurrent request"))?;
            same_mint(&row, req)?;
            Ok(answer(&row, agency, true))
        }
        Err(e) => Err(e),
    }
}

async fn credential(
    State(api): State<Arc<Api>>,
    Auth(_, agency, _): Auth<scope::Status>,
    Id(id): Id,
) -> Result<Json<CredentialAnswer>> {
    let row = api
        .svc
        .store
        .credential(agency.id(), &id)
        .await?
        .ok_or(Error::NotFound("credential"))?;
    Ok(Json(answer(&row, &agency, false)))
}

async fn status(
    State(api): State<Arc<Api>>,
    Auth(_, agency, _): Auth<scope::Status>,
    Id(id): Id,
) -> Result<Json<civis_core::issuer_api::CredentialStatus>> {
    Ok(Json(
        crate::status::status_of(&api.svc, &agency, &id).await?,
    ))
}

async fn change_status(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Status>,
    Id(id): Id,
    Body(req): Body<StatusRequest>,
) -> Result<Json<civis_core::issuer_api::CredentialStatus>> {
    Ok(Json(
        crate::status::change(&api.svc, &agency, &actor, &id, &req).await?,
    ))
}

async fn personalize(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Personalize>,
    Body(req): Body<PersonalizeRequest>,
) -> Result<Json<civis_core::issuer_api::PersonalizeStep>> {
    Ok(Json(
        crate::perso::advance(&api.svc, &agency, &actor, &req).await?,
    ))
}

async fn renew(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Personalize>,
    Body(req): Body<civis_core::issuer_api::RenewRequest>,
) -> Result<Json<civis_core::issuer_api::RenewStep>> {
    Ok(Json(
        crate::renew::advance(&api.svc, &agency, &actor, &req).await?,
    ))
}

async fn suspend_batch(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Status>,
    Id(id): Id,
    Body(req): Body<KeyedRequest>,
) -> Result<Json<civis_core::issuer_api::BulkStatusAnswer>> {
    Ok(Json(
        crate::status::suspend_batch(&api.svc, &agency, &actor, &id, &req.request_key).await?,
    ))
}

async fn card_lost(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Status>,
    Id(serial): Id,
    Body(req): Body<KeyedRequest>,
) -> Result<Json<civis_core::issuer_api::BulkStatusAnswer>> {
    Ok(Json(
        crate::status::card_lost(&api.svc, &agency, &actor, &serial, &req.request_key).await?,
    ))
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: u16,
}

fn default_limit() -> u16 {
    100
}

async fn audit(
    State(api): State<Arc<Api>>,
    Auth(_, agency, _): Auth<scope::Audit>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>> {
    let Query(q) = query.map_err(|_| Error::Invalid {
        field: "query",
        why: "after and limit must be whole numbers, not negative, and nothing else",
    })?;
    if !(1..=1000).contains(&q.limit) {
        return Err(Error::Invalid {
            field: "limit",
            why: "must be 1 to 1000",
        });
    }
    let entries = api
        .svc
        .store
        .audit_page(
            agency.id(),
            i64::try_from(q.after).map_err(|_| Error::Invalid {
                field: "after",
                why: "is too large",
            })?,
            i64::from(q.limit),
        )
        .await?;
    Ok(Json(AuditPage { entries }))
}

/// `POST /v1/tokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    label: String,
    scopes: Vec<String>,
}

/// `POST /v1/tokens` answer: the token, shown once.
#[derive(Debug, serde::Serialize)]
struct TokenAnswer {
    id: String,
    token: String,
}

async fn create_token(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Admin>,
    Body(req): Body<TokenRequest>,
) -> Result<(StatusCode, Json<TokenAnswer>)> {
    if req.scopes.is_empty() || req.scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        return Err(Error::Invalid {
            field: "scopes",
            why: "must name enroll, personalize, status, audit or admin",
        });
    }
    if req.label.is_empty()
        || req.label.len() > 64
        || !req
            .label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b' '))
    {
        return Err(Error::Invalid {
            field: "label",
            why: "must be 1 to 64 of A-Z a-z 0-9 - _ . and space",
        });
    }
    let (id, token) = issue_token(
        &api.svc.store,
        agency.id(),
        &req.scopes.join(","),
        &req.label,
        api.svc.now(),
    )
    .await?;
    api.svc
        .store
        .audit(&actor.audit(&agency, "token", &id, "-", api.svc.now()))
        .await?;
    api.learn(&id);
    Ok((StatusCode::CREATED, Json(TokenAnswer { id, token })))
}

/// `DELETE /v1/tokens/{id}`: revoke one of the agency's tokens. It stops working at once on
/// this process (its cache entry is dropped) and, on other processes sharing the database,
/// within the token cache's 60 s.
async fn revoke_token(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Admin>,
    Id(id): Id,
) -> Result<StatusCode> {
    let now = api.svc.now();
    let now_revoked = api
        .svc
        .store
        .revoke_token(agency.id(), &id, now)
        .await?
        .ok_or(Error::NotFound("token"))?;
    if let Ok(mut t) = api.tokens.lock() {
        t.remove(&id);
    }
    if now_revoked {
        api.svc
            .store
            .audit(&actor.audit(&agency, "token-revoke", &id, "-", now))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Create a token for an agency; returns its id and the whole token (shown once, stored only
/// hashed).
pub async fn issue_token(
    store: &crate::store::Store,
    agency: &str,
    scopes: &str,
    label: &str,
    now: i64,
) -> Result<(String, String)> {
    use rand_core::RngCore as _;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut id);
    rand_core::OsRng.fill_bytes(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    store
        .insert_token(&id, &token_hash(&secret), agency, scopes, label, now)
        .await?;
    Ok((id.clone(), format!("civis_{id}.{secret}")))
}

/// `POST /v1/keys/rotate` answer.
#[derive(Debug, serde::Serialize)]
struct RotateAnswer {
    kid: String,
}

async fn rotate_key(
    State(api): State<Arc<Api>>,
    Auth(actor, agency, _): Auth<scope::Admin>,
) -> Result<Json<RotateAnswer>> {
    let client = api.svc.registry()?;
    let kid = crate::rotate::rotate(&api.svc, &client, &agency, &actor).await?;
    Ok(Json(RotateAnswer {
        kid: kid.to_string(),
    }))
}
