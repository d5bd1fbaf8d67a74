//! The citizen-card applet as a sans-IO state machine: APDU in, APDU out.
//!
//! Three applications share the card (specs/card-applet.md), one module each:
//! - [`ndef_app`]: the NDEF Type 4 Tag, serving the static handover with this tap's
//!   DeviceEngagement;
//! - [`mdoc_app`]: the mdoc application: ENVELOPE / GET RESPONSE carrying ISO 18013-5 session
//!   messages, and card management (PIN) inside the session;
//! - [`civis_app`]: card info, personalization (MAC'd under the batch transport key, until
//!   LOCK), governance rotations and INTERNAL AUTHENTICATE.
//!
//! [`Card`] holds the persistent [`CardState`] and the transient (RAM) state of one power-on.
//! Persistent memory is the host's, reached through [`Nvm`]: every command computes its new
//! state and commits it before it answers, which makes every command atomic against tearing;
//! a PIN or PUK try is committed *before* the comparison ([`secrets`]), so cutting the power
//! during a wrong guess's write saves no try.

mod civis_app;
mod mdoc_app;
mod ndef_app;
mod secrets;
pub mod state;

use civis_core::apdu::{self, CLA_CHAINING, Command, Response, ResponseChunker, StatusWord};
use civis_core::card::{
    self, AID_CIVIS, AID_MDOC, AID_NDEF, CLA_PERSO, CLA_PROPRIETARY, FILE_CC, FILE_NDEF,
    PERSO_MAC_LEN,
};
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::SessionTranscript;
use civis_core::ndef::NfcLimits;
use civis_core::session::Session;
use rand_core::CryptoRngCore;

pub use state::{CardState, MAX_STATE_LEN, Secret};

/// Applet version reported by GET DATA.
pub const VERSION: &str = "1.0";
/// Largest assembled command chain: a full credential slot sealed for renewal, plus its MAC.
const MAX_CHAIN: usize = card::renewal::MAX_SEALED_LEN + PERSO_MAC_LEN;
/// Largest assembled ENVELOPE message.
const MAX_ENVELOPE: usize = 64 * 1024;

/// Which application is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    None,
    Ndef,
    Mdoc,
    Civis,
}

/// This tap's engagement: the ephemeral device key and the NDEF file that carries it. Fixed
/// for the whole power-on, so repeated NDEF reads see the same bytes.
struct Engagement {
    e_device: SoftwareKey,
    device_engagement: Vec<u8>,
    handover: Vec<u8>,
    /// A session was established with it: one session per engagement, so a recorded
    /// SessionEstablishment cannot be run again in the same power-on.
    used: bool,
}

/// An established mdoc session.
struct MdocSession {
    session: Session,
    transcript: SessionTranscript,
    pin_verified: bool,
    /// The session's PIN check found the PIN blocked: `read-log` says so, so the holder learns
    /// to unblock it with the PUK rather than to try again.
    pin_blocked: bool,
    /// Some request of this session carried a valid kiosk accreditation: only then are a PIN
    /// or card-management messages looked at, so a stray reader cannot use up the tries.
    reader_authenticated: bool,
}

/// RAM: lost on power-off or reset.
struct Transient {
    app: App,
    file: Option<u16>,
    engagement: Option<Engagement>,
    session: Option<MdocSession>,
    chain: Option<([u8; 4], Vec<u8>)>,
    out: ResponseChunker,
    /// A write of this command was torn.
    torn: bool,
}

impl Transient {
    fn new() -> Self {
        Self {
            app: App::None,
            file: None,
            engagement: None,
            session: None,
            chain: None,
            out: ResponseChunker::default(),
            torn: false,
        }
    }
}

/// Power was lost while the card wrote its persistent memory: the command ended there, without
/// an answer. The card is then off: the host powers on a new [`Card`] from what its memory
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the card lost power while writing its memory")]
pub struct Torn;

/// The card's persistent memory as the applet sees it: one all-or-nothing write of the whole
/// state (an EEPROM transaction on a chip, the atomically replaced state file of the virtual
/// card).
pub trait Nvm {
    /// Make `state` durable, all or nothing; [`Torn`] if power was lost first.
    fn commit(&mut self, state: &CardState) -> Result<(), Torn>;
}

