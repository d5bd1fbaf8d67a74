//! The kiosk screen: a local page (axum) and the small API it polls
//! (specs/kiosk-screen.md). The page long-polls `/api/screen`, so a verdict reaches the DOM as
//! soon as it exists; it posts camera frames to `/api/frame` and a USB scanner's text to
//! `/api/scan`. Only the kiosk's own browser is meant to talk to it: requests for another host
//! name, or posted from another origin, are refused.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::frames::{self, FrameError, MAX_FRAME_PIXELS};
use crate::kiosk::{Kiosk, StartReview};
use crate::messages::{self, Lang};
use crate::outcome::Kind;
use crate::review::Shown;

const PAGE: &str = include_str!("../assets/kiosk.html");
/// Longest a `/api/screen` long poll waits for a change.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// Largest scanner text accepted.
pub const MAX_SCAN_BYTES: usize = 8 * 1024;
/// Largest camera-frame body accepted.
const FRAME_BODY_LIMIT: usize = MAX_FRAME_PIXELS + 1024;

/// The router of the kiosk screen over `kiosk`.
pub fn router(kiosk: Arc<Kiosk>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/api/screen", get(screen))
        .route("/api/engagement.svg", get(engagement_svg))
        // Reads its body itself, under an upload permit and FRAME_BODY_LIMIT.
        .route("/api/frame", post(frame))
        .route("/api/scan", post(scan))
        .route("/api/done", post(done))
        .route("/api/review", post(review))
        .layer(DefaultBodyLimit::max(MAX_SCAN_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&kiosk),
            local_only,
        ))
        .with_state(kiosk)
}

/// Refuse a Host that is not this kiosk's (DNS rebinding) and a POST from another origin
/// (another site open in the kiosk's browser).
async fn local_only(State(k): State<Arc<Kiosk>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !k.host_allowed(host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "not this kiosk's host name",
        )
            .into_response();
    }
    if req.method() == Method::POST
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && origin.to_str().ok() != Some(&format!("http://{host}"))
    {
        return (StatusCode::FORBIDDEN, "posted from another origin").into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'; media-src 'self' blob: mediastream:; frame-ancestors 'none'",
        ),
    );
    res
}

#[derive(Debug, Deserialize)]
struct LangQuery {
    lang: Option<String>,
    after: Option<u64>,
}

fn lang_of(k: &Kiosk, q: Option<&str>, headers: &HeaderMap) -> Lang {
    if let Some(tag) = q {
        return Lang::from_tag(tag);
    }
    // The browser's language when the kiosk's default is English and it asks for another.
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(Lang::from_tag)
        .filter(|l| *l != Lang::En)
        .unwrap_or(k.default_lang())
}

async fn page(
    State(k): State<Arc<Kiosk>>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Html<String> {
    let lang = lang_of(&k, q.lang.as_deref(), &headers);
    Html(PAGE.replacen("{{LANG}}", lang.tag(), 1))
}

async fn health(State(k): State<Arc<Kiosk>>) -> Response {
    let trust = k.trust();
    axum::Json(json!({
        "ready": true,
        "height": trust.as_ref().map(|t| t.trust.height),
        "stateTime": trust.as_ref().map(|t| t.trust.state_time),
        "policy": k.policy_name(),
    }))
    .into_response()
}

async fn screen(
    State(k): State<Arc<Kiosk>>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&k, q.lang.as_deref(), &headers);
    if let Some(after) = q.after {
        let mut changes = k.changes();
        // Wait for a change past `after` (or the timeout), then answer the state as it is.
        let _ = tokio::time::timeout(LONG_POLL, changes.wait_for(|seq| *seq != after)).await;
    }
    axum::Json(screen_json(&k, lang)).into_response()
}

