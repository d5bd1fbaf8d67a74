//! Real readers through libnfc (`nfc1`, feature `nfc`): its PC/SC driver (any PC/SC reader,
//! pcscd's vpcd virtual reader included) and the native PN53x drivers (ACR122U, PN532 on UART,
//! PN533 on USB).
//!
//! libnfc is blocking and not thread-safe, so each open reader lives on its own thread; the
//! [`NfcTransport`] sends it APDUs over a channel.
//!
//! Reader names: a libnfc connstring (`pcsc:Virtual PCD 00 00`, `pn532_uart:/dev/ttyUSB0`,
//! `acr122_usb:…`), or a bare PC/SC reader name, which means `pcsc:<name>`.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nfc1::{BaudRate, Modulation, ModulationType, Property, Timeout};

use crate::error::{Error, Result};
use crate::transport::CardTransport;

/// Largest response libnfc is asked to receive (extended Le plus the status word).
const MAX_RESPONSE: usize = 65536 + 2;
/// How long one APDU may take before the link counts as lost.
const APDU_TIMEOUT: Duration = Duration::from_secs(20);

fn nfc_error(context: &str, e: nfc1::Error) -> Error {
    Error::Link(format!("{context}: {e:?}"))
}

/// The libnfc connstring for a reader name.
pub fn connstring(name: &str) -> String {
    const DRIVERS: &[&str] = &[
        "pcsc:",
        "acr122_pcsc:",
        "acr122_usb:",
        "pn53x_usb:",
        "pn532_uart:",
    ];
    if DRIVERS.iter().any(|d| name.starts_with(d)) {
        name.to_owned()
    } else {
        format!("pcsc:{name}")
    }
}

/// Readers libnfc can open (connstrings), PC/SC readers first.
pub fn list_readers() -> Result<Vec<String>> {
    let mut names = Vec::new();
    // PC/SC readers by name, from pcscd itself: libnfc only lists PC/SC readers with a card
    // present, and the operator wants to see empty readers too.
    if let Ok(ctx) = pcsc::Context::establish(pcsc::Scope::User)
        && let Ok(readers) = ctx.list_readers_owned()
    {
        names.extend(
            readers
                .iter()
                .map(|r| format!("pcsc:{}", r.to_string_lossy())),
        );
    }
    let mut context = nfc1::Context::new().map_err(|e| nfc_error("libnfc init", e))?;
    for d in context
        .list_devices(16)
        .map_err(|e| nfc_error("libnfc list", e))?
    {
        if !names.contains(&d) {
            names.push(d);
        }
    }
    Ok(names)
}

/// pcscd's current state flags for a PC/SC reader.
fn pcsc_state(reader: &str) -> Result<pcsc::State> {
    let name = reader.strip_prefix("pcsc:").unwrap_or(reader);
    let ctx = pcsc::Context::establish(pcsc::Scope::User)
        .map_err(|e| Error::Link(format!("pcscd: {e}")))?;
    let cname = std::ffi::CString::new(name).map_err(|_| Error::Link("reader name".into()))?;
    let mut states = [pcsc::ReaderState::new(cname, pcsc::State::UNAWARE)];
    ctx.get_status_change(Duration::from_millis(0), &mut states)
        .map_err(|e| Error::Link(format!("pcscd: {e}")))?;
    Ok(states
        .first()
        .map_or(pcsc::State::UNKNOWN, pcsc::ReaderState::event_state))
}

/// pcscd's view of a PC/SC reader (e.g. `EMPTY`, `PRESENT | INUSE`), for messages and
/// diagnostics.
pub fn reader_state(reader: &str) -> Result<String> {
    Ok(format!("{:?}", pcsc_state(reader)?))
}

/// Whether a PC/SC reader currently holds a card (for waiting on a tap).
pub fn card_present(reader: &str) -> Result<bool> {
    Ok(pcsc_state(reader)?.contains(pcsc::State::PRESENT))
}

/// Wait up to `timeout` until a PC/SC reader holds a card (`present`) or holds none; returns
/// whether that happened. pcscd wakes the caller on the change itself, so a kiosk sees a tap
/// without polling.
pub fn wait_card(reader: &str, present: bool, timeout: Duration) -> Result<bool> {
    Ok(wait_card_event(reader, present, timeout)?.is_some())
}

/// [`wait_card`] that also returns pcscd's count of the reader's card events (insertions and
/// removals) at that moment, so a later [`wait_card_change`] can tell a new card from the one
/// still lying on the reader.
pub fn wait_card_event(reader: &str, present: bool, timeout: Duration) -> Result<Option<u32>> {
    wait_reader(reader, timeout, |state, _| {
        state.contains(pcsc::State::PRESENT) == present
    })
}

