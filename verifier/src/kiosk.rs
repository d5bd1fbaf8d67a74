//! The running kiosk (`civis kiosk run`): its screen state, the trust it verifies against, the
//! background sync that keeps that trust fresh, and the card reader loop. Every verdict is
//! counted in the kiosk's database — policy, verdict, reason code, snapshot height — and
//! nothing about the resident is kept once the verdict screen times out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::state::Genesis;
use civis_registry_client::Client;
use rand_core::OsRng;
use sha2::Digest as _;
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::KioskConfig;
use crate::messages::Lang;
use crate::outcome::{Kind, Outcome, Reason};
use crate::policy::{KioskPolicy, Rule};
use crate::review::{Review, ReviewRefused};
use crate::station::{Station, Trust};
use crate::store::KioskStore;
use crate::sync::{SyncError, advance_store};
use civis_core::card::ReadLogEntry;

/// Why the kiosk cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config is refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database or the snapshot in it cannot be read.
    #[error(transparent)]
    Store(#[from] SyncError),
    /// A file or the listening socket.
    #[error("{0}")]
    Io(String),
}

/// The trust a verdict rests on, with the full snapshot (for the accreditation check).
#[derive(Debug)]
pub struct Loaded {
    /// What verification uses.
    pub trust: Trust,
    /// The verified snapshot.
    pub snapshot: KioskSnapshot,
    /// The governance rotations pushed to every card tapped (taken from the snapshot once, not
    /// by a walk of the whole kiosk tree per tap).
    pub rotations: Vec<Vec<u8>>,
}

impl Loaded {
    /// From a verified snapshot.
    pub fn of(snapshot: KioskSnapshot) -> Self {
        let h = snapshot.header();
        Self {
            trust: Trust {
                trust: snapshot.trust_snapshot(),
                height: h.height,
                state_time: h.time,
            },
            rotations: snapshot.governance_rotations(),
            snapshot,
        }
    }
}

/// What the screen shows now.
#[derive(Debug, Clone)]
pub struct View {
    /// Changes with every screen change.
    pub seq: u64,
    /// The verdict on screen.
    pub outcome: Option<Outcome>,
    /// A card is being read.
    pub reading: bool,
    /// Changes with the engagement QR.
    pub engagement: u64,
    /// The holder's review of the card's log, when one is on screen.
    pub review: Option<crate::review::Shown>,
}

/// Camera frames read at once (each up to [`crate::frames::MAX_FRAME_PIXELS`] bytes); the page
/// has one in flight.
pub const MAX_FRAME_UPLOADS: usize = 4;

/// A running kiosk.
pub struct Kiosk {
    cfg: KioskConfig,
    policy: KioskPolicy,
    genesis: Genesis,
    station: Mutex<Station>,
    loaded: RwLock<Option<Arc<Loaded>>>,
    store: KioskStore,
    changes: watch::Sender<u64>,
    reading: AtomicBool,
    frame_gate: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
    hosts: Vec<String>,
    last_refused: Mutex<Option<([u8; 32], i64)>>,
    review: Mutex<Option<Review>>,
    clock: fn() -> i64,
}

impl std::fmt::Debug for Kiosk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kiosk")
            .field("listen", &self.cfg.listen)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How long an engagement QR stays on screen before it is replaced.
pub const ENGAGEMENT_SECS: i64 = 300;
/// A refused code read again within this time is ignored.
pub const REPEAT_SECS: i64 = 30;
/// Longest text of a registry's refusal kept in the sync log and the log.
const MAX_REASON_CHARS: usize = 200;

/// A registry's error text made safe to store and log: control characters replaced, length
/// capped (a registry chooses that text).
pub fn tame(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_REASON_CHARS {
        out.push('…');
    }
    out
}