/// The screen as the page draws it, in `lang`.
pub fn screen_json(k: &Kiosk, lang: Lang) -> serde_json::Value {
    let now = k.now();
    let texts = messages::texts(lang);
    let view = k.view(now);
    let (mut state, mut headline) = match view.outcome.as_ref().map(|o| o.kind) {
        Some(Kind::Accept) => ("accept", texts.accept),
        Some(Kind::Reject) => ("reject", texts.reject),
        Some(Kind::Undetermined) => ("undetermined", texts.undetermined),
        None if view.reading => ("reading", texts.reading),
        None => ("idle", texts.prompt),
    };
    let (mut reason, mut message, mut shown) = match &view.outcome {
        Some(o) => (
            Some(o.reason.code()),
            messages::reason(lang, &o.reason, k.policy_subject()),
            o.shown
                .iter()
                .map(|(e, v)| {
                    json!({
                        "element": e,
                        "label": messages::element_label(lang, e),
                        "value": messages::element_value(lang, v),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        None => (None, String::new(), Vec::new()),
    };
    let mut log = Vec::new();
    if view.review.is_some() {
        // A review owns the screen: nothing of a verdict is shown with it.
        (reason, message, shown) = (None, String::new(), Vec::new());
    }
    match &view.review {
        None => {}
        Some(Shown::Waiting) => (state, headline) = ("review_tap", texts.review_tap),
        Some(Shown::Reading) => (state, headline) = ("reading", texts.reading),
        Some(Shown::Log(entries)) => {
            (state, headline) = ("review", texts.review_title);
            message = if entries.is_empty() {
                texts.review_empty
            } else {
                texts.review_note
            }
            .to_owned();
            log = entries.iter().map(|e| log_row(lang, e)).collect();
        }
        Some(Shown::Refused(why)) => {
            (state, headline) = ("review_refused", texts.review_refused);
            reason = Some(why.code());
            message = messages::review_refused(lang, *why).to_owned();
        }
    }
    let trust = k.trust();
    let max = k.max_age_secs();
    let (snapshot_text, warning, warning_text, age) = match &trust {
        None => (
            texts.never_synced.to_owned(),
            Some("never"),
            Some(texts.never_synced),
            None,
        ),
        Some(t) => {
            let age = now.saturating_sub(t.trust.state_time).max(0);
            let when = time::OffsetDateTime::from_unix_timestamp(t.trust.state_time)
                .ok()
                .and_then(|d| {
                    d.format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute] UTC"
                    ))
                    .ok()
                })
                .unwrap_or_default();
            let (w, wt) = if age > max {
                (Some("stale"), Some(texts.stale))
            } else if age > max.saturating_sub(k.warn_before_stale_secs()) {
                (Some("stale_soon"), Some(texts.stale_soon))
            } else {
                (None, None)
            };
            (
                format!("{} {when} · #{}", texts.synced, t.trust.height),
                w,
                wt,
                Some(age),
            )
        }
    };
    json!({
        "seq": view.seq,
        "lang": lang.tag(),
        "state": state,
        "headline": headline,
        "reason": reason,
        "message": message,
        "shown": shown,
        "log": log,
        // The screen offers "read my card's log" only with a card reader.
        "canReview": k.config().reader.is_some(),
        "engagement": view.engagement,
        // What the QR on screen says (public: anyone in front of the kiosk can read it).
        "engagementText": k.engagement_text(),
        "texts": texts,
        "snapshot": {
            "height": trust.as_ref().map(|t| t.trust.height),
            "stateTime": trust.as_ref().map(|t| t.trust.state_time),
            "ageSecs": age,
            "text": snapshot_text,
            "warning": warning,
            "warning_text": warning_text,
        },
    })
}

async fn engagement_svg(State(k): State<Arc<Kiosk>>) -> Response {
    match frames::svg(&k.engagement_text()) {
        Some(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct FrameQuery {
    w: u32,
    h: u32,
}

/// A camera frame: grey bytes, `w × h`. 200 with the verdict when it held a phone's answer,
/// 204 when it held no code, 422 for a code that is not an answer, 429 while another frame
/// is being decoded (the page just sends the next one).
async fn frame(
    State(k): State<Arc<Kiosk>>,
    Query(q): Query<FrameQuery>,
    body: axum::body::Body,
) -> Response {
    // Read the body only with an upload permit: connections waiting to be decoded must not each
    // hold a buffered frame (a flood of uploads held ~400 MB).
    let Some(upload) = k.upload_gate() else {
        return (StatusCode::TOO_MANY_REQUESTS, "too many frames arriving").into_response();
    };
    let body = match axum::body::to_bytes(body, FRAME_BODY_LIMIT).await {
        Ok(b) => b,
        // Over the limit (or a stream that broke off, whose sender is gone anyway).
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "frame body over the limit or cut off",
            )
                .into_response();
        }
    };
    drop(upload);
    let Some(permit) = k.frame_gate() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "busy with the previous frame",
        )
            .into_response();
    };
    // The permit goes with the decode: a client that hangs up does not free the gate while
    // its frame is still being decoded.
    let decoded = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        frames::decode_grey(&body, q.w, q.h)
    })
    .await;
    match decoded {
        Ok(Ok(text)) => answer(&k, &text).await,
        Ok(Err(e @ FrameError::Shape { .. })) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Ok(Err(FrameError::NoCode)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e @ FrameError::Crowded { .. })) => {
            (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A USB scanner's text (or the camera's decoded code).
async fn scan(State(k): State<Arc<Kiosk>>, body: Bytes) -> Response {
    match std::str::from_utf8(&body) {
        Ok(text) => answer(&k, text).await,
        Err(_) => (StatusCode::BAD_REQUEST, "not UTF-8 text").into_response(),
    }
}

async fn answer(k: &Arc<Kiosk>, text: &str) -> Response {
    let text = text.trim();
    if !text.starts_with(civis_core::qr::PRESENTATION_PREFIX) {
        // Someone's other QR code (a URL, a ticket): not for the kiosk, nothing to show.
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": "not a Civis presentation"})),
        )
            .into_response();
    }
    let Some(outcome) = k.present_qr(text).await else {
        // The same refused code again (a sticker in the camera's view): shown once.
        return StatusCode::NO_CONTENT.into_response();
    };
    axum::Json(json!({
        "verdict": outcome.kind.name(),
        "reason": outcome.reason.code(),
    }))
    .into_response()
}