/// Wait up to `timeout` until the card seen at event count `since` is gone: the reader holds no
/// card, or pcscd has counted card events since (the card was taken away and one put back
/// while the caller was busy, which a bare "present" flag cannot show). Returns whether that
/// happened.
pub fn wait_card_change(reader: &str, since: u32, timeout: Duration) -> Result<bool> {
    Ok(wait_reader(reader, timeout, |state, count| {
        !state.contains(pcsc::State::PRESENT) || count != since
    })?
    .is_some())
}

/// Wait up to `timeout` until `done(state, event count)` holds for the reader; the event count
/// then, or `None` on timeout.
fn wait_reader(
    reader: &str,
    timeout: Duration,
    done: impl Fn(pcsc::State, u32) -> bool,
) -> Result<Option<u32>> {
    let name = reader.strip_prefix("pcsc:").unwrap_or(reader);
    let ctx = pcsc::Context::establish(pcsc::Scope::User)
        .map_err(|e| Error::Link(format!("pcscd: {e}")))?;
    let cname = std::ffi::CString::new(name).map_err(|_| Error::Link("reader name".into()))?;
    let mut states = [pcsc::ReaderState::new(cname, pcsc::State::UNAWARE)];
    let deadline = deadline_after(timeout);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ctx.get_status_change(left, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => return Ok(None),
            Err(e) => return Err(Error::Link(format!("pcscd: {e}"))),
        }
        let (state, count) = states.first().map_or((pcsc::State::UNKNOWN, 0), |s| {
            (s.event_state(), s.event_count())
        });
        if done(state, count) {
            return Ok(Some(count));
        }
        if left.is_zero() {
            return Ok(None);
        }
        for s in &mut states {
            s.sync_current_state();
        }
    }
}

enum Request {
    Transceive(Vec<u8>, mpsc::Sender<Result<Vec<u8>>>),
}

/// A card in a libnfc reader, driven on the reader's own thread.
pub struct NfcTransport {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    name: String,
}

impl NfcTransport {
    /// Open `reader` and select the ISO 14443-4 card in its field, waiting up to `wait` for a
    /// card to be presented. libnfc resets the card while it selects it, so selection of an
    /// application must come after this.
    pub fn open(reader: &str, wait: Duration) -> Result<Self> {
        let name = connstring(reader);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name("civis-nfc".into())
            .spawn(move || reader_thread(&thread_name, wait, &ready_tx, &req_rx))
            .map_err(|e| Error::Link(format!("cannot start the reader thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                requests: Some(req_tx),
                thread: Some(thread),
                name,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Link("the reader thread stopped".into()))
            }
        }
    }

    /// The libnfc connstring of the reader.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn reader_thread(
    name: &str,
    wait: Duration,
    ready: &mpsc::Sender<Result<()>>,
    requests: &mpsc::Receiver<Request>,
) {
    let deadline = deadline_after(wait);
    let opened = (|| -> Result<(nfc1::Context, nfc1::Device)> {
        let mut context = nfc1::Context::new().map_err(|e| nfc_error("libnfc init", e))?;
        // libnfc's PC/SC driver opens only a reader with a card in it: retry until the card
        // is presented or the wait is over.
        let mut device = loop {
            match context.open_with_connstring(name) {
                Ok(d) => break d,
                Err(e) if Instant::now() >= deadline => {
                    return Err(nfc_error(&format!("cannot open reader {name}"), e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        device
            .initiator_init()
            .map_err(|e| nfc_error("initiator init", e))?;
        // Both default to on; some drivers refuse to set them at all.
        let _ = device.set_property_bool(Property::EasyFraming, true);
        let _ = device.set_property_bool(Property::AutoIso144434, true);
        let modulation = Modulation {
            modulation_type: ModulationType::Iso14443a,
            baud_rate: BaudRate::Baud106,
        };
        loop {
            match device.initiator_select_passive_target(&modulation) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(nfc_error("no ISO 14443-A card in the field", e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Ok((context, device))
    })();
    let (_context, mut device) = match opened {
        Ok(d) => {
            let _ = ready.send(Ok(()));
            d
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Ok(Request::Transceive(apdu, reply)) = requests.recv() {
        let result = device
            .initiator_transceive_bytes(&apdu, MAX_RESPONSE, Timeout::Duration(APDU_TIMEOUT))
            .map_err(|e| nfc_error("transceive", e));
        let _ = reply.send(result);
    }
    // `device` closes (and libnfc resets the card) when dropped here, before the context.
}

impl CardTransport for NfcTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let (tx, rx) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| Error::Link("reader closed".into()))?
            .send(Request::Transceive(command.to_vec(), tx))
            .map_err(|_| Error::Link("the reader thread stopped".into()))?;
        rx.recv()
            .map_err(|_| Error::Link("the reader thread stopped".into()))?
    }
}

impl Drop for NfcTransport {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Now plus `wait`, or a day from now when `wait` is beyond what the clock can add (a
/// `--wait` of u64::MAX seconds must not panic).
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(now)
}