/// Unix seconds from the system clock.
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the screen down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kiosk {
    /// Open the kiosk of `cfg`: its database and the snapshot in it (verified against the
    /// pinned genesis), ready to serve.
    pub async fn open(cfg: KioskConfig, clock: fn() -> i64) -> Result<Arc<Self>, RunError> {
        let policy = cfg
            .kiosk_policy()
            .map_err(|e| RunError::Io(e.to_string()))?;
        if policy.election().is_some() || policy.name().starts_with("evote:") {
            // A pseudonym needs the PIN and a station ledger; the screen's PIN pad serves only
            // the holder's own log review.
            return Err(RunError::Io(
                "an evote: policy runs at a polling station: use `civis kiosk verify --policy \
                 evote:ID --reader NAME --pin-stdin`"
                    .into(),
            ));
        }
        let text = std::fs::read_to_string(&cfg.genesis)
            .map_err(|e| RunError::Io(format!("{}: {e}", cfg.genesis.display())))?;
        let genesis = Genesis::from_json(&text)
            .map_err(|e| RunError::Io(format!("{}: {e}", cfg.genesis.display())))?;
        let store = KioskStore::open(&cfg.db).await?;
        let loaded = store
            .snapshot(&genesis)
            .await?
            .map(|s| Arc::new(Loaded::of(s.snapshot)));
        let port = cfg.listen.port();
        let mut hosts = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            cfg.listen.to_string(),
        ];
        hosts.dedup();
        let station = Station::new(policy.clone(), cfg.verdict_secs, &mut OsRng);
        Ok(Arc::new(Self {
            policy,
            genesis,
            station: Mutex::new(station),
            loaded: RwLock::new(loaded),
            store,
            changes: watch::channel(0).0,
            reading: AtomicBool::new(false),
            frame_gate: Arc::new(Semaphore::new(1)),
            uploads: Arc::new(Semaphore::new(MAX_FRAME_UPLOADS)),
            last_refused: Mutex::new(None),
            review: Mutex::new(None),
            hosts,
            clock,
            cfg,
        }))
    }

    /// Now, by the kiosk's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The configuration.
    pub fn config(&self) -> &KioskConfig {
        &self.cfg
    }

    /// The trust verdicts rest on now (none before the first sync).
    pub fn trust(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `host` (a Host header) names this kiosk.
    pub fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// The screen's default language.
    pub fn default_lang(&self) -> Lang {
        self.cfg.lang()
    }

    /// The policy as logged and shown.
    pub fn policy_name(&self) -> String {
        self.policy.name()
    }

    /// What a policy reason names (the district of `resident-of`).
    pub fn policy_subject(&self) -> Option<&str> {
        match &self.policy.rule {
            Rule::ResidentOf(d) => Some(d),
            _ => None,
        }
    }

    /// The policy's maximum snapshot age.
    pub fn max_age_secs(&self) -> i64 {
        self.policy.max_age_secs
    }

    /// How long before staleness the screen warns.
    pub fn warn_before_stale_secs(&self) -> i64 {
        self.cfg.warn_before_stale_secs
    }

    /// Receives the screen's sequence number on every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// One camera frame decodes at a time: the permit to decode one, if none is decoding.
    pub fn frame_gate(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.frame_gate).try_acquire_owned().ok()
    }

    /// A frame's body is read only with one of [`MAX_FRAME_UPLOADS`] permits: frames buffered
    /// at once stay a few megabytes, not one per connection.
    pub fn upload_gate(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.uploads).try_acquire_owned().ok()
    }

    /// The engagement QR's text now.
    pub fn engagement_text(&self) -> String {
        lock(&self.station).engagement_text().to_owned()
    }

    fn notify(&self) {
        let seq = lock(&self.station).seq();
        self.changes.send_replace(seq);
    }

    /// The screen now; a verdict past its time is dropped here, and an engagement on screen
    /// for too long replaced (waking every long poll on a change).
    pub fn view(&self, now: i64) -> View {
        let mut st = lock(&self.station);
        let before = st.seq();
        let outcome = st.current(now).cloned();
        st.expire_engagement(now, ENGAGEMENT_SECS, &mut OsRng);
        let review = {
            let mut r = lock(&self.review);
            if r.as_ref().is_some_and(|r| r.expired(now)) {
                // The PIN or the entries go with it.
                *r = None;
                st.bump();
            }
            r.as_ref().map(Review::shown)
        };
        if st.seq() != before {
            self.changes.send_replace(st.seq());
        }
        View {
            seq: st.seq(),
            outcome,
            reading: self.reading.load(Ordering::Relaxed),
            engagement: st.engagement_id(),
            review,
        }
    }

    /// The holder entered a PIN on the screen to see the card's log: it waits for the next
    /// card (and replaces a review on screen).
    pub fn start_review(&self, pin: &str) -> Result<(), StartReview> {
        if self.cfg.reader.is_none() {
            return Err(StartReview::NoReader);
        }
        let review = Review::start(pin, self.now()).map_err(|_| StartReview::PinFormat)?;
        // Checked under the review lock, which the card loop takes after it marks a read: a PIN
        // entered while a card is being read would otherwise be shown as waiting and then be
        // dropped by that card's verdict.
        let mut waiting = lock(&self.review);
        if self.reading.load(Ordering::SeqCst) {
            return Err(StartReview::Busy);
        }
        lock(&self.station).clear();
        *waiting = Some(review);
        drop(waiting);
        // Always a new screen number: the page must show "Tap your card now" (and Done) at once.
        self.bump();
        Ok(())
    }

    /// The PIN of a review waiting for a card, if any (the review moves on to reading).
    pub fn take_review_pin(&self) -> Option<zeroize::Zeroizing<String>> {
        let now = self.now();
        let pin = lock(&self.review).as_mut()?.take_pin(now);
        if pin.is_some() {
            self.bump();
        }
        pin
    }

    /// The card's answer to a review.
    pub fn finish_review(&self, result: Result<Vec<ReadLogEntry>, ReviewRefused>) {
        let now = self.now();
        self.reading.store(false, Ordering::Relaxed);
        if let Some(r) = lock(&self.review).as_mut() {
            r.finish(result, now);
        }
        self.bump();
    }

    fn bump(&self) {
        let seq = {
            let mut st = lock(&self.station);
            st.bump();
            st.seq()
        };
        self.changes.send_replace(seq);
    }

    /// Drop what has timed out, without waiting for a reader of the screen: called every
    /// second by [`run`].
    pub fn tick(&self) {
        let _ = self.view(self.now());
    }

    /// Back to idle ("Done"); a review's PIN or entries are dropped.
    pub fn clear(&self) {
        lock(&self.station).clear();
        *lock(&self.review) = None;
        self.bump();
    }

    /// A phone's answer from the camera or a scanner; `None` when it is the code refused
    /// last, again within [`REPEAT_SECS`] (not shown or counted twice).
    pub async fn present_qr(&self, text: &str) -> Option<Outcome> {
        let now = self.now();
        let digest: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
        {
            let last = lock(&self.last_refused);
            if let Some((d, at)) = *last
                && d == digest
                && now.saturating_sub(at) < REPEAT_SECS
            {
                return None;
            }
        }
        let loaded = self.trust();
        let outcome =
            lock(&self.station).qr(text, loaded.as_deref().map(|l| &l.trust), now, &mut OsRng);
        // A verdict ends a review: its PIN is dropped and the verdict is what the screen shows.
        *lock(&self.review) = None;
        self.notify();
        self.record(&outcome, loaded.as_deref(), now).await;
        if outcome.kind == Kind::Reject {
            *lock(&self.last_refused) = Some((digest, now));
        }
        Some(outcome)
    }

    /// Show and count an outcome reached elsewhere (the card loop).
    pub async fn show(&self, outcome: Outcome, loaded: Option<&Loaded>) {
        let now = self.now();
        self.reading.store(false, Ordering::Relaxed);
        lock(&self.station).show(outcome.clone(), now);
        // A verdict ends a review: its PIN is dropped and the verdict is what the screen shows.
        *lock(&self.review) = None;
        self.bump();
        self.record(&outcome, loaded, now).await;
    }

    /// Mark a card read as started or over (the screen says "reading").
    pub fn set_reading(&self, reading: bool) {
        self.reading.store(reading, Ordering::SeqCst);
        // The page redraws on any change of the number it waits on.
        self.bump();
    }

    async fn record(&self, outcome: &Outcome, loaded: Option<&Loaded>, now: i64) {
        let logged = self
            .store
            .record_outcome(
                now,
                &self.policy_name(),
                outcome,
                loaded.map(|l| l.trust.height),
            )
            .await;
        if let Err(e) = logged {
            tracing::warn!("cannot count the verdict: {e}");
        }
    }

    /// One sync from `client`; on success the new trust is in use at once.
    pub async fn sync_once(&self, client: &Client) -> Result<u64, SyncError> {
        let (report, snap) =
            advance_store(client, &self.genesis, &self.store, self.now(), None).await?;
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Loaded::of(snap)));
        self.notify();
        Ok(report.height)
    }

    /// Close the database.
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// The outcome of a card tap that could not start: the kiosk is not accredited on the
    /// synced chain for its policy (an operator's problem, not the resident's).
    pub fn not_accredited(detail: String) -> Outcome {
        Outcome {
            kind: Kind::Undetermined,
            reason: Reason::CannotCheck,
            detail: Some(detail),
            shown: Vec::new(),
            state_time: None,
        }
    }
}