/// One read-log entry as the screen shows it: the date from the card's time floor, who (the
/// accreditation's purpose and the kiosk DID, shortened) and the elements released.
fn log_row(lang: Lang, e: &civis_core::card::ReadLogEntry) -> serde_json::Value {
    let when = time::OffsetDateTime::from_unix_timestamp(e.floor)
        .ok()
        .filter(|_| e.floor > 0)
        .and_then(|d| {
            d.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_else(|| "—".to_owned());
    let kiosk = match (e.kiosk.get(..16), e.kiosk.len().checked_sub(4)) {
        (Some(head), Some(tail)) if e.kiosk.len() > 24 && e.kiosk.is_char_boundary(tail) => {
            format!("{head}…{}", e.kiosk.get(tail..).unwrap_or(""))
        }
        _ => e.kiosk.clone(),
    };
    let mut released: Vec<String> = e
        .released
        .iter()
        .map(|el| messages::element_label(lang, el))
        .collect();
    if e.more > 0 {
        released.push(format!("+{}", e.more));
    }
    json!({
        "seq": e.seq,
        "when": when,
        "purpose": e.purpose,
        "kiosk": kiosk,
        "released": released,
    })
}

/// The holder entered a PIN to see the card's log: 202 and the screen waits for the card;
/// 400 for a PIN that is not 4–12 digits; 409 when the kiosk has no card reader. The PIN is
/// never logged and is dropped at the tap, at "Done" or after a minute.
async fn review(State(k): State<Arc<Kiosk>>, body: Bytes) -> Response {
    /// Exactly `{"pin": "…"}`: unknown and repeated fields are refused by serde; an array,
    /// which serde would take for a one-field struct too, by the first byte.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PinBody {
        pin: String,
    }
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let pin = match serde_json::from_slice::<PinBody>(&body) {
        Ok(b) if object => zeroize::Zeroizing::new(b.pin),
        _ => return (StatusCode::BAD_REQUEST, "expected {\"pin\": \"…\"}").into_response(),
    };
    match k.start_review(&pin) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e @ StartReview::PinFormat) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(e @ (StartReview::NoReader | StartReview::Busy)) => {
            (StatusCode::CONFLICT, e.to_string()).into_response()
        }
    }
}

async fn done(State(k): State<Arc<Kiosk>>) -> StatusCode {
    k.clear();
    StatusCode::NO_CONTENT
}