/// Persistent memory in RAM (tests, the in-process transport), which can be told to lose power
/// at a given write to test tearing.
#[derive(Debug, Clone)]
pub struct MemoryNvm {
    state: CardState,
    writes: u64,
    cut_at: Option<u64>,
}

impl MemoryNvm {
    /// Memory holding `state`.
    pub fn new(state: CardState) -> Self {
        Self {
            state,
            writes: 0,
            cut_at: None,
        }
    }

    /// Lose power during the `n`-th write from now (0: the next one): that write and every
    /// later one leave the memory as it was.
    pub fn cut_at(&mut self, n: u64) {
        self.cut_at = Some(self.writes.saturating_add(n));
    }

    /// Restore power.
    pub fn heal(&mut self) {
        self.cut_at = None;
    }

    /// What the memory holds.
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// Writes completed or attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl Nvm for MemoryNvm {
    fn commit(&mut self, state: &CardState) -> Result<(), Torn> {
        let n = self.writes;
        self.writes = self.writes.saturating_add(1);
        if self.cut_at.is_some_and(|c| n >= c) {
            return Err(Torn);
        }
        self.state = state.clone();
        Ok(())
    }
}

/// The host's memory, remembering the last state committed during one command.
struct Tracked<'a> {
    inner: &'a mut dyn Nvm,
    last: Option<CardState>,
}

impl Nvm for Tracked<'_> {
    fn commit(&mut self, state: &CardState) -> Result<(), Torn> {
        self.inner.commit(state)?;
        self.last = Some(state.clone());
        Ok(())
    }
}

/// The card: persistent state plus this power-on's RAM.
pub struct Card {
    state: CardState,
    ram: Transient,
    limits: NfcLimits,
    /// Power was lost during a write: this card answers nothing more.
    off: bool,
}

fn sw(sw: StatusWord) -> Response {
    Response::status(sw)
}

impl Card {
    /// Power on a card with stored `state`.
    pub fn new(state: CardState) -> Self {
        Self {
            state,
            ram: Transient::new(),
            limits: NfcLimits::EXTENDED,
            off: false,
        }
    }