/// Why a review cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StartReview {
    /// Not 4–12 digits.
    #[error("a PIN is 4 to 12 digits")]
    PinFormat,
    /// This kiosk has no card reader.
    #[error("this kiosk has no card reader")]
    NoReader,
    /// A card is being read: the PIN would not reach the next card.
    #[error("a card is being read; enter the PIN again when it is done")]
    Busy,
}

/// Sync in the background every `sync_interval_secs` (registry URLs tried in turn) until
/// `stop`; the kiosk keeps verifying from its last snapshot while no registry answers.
pub async fn sync_loop(kiosk: Arc<Kiosk>, stop: Arc<Notify>) {
    // One client per registry: a registry that answers with junk or refuses must not keep
    // the kiosk from the next one.
    let clients: Vec<(String, Client)> = kiosk
        .cfg
        .registries
        .iter()
        .filter_map(|u| Client::new(u).ok().map(|c| (u.clone(), c)))
        .collect();
    if clients.is_empty() {
        tracing::info!("background sync off: no registry configured");
        return;
    }
    let every = Duration::from_secs(kiosk.cfg.sync_interval_secs);
    loop {
        for (url, client) in &clients {
            match kiosk.sync_once(client).await {
                Ok(h) => {
                    tracing::info!(height = h, "synced");
                    break;
                }
                Err(e) => tracing::warn!(
                    "sync from {}: {}; trying the next registry, verifying from the last snapshot",
                    tame(url),
                    tame(&e.to_string())
                ),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.notified() => return,
        }
    }
}

/// The card reader loop (a thread: PC/SC and libnfc block): wait for a card, read it for the
/// policy under the kiosk's accredited key, show the verdict, wait for the card to leave.
#[cfg(feature = "nfc")]
pub fn card_loop(
    kiosk: Arc<Kiosk>,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) -> Result<(), RunError> {
    use civis_firmware_bridge::nfc;
    let Some(reader) = kiosk.cfg.reader.clone() else {
        return Ok(());
    };
    let (key, _) = civis_registry_client::keyfile::read_key(&reader.key)
        .map_err(|e| RunError::Io(format!("{}: {e}", reader.key.display())))?;
    let statement = std::fs::read(&reader.accreditation)
        .map_err(|e| RunError::Io(format!("{}: {e}", reader.accreditation.display())))?;
    let step = Duration::from_millis(500);
    while !stop.load(Ordering::Relaxed) {
        let seen = match nfc::wait_card_event(&reader.name, true, step) {
            Ok(Some(count)) => count,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("reader {}: {e}", reader.name);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        kiosk.set_reading(true);
        let loaded = kiosk.trust();
        let now = kiosk.now();
        if let Some(pin) = kiosk.take_review_pin() {
            let result = review_tap(&kiosk, loaded.as_deref(), (&key, &statement), &pin, now);
            kiosk.finish_review(result);
            wait_gone(&reader.name, seen, &stop, step);
            continue;
        }
        let outcome = match &loaded {
            None => crate::station::unsynced(&kiosk.policy),
            Some(l) => match crate::intake::check_accreditation(
                &l.snapshot,
                &statement,
                &kiosk.policy,
                now,
            ) {
                Err(e) => {
                    tracing::error!("no card read: {e}");
                    Kiosk::not_accredited(e.to_string())
                }
                Ok(_) => match nfc::NfcTransport::open(&reader.name, Duration::from_secs(2))
                    .and_then(|t| {
                        let mut client = civis_firmware_bridge::reader::CardClient::new(t);
                        crate::intake::read_card(
                            &mut client,
                            &kiosk.policy,
                            &key,
                            &statement,
                            &l.rotations,
                            None,
                            &mut OsRng,
                        )
                    }) {
                    Ok(tap) => {
                        crate::station::judge(
                            &kiosk.policy,
                            Some(&l.trust),
                            &tap.response,
                            &tap.transcript,
                            Some(&tap.request),
                            now,
                        )
                        .1
                    }
                    Err(e) => Outcome::refused(Reason::CardError, e.to_string()),
                },
            },
        };
        rt.block_on(kiosk.show(outcome, loaded.as_deref()));
        wait_gone(&reader.name, seen, &stop, step);
    }
    Ok(())
}

/// One verdict per tap: wait for the card read at pcscd's event count `seen` to leave the
/// field. A card taken away and put back while the kiosk was busy counts as a new tap (the
/// event count moved), so a quick second tap is not missed. A pcscd error does not end the
/// wait: ending it would read the same card again for a second verdict.
#[cfg(feature = "nfc")]
fn wait_gone(reader: &str, seen: u32, stop: &AtomicBool, step: Duration) {
    while !stop.load(Ordering::Relaxed) {
        match civis_firmware_bridge::nfc::wait_card_change(reader, seen, step) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("reader {reader}: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The tap of a review: the card's log read under the kiosk's accreditation with the PIN the
/// holder entered. Nothing of it is counted or logged but the failure's kind.
#[cfg(feature = "nfc")]
fn review_tap(
    kiosk: &Kiosk,
    loaded: Option<&Loaded>,
    (key, statement): (&civis_core::crypto::SoftwareKey, &[u8]),
    pin: &str,
    now: i64,
) -> Result<Vec<ReadLogEntry>, ReviewRefused> {
    let l = loaded.ok_or(ReviewRefused::Unavailable)?;
    if let Err(e) = crate::intake::check_accreditation(&l.snapshot, statement, &kiosk.policy, now) {
        tracing::error!("no card log read: {e}");
        return Err(ReviewRefused::Unavailable);
    }
    let reader = kiosk
        .cfg
        .reader
        .as_ref()
        .ok_or(ReviewRefused::Unavailable)?;
    let read = civis_firmware_bridge::nfc::NfcTransport::open(&reader.name, Duration::from_secs(2))
        .and_then(|t| {
            let mut client = civis_firmware_bridge::reader::CardClient::new(t);
            crate::intake::read_log(&mut client, key, statement, &l.rotations, pin, &mut OsRng)
        });
    match read {
        Ok(Ok(entries)) => Ok(entries),
        Ok(Err(crate::intake::LogRefused::PinRequired)) => Err(ReviewRefused::WrongPin),
        Ok(Err(crate::intake::LogRefused::PinBlocked)) => Err(ReviewRefused::PinBlocked),
        Ok(Err(refused)) => {
            // A closed set: the card's own text (a hostile one could echo the PIN) is not kept.
            tracing::warn!("card log not given: {refused}");
            Err(ReviewRefused::CardError)
        }
        Err(e) => {
            tracing::warn!("card log read failed: {e}");
            Err(ReviewRefused::CardError)
        }
    }
}

/// Serve the kiosk of `cfg` until `stop`: open it, bind the screen, sync in the background,
/// run the card reader loop when a reader is configured. `ready` receives the screen's
/// address once it listens.
pub async fn run(
    cfg: KioskConfig,
    stop: Arc<Notify>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), RunError> {
    let mut cfg = cfg;
    let listen = cfg.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| RunError::Io(format!("cannot listen on {listen}: {e}")))?;
    // Port 0 in the config: the host check must know the real port.
    cfg.listen = listener
        .local_addr()
        .map_err(|e| RunError::Io(e.to_string()))?;
    let addr = cfg.listen;
    let kiosk = Kiosk::open(cfg, system_now).await?;
    let syncing = tokio::spawn(sync_loop(Arc::clone(&kiosk), Arc::clone(&stop)));
    let ticking = {
        let (k, stop) = (Arc::clone(&kiosk), Arc::clone(&stop));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => k.tick(),
                    () = stop.notified() => return,
                }
            }
        })
    };
    let reader_stop = Arc::new(AtomicBool::new(false));
    #[cfg(feature = "nfc")]
    let reader = kiosk.cfg.reader.is_some().then(|| {
        let (k, rt, s) = (
            Arc::clone(&kiosk),
            tokio::runtime::Handle::current(),
            Arc::clone(&reader_stop),
        );
        std::thread::spawn(move || {
            if let Err(e) = card_loop(k, rt, s) {
                tracing::error!("card reader: {e}");
            }
        })
    });
    #[cfg(not(feature = "nfc"))]
    if kiosk.cfg.reader.is_some() {
        tracing::error!(
            "a reader is configured but this build has no NFC support (--features nfc)"
        );
    }
    ready(addr);
    let served = civis_http_serve::serve(
        listener,
        crate::screen::router(Arc::clone(&kiosk)),
        civis_http_serve::ServeLimits::for_this_process(),
        {
            let stop = Arc::clone(&stop);
            async move { stop.notified().await }
        },
    )
    .await;
    stop.notify_waiters();
    reader_stop.store(true, Ordering::Relaxed);
    #[cfg(feature = "nfc")]
    if let Some(r) = reader {
        let _ = tokio::task::spawn_blocking(move || r.join()).await;
    }
    // A stop that came while they were busy would not wake them: end them here.
    syncing.abort();
    ticking.abort();
    kiosk.close().await;
    served.map_err(|e| RunError::Io(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use civis_core::crypto::SoftwareKey;
    use civis_core::did::KeyCommitment;

    fn clock() -> i64 {
        1_800_000_000
    }

    /// A kiosk with a reader configured, on a fresh database (never synced), in `dir`.
    async fn kiosk(dir: &std::path::Path) -> Arc<Kiosk> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let k = |_| SoftwareKey::generate(&mut OsRng);
        let (v, g, n): (SoftwareKey, SoftwareKey, SoftwareKey) = (k(0), k(1), k(2));
        let genesis = Genesis {
            chain_id: "civis-test".into(),
            time: clock(),
            validators: vec![v.public_key().clone()],
            governance: vec![(g.public_key().clone(), KeyCommitment::to(n.public_key()))],
            governance_threshold: 1,
            epoch_length: civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
        };
        std::fs::write(dir.join("genesis.json"), genesis.to_json()).unwrap();
        let cfg: KioskConfig = toml::from_str(&format!(
            "db = {:?}\ngenesis = {:?}\npolicy = \"age-over-18\"\n\n[reader]\nname = \"r\"\n\
             key = \"k.jwk\"\naccreditation = \"a.cose\"\n",
            dir.join("kiosk.db"),
            dir.join("genesis.json"),
        ))
        .unwrap();
        Kiosk::open(cfg, clock).await.unwrap()
    }

    #[tokio::test]
    async fn a_pin_entered_while_a_card_is_read_is_refused_not_dropped() {
        let dir = std::env::temp_dir().join(format!("civis-kiosk-busy-{}", std::process::id()));
        let kiosk = kiosk(&dir).await;
        kiosk.set_reading(true);
        assert!(matches!(
            kiosk.start_review("246810"),
            Err(StartReview::Busy)
        ));
        assert!(kiosk.take_review_pin().is_none(), "no PIN held");
        kiosk.set_reading(false);
        kiosk.start_review("246810").unwrap();
        assert_eq!(kiosk.take_review_pin().unwrap().as_str(), "246810");
        // The review's own read is under way: a second PIN is refused too.
        kiosk.set_reading(true);
        assert!(matches!(
            kiosk.start_review("135790"),
            Err(StartReview::Busy)
        ));
        drop(kiosk);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