    /// Advertise other NFC limits in the handover (e.g. [`NfcLimits::SHORT`] for readers
    /// without extended length).
    pub fn with_limits(mut self, limits: NfcLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The persistent state as of the last command that answered.
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// Power-off or reset: RAM is gone, persistent state stays.
    pub fn reset(&mut self) {
        self.ram = Transient::new();
    }

    /// Process one command APDU and return the response APDU (data ‖ SW1 SW2). A changed state
    /// is committed to `nvm` before the answer. [`Torn`] means power was lost during a write:
    /// no answer, and this card stays off (the host powers on a new one from `nvm`). Never
    /// panics, whatever the bytes.
    pub fn process(
        &mut self,
        apdu_bytes: &[u8],
        rng: &mut impl CryptoRngCore,
        nvm: &mut dyn Nvm,
    ) -> Result<Vec<u8>, Torn> {
        if self.off {
            return Err(Torn);
        }
        let mut next = self.state.clone();
        let mut memory = Tracked {
            inner: nvm,
            last: None,
        };
        let response = match Command::parse(apdu_bytes) {
            Ok(cmd) => self.dispatch(&cmd, &mut next, rng, &mut memory),
            Err(_) => sw(StatusWord::WrongLength),
        };
        // Compared with what memory holds now: a PIN check commits mid-command, and a right PIN
        // then gives the try back, so the final state may equal the one before the command
        // while memory holds the spent try.
        let durable = memory.last.as_ref().unwrap_or(&self.state);
        let changed = next != *durable;
        if self.ram.torn || (changed && memory.commit(&next).is_err()) {
            self.off = true;
            self.ram = Transient::new();
            return Err(Torn);
        }
        self.state = next;
        Ok(response.encode())
    }

    fn dispatch(
        &mut self,
        cmd: &Command,
        next: &mut CardState,
        rng: &mut impl CryptoRngCore,
        nvm: &mut dyn Nvm,
    ) -> Response {
        let cla = cmd.cla & !CLA_CHAINING;
        // GET RESPONSE continues the pending reply; any other command drops it.
        if cla == 0x00 && cmd.ins == apdu::ins::GET_RESPONSE {
            if !self.ram.out.has_pending() {
                return sw(StatusWord::ConditionsNotSatisfied);
            }
            return self.ram.out.next(cmd.le.unwrap_or(256));
        }
        self.ram.out = ResponseChunker::default();
        if cla == 0x00 && cmd.ins == apdu::ins::SELECT {
            self.ram.chain = None;
            return self.select(cmd, rng);
        }
        // Command chaining: collect the pieces, process the whole on the last one.
        let header = [cla, cmd.ins, cmd.p1, cmd.p2];
        let data = match self.ram.chain.take() {
            Some((h, mut buf)) if h == header => {
                buf.extend_from_slice(&cmd.data);
                buf
            }
            Some(_) if cmd.is_chained() => return sw(StatusWord::LastCommandExpected),
            _ => cmd.data.clone(),
        };
        let limit = if cmd.ins == apdu::ins::ENVELOPE {
            MAX_ENVELOPE
        } else {
            MAX_CHAIN
        };
        if data.len() > limit {
            return sw(StatusWord::WrongLength);
        }
        if cmd.is_chained() {
            self.ram.chain = Some((header, data));
            return sw(StatusWord::Ok);
        }
        match (self.ram.app, cla, cmd.ins) {
            (App::Ndef, 0x00, apdu::ins::READ_BINARY) => self.read_binary(cmd),
            (App::Ndef, 0x00, apdu::ins::UPDATE_BINARY) => sw(StatusWord::ConditionsNotSatisfied),
            (App::Mdoc, 0x00, apdu::ins::ENVELOPE) => {
                let reply = self.envelope(&data, next, nvm);
                if reply.is_empty() {
                    return sw(StatusWord::Ok);
                }
                self.ram.out.start(reply, cmd.le.unwrap_or(256))
            }
            (App::Civis, 0x00, card::ins::INTERNAL_AUTHENTICATE) => {
                self.internal_authenticate(&data)
            }
            (App::Civis, CLA_PROPRIETARY, card::ins::GET_DATA) => {
                Response::ok(self.get_data(next, rng).encode())
            }
            (App::Civis, CLA_PROPRIETARY, card::ins::ROTATE_GOVERNANCE) => {
                civis_app::rotate_governance(&data, next)
            }
            (App::Civis, CLA_PERSO, _) => self.personalize(header, &data, next, rng),
            (App::None, _, _) => sw(StatusWord::ConditionsNotSatisfied),
            (_, 0x00 | CLA_PROPRIETARY | CLA_PERSO, _) => sw(StatusWord::InsNotSupported),
            _ => sw(StatusWord::ClaNotSupported),
        }
    }

    fn select(&mut self, cmd: &Command, rng: &mut impl CryptoRngCore) -> Response {
        match cmd.p1 {
            // By name (AID).
            0x04 => {
                let app = match cmd.data.as_slice() {
                    d if d == AID_NDEF => App::Ndef,
                    d if d == AID_MDOC => App::Mdoc,
                    d if d == AID_CIVIS => App::Civis,
                    _ => return sw(StatusWord::NotFound),
                };
                if app == App::Ndef && self.ram.engagement.is_none() {
                    match ndef_app::new_engagement(self.limits, rng) {
                        Ok(e) => self.ram.engagement = Some(e),
                        Err(_) => return sw(StatusWord::Unknown),
                    }
                }
                if app != self.ram.app {
                    self.ram.file = None;
                }
                self.ram.app = app;
                sw(StatusWord::Ok)
            }
            // By file id, inside the NDEF application.
            0x00 if self.ram.app == App::Ndef => match cmd.data.as_slice() {
                [hi, lo] if u16::from_be_bytes([*hi, *lo]) == FILE_CC => {
                    self.ram.file = Some(FILE_CC);
                    sw(StatusWord::Ok)
                }
                [hi, lo] if u16::from_be_bytes([*hi, *lo]) == FILE_NDEF => {
                    self.ram.file = Some(FILE_NDEF);
                    sw(StatusWord::Ok)
                }
                _ => sw(StatusWord::NotFound),
            },
            _ => sw(StatusWord::IncorrectP1P2),
        }
    }
}
