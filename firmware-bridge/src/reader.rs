//! The reader side of the citizen card's protocol over any [`CardTransport`]: NDEF engagement,
//! the mdoc session (ENVELOPE / GET RESPONSE), card info, INTERNAL AUTHENTICATE and the
//! issuer's personalization commands.

use ciborium::Value;
use civis_core::apdu::{self, CLA_CHAINING, Command, Response, StatusWord};
use civis_core::card::{
    self, AID_CIVIS, AID_MDOC, AID_NDEF, CLA_PROPRIETARY, CardInfo, FILE_CC, FILE_NDEF, GetData,
    TransportKey,
};
use civis_core::cbor::{self, CborForm, Limits, text, text_map};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::mdoc::engagement::STATUS_TERMINATION;
use civis_core::mdoc::{
    DeviceEngagement, DeviceRequest, SessionData, SessionEstablishment, SessionTranscript,
};
use civis_core::ndef::{self, NfcLimits};
use civis_core::session::{Role, Session};
use civis_core::vrf::VrfPublicKey;
use rand_core::CryptoRngCore;

use crate::error::{Error, Result};
use crate::transport::CardTransport;

/// What crossed the link: for the per-tap figures the benchmarks report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Command APDUs sent.
    pub apdus: u32,
    /// Bytes sent (command APDUs).
    pub bytes_out: u64,
    /// Bytes received (response APDUs).
    pub bytes_in: u64,
}

/// A card on a transport, seen from the reader.
pub struct CardClient<T> {
    transport: T,
    stats: LinkStats,
}

impl<T: CardTransport> CardClient<T> {
    /// Talk to the card on `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            stats: LinkStats::default(),
        }
    }

    /// The transport (e.g. to reset an in-process card).
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Link figures since the start (or the last [`CardClient::take_stats`]).
    pub fn take_stats(&mut self) -> LinkStats {
        std::mem::take(&mut self.stats)
    }

    /// Send one command; any status is returned, not turned into an error.
    pub fn send(&mut self, cmd: &Command) -> Result<Response> {
        let bytes = cmd.encode()?;
        let answer = self.transport.transmit(&bytes)?;
        self.stats.apdus = self.stats.apdus.saturating_add(1);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(bytes.len() as u64);
        self.stats.bytes_in = self.stats.bytes_in.saturating_add(answer.len() as u64);
        Ok(Response::parse(&answer)?)
    }

    /// Send one command and require `9000`.
    pub fn expect_ok(&mut self, what: &'static str, cmd: &Command) -> Result<Vec<u8>> {
        let r = self.send(cmd)?;
        if r.sw != StatusWord::Ok {
            return Err(Error::Status {
                command: what,
                status: r.sw,
            });
        }
        Ok(r.data)
    }

    /// SELECT an application by AID.
    pub fn select(&mut self, aid: &[u8]) -> Result<()> {
        self.expect_ok(
            "SELECT",
            &Command::new(0x00, apdu::ins::SELECT, 0x04, 0x00).with_data(aid),
        )
        .map(drop)
    }

    fn select_file(&mut self, id: u16) -> Result<()> {
        self.expect_ok(
            "SELECT FILE",
            &Command::new(0x00, apdu::ins::SELECT, 0x00, 0x0C).with_data(id.to_be_bytes()),
        )
        .map(drop)
    }

    fn read_binary(&mut self, offset: u16, len: u32) -> Result<Vec<u8>> {
        self.expect_ok(
            "READ BINARY",
            &Command::new(
                0x00,
                apdu::ins::READ_BINARY,
                (offset >> 8) as u8,
                (offset & 0xFF) as u8,
            )
            .with_le(len),
        )
    }

    /// Read the static handover from the NDEF application (Type 4 Tag sequence).
    pub fn read_engagement(&mut self) -> Result<Engaged> {
        self.select(AID_NDEF)?;
        self.select_file(FILE_CC)?;
        let cc = self.read_binary(0, 15)?;
        let file = match cc.get(9..11) {
            Some([hi, lo]) => u16::from_be_bytes([*hi, *lo]),
            _ => return Err(Error::Protocol("capability container too short".into())),
        };
        let mle = match cc.get(3..5) {
            Some([hi, lo]) => u16::from_be_bytes([*hi, *lo]),
            _ => 0,
        };
        if file != FILE_NDEF {
            return Err(Error::Protocol(format!("NDEF file {file:04X}")));
        }
        self.select_file(file)?;
        let nlen = self.read_binary(0, 2)?;
        let nlen = match nlen.as_slice() {
            [hi, lo] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return Err(Error::Protocol("NLEN is not 2 bytes".into())),
        };
        if nlen == 0 || nlen > ndef::MAX_MESSAGE_LEN {
            return Err(Error::Protocol(format!("NDEF message of {nlen} bytes")));
        }
        // Short reads: every reader and card supports them.
        let chunk = usize::from(mle.clamp(15, 255));
        let mut message = Vec::with_capacity(nlen);
        while message.len() < nlen {
            let want = (nlen - message.len()).min(chunk);
            let offset = u16::try_from(2 + message.len())
                .map_err(|_| Error::Protocol("NDEF offset".into()))?;
            let part = self.read_binary(offset, want as u32)?;
            if part.is_empty() {
                return Err(Error::Protocol("empty READ BINARY".into()));
            }
            message.extend_from_slice(&part);
        }
        message.truncate(nlen);
        let handover = ndef::parse_static_handover(&message)?;
        let device_engagement = DeviceEngagement::from_slice(&handover.device_engagement)?;
        Ok(Engaged {
            handover: message,
            device_engagement_bytes: handover.device_engagement,
            device_engagement,
            limits: handover.limits.unwrap_or(NfcLimits::SHORT),
        })
    }

    /// Send one mdoc message (the bytes inside DO'53') and collect the card's reply, following
    /// `61xx` with GET RESPONSE until `9000`.
    fn envelope(&mut self, message: &[u8], limits: NfcLimits) -> Result<Vec<u8>> {
        let wrapped = apdu::do53_wrap(message)?;
        let chunk = usize::try_from(limits.max_command).unwrap_or(255).max(1);
        let le = limits.max_response;
        let commands = apdu::chain(0x00, apdu::ins::ENVELOPE, 0, 0, &wrapped, chunk, Some(le));
        let mut last = None;
        for cmd in &commands {
            let r = self.send(cmd)?;
            if cmd.cla & CLA_CHAINING != 0 {
                if r.sw != StatusWord::Ok {
                    return Err(Error::Status {
                        command: "ENVELOPE",
                        status: r.sw,
                    });
                }
            } else {
                last = Some(r);
            }
        }
        let mut r = last.ok_or_else(|| Error::Protocol("no ENVELOPE sent".into()))?;
        let mut reply = std::mem::take(&mut r.data);
        loop {
            match r.sw {
                StatusWord::Ok => break,
                StatusWord::MoreData(n) => {
                    let want = if n == 0 { le } else { u32::from(n) };
                    r = self.send(&apdu::get_response(want))?;
                    reply.extend_from_slice(&r.data);
                    if reply.len() > 1024 * 1024 {
                        return Err(Error::Protocol("reply larger than 1 MiB".into()));
                    }
                }
                status => {
                    return Err(Error::Status {
                        command: "ENVELOPE",
                        status,
                    });
                }
            }
        }
        if reply.is_empty() {
            return Ok(reply);
        }
        Ok(apdu::do53_unwrap(&reply)?.to_vec())
    }

    /// GET DATA as the card answers it (selects the Civis application): the facts in the
    /// clear before LOCK, sealed to the batch's transport key after it.
    pub fn get_data(&mut self) -> Result<GetData> {
        self.select(AID_CIVIS)?;
        let data = self.expect_ok(
            "GET DATA",
            &Command::new(CLA_PROPRIETARY, card::ins::GET_DATA, 0, 0).with_le(256),
        )?;
        Ok(GetData::decode(&data)?)
    }

    /// The card-info record of a card being personalized; a locked card's is sealed (see
    /// [`Self::info_with`]).
    pub fn info(&mut self) -> Result<CardInfo> {
        Ok(self.get_data()?.open(None)?)
    }

    /// The card-info record, opening a locked card's with its batch's transport key.
    pub fn info_with(&mut self, transport: &TransportKey) -> Result<CardInfo> {
        Ok(self.get_data()?.open(Some(transport))?)
    }

    /// INTERNAL AUTHENTICATE: the card's signature over the domain-tagged hash of `challenge`.
    pub fn internal_authenticate(&mut self, challenge: &[u8]) -> Result<Vec<u8>> {
        self.select(AID_CIVIS)?;
        self.expect_ok(
            "INTERNAL AUTHENTICATE",
            &Command::new(0x00, card::ins::INTERNAL_AUTHENTICATE, 0, 0)
                .with_data(challenge)
                .with_le(256),
        )
    }

    /// ROTATE GOVERNANCE with a member's `rotate-key` transaction as the chain recorded it.
    /// `Ok` also when the card already had it.
    pub fn push_rotation(&mut self, tx: &[u8]) -> Result<()> {
        self.select(AID_CIVIS)?;
        self.expect_ok(
            "ROTATE GOVERNANCE",
            &Command::new(CLA_PROPRIETARY, card::ins::ROTATE_GOVERNANCE, 0, 0).with_data(tx),
        )
        .map(drop)
    }

    /// Bring the card's governance set up to the chain's: push every recorded rotation, each
    /// member's in order (what [`civis_core::chain::light::KioskSnapshot::governance_rotations`]
    /// gives). Rotations the card refuses are skipped (a card of another chain, or one a member
    /// rotated past on a chain this kiosk has not synced yet), and so is a holder without the
    /// Civis application (a phone's mdoc over NFC): the read goes on. Returns how many the card
    /// took.
    pub fn follow_governance(&mut self, rotations: &[Vec<u8>]) -> Result<usize> {
        if rotations.is_empty() {
            return Ok(0);
        }
        let selected =
            self.send(&Command::new(0x00, apdu::ins::SELECT, 0x04, 0x00).with_data(AID_CIVIS))?;
        if selected.sw != StatusWord::Ok {
            return Ok(0);
        }
        let mut taken = 0;
        for tx in rotations {
            let r = self.send(
                &Command::new(CLA_PROPRIETARY, card::ins::ROTATE_GOVERNANCE, 0, 0)
                    .with_data(tx.as_slice()),
            )?;
            if r.sw == StatusWord::Ok {
                taken += 1;
            }
        }
        Ok(taken)
    }
}

/// What the NDEF read yields.
#[derive(Debug, Clone)]
pub struct Engaged {
    /// The Handover Select message, exactly as read (the SessionTranscript's Handover).
    pub handover: Vec<u8>,
    /// The DeviceEngagement bytes as read.
    pub device_engagement_bytes: Vec<u8>,
    /// The DeviceEngagement.
    pub device_engagement: DeviceEngagement,
    /// The card's NFC limits.
    pub limits: NfcLimits,
}

/// A reader's mdoc session with the card.
pub struct MdocSession {
    session: Session,
    transcript: SessionTranscript,
    limits: NfcLimits,
}

impl MdocSession {
    /// Start a session: a fresh reader key, the transcript of this engagement, and the
    /// SessionTranscript the request must be built against (ReaderAuth signs over it).
    pub fn start(engaged: &Engaged, rng: &mut impl CryptoRngCore) -> (Self, SoftwareKey, Vec<u8>) {
        let e_reader = SoftwareKey::generate(rng);
        let e_reader_key_bytes =
            cbor::encode(&civis_core::cose::cose_key_value(e_reader.public_key()));
        let transcript = SessionTranscript::new(
            Some(&engaged.device_engagement_bytes),
            Some(&e_reader_key_bytes),
            Value::Array(vec![Value::Bytes(engaged.handover.clone()), Value::Null]),
        );
        let session = Session::new(
            Role::Reader,
            &e_reader,
            &engaged.device_engagement.e_device_key,
            &transcript.tagged_bytes(),
        );
        (
            Self {
                session,
                transcript,
                limits: engaged.limits,
            },
            e_reader,
            e_reader_key_bytes,
        )
    }

    /// The SessionTranscript both sides use.
    pub fn transcript(&self) -> &SessionTranscript {
        &self.transcript
    }

    /// Send the first request (SessionEstablishment) and return the decrypted answer.
    pub fn establish<T: CardTransport>(
        &mut self,
        client: &mut CardClient<T>,
        e_reader_key: &EcPublicKey,
        e_reader_key_bytes: Vec<u8>,
        request: &DeviceRequest,
    ) -> Result<Vec<u8>> {
        client.select(AID_MDOC)?;
        let est = SessionEstablishment {
            e_reader_key_bytes,
            e_reader_key: e_reader_key.clone(),
            data: self.session.encrypt(&request.to_vec())?,
        };
        let reply = client.envelope(&est.to_vec(), self.limits)?;
        self.open(&reply)
    }

    /// Send a further message in the session (a request or a card-management message).
    pub fn send<T: CardTransport>(
        &mut self,
        client: &mut CardClient<T>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let sd = SessionData {
            data: Some(self.session.encrypt(plaintext)?),
            status: None,
        };
        let reply = client.envelope(&sd.to_vec(), self.limits)?;
        self.open(&reply)
    }

    /// INTERNAL AUTHENTICATE inside an accredited session (the only place a locked card answers
    /// it): the card key's signature over `challenge` (card-applet.md §8), or the card's
    /// result when it refuses.
    pub fn authenticate_card<T: CardTransport>(
        &mut self,
        client: &mut CardClient<T>,
        challenge: &[u8],
    ) -> Result<std::result::Result<Vec<u8>, String>> {
        let message = cbor::encode(&text_map(vec![(
            card::MANAGEMENT_KEY,
            text_map(vec![
                ("op", text("internal-authenticate")),
                ("challenge", Value::Bytes(challenge.to_vec())),
            ]),
        )]));
        let answer = self.send(client, &message)?;
        const W: &str = "card management answer";
        let v = cbor::decode(W, &answer, Limits::new(1024))?;
        let m = cbor::access::map(W, &v)?;
        let inner = cbor::access::map(W, cbor::access::req(W, m, card::MANAGEMENT_KEY)?)?;
        let result = cbor::access::text(W, cbor::access::req(W, inner, "result")?)?;
        Ok(match cbor::access::get(W, inner, "signature")? {
            Some(sig) if result == "ok" => Ok(cbor::access::bytes(W, sig)?.to_vec()),
            _ => Err(result.to_owned()),
        })
    }

    /// The card's read log, newest first (card-applet.md §5.5): only in a session whose
    /// reader proved an accreditation and in which the holder's PIN was verified; otherwise the
    /// card's result (`pin-required`, `reader-not-authenticated`).
    pub fn read_log<T: CardTransport>(
        &mut self,
        client: &mut CardClient<T>,
    ) -> Result<std::result::Result<Vec<card::ReadLogEntry>, String>> {
        let message = cbor::encode(&text_map(vec![(
            card::MANAGEMENT_KEY,
            text_map(vec![("op", text("read-log"))]),
        )]));
        let answer = self.send(client, &message)?;
        const W: &str = "card management answer";
        let v = cbor::decode(W, &answer, Limits::new(64 * 1024))?;
        let m = cbor::access::map(W, &v)?;
        let inner = cbor::access::map(W, cbor::access::req(W, m, card::MANAGEMENT_KEY)?)?;
        let result = cbor::access::text(W, cbor::access::req(W, inner, "result")?)?;
        Ok(match cbor::access::get(W, inner, "log")? {
            Some(log) if result == "ok" => Ok(cbor::access::array(W, log)?
                .iter()
                .take(card::READ_LOG_LEN)
                .map(card::ReadLogEntry::from_value)
                .collect::<civis_core::Result<_>>()?),
            _ => Err(result.to_owned()),
        })
    }

    /// Change or unblock the PIN inside the session; returns the card's result and tries left.
    pub fn manage<T: CardTransport>(
        &mut self,
        client: &mut CardClient<T>,
        op: &str,
        presented: (&str, &str),
        new_pin: &str,
    ) -> Result<(String, Option<u64>)> {
        let message = cbor::encode(&text_map(vec![(
            card::MANAGEMENT_KEY,
            text_map(vec![
                ("op", text(op)),
                (presented.0, text(presented.1)),
                ("newPin", text(new_pin)),
            ]),
        )]));
        let answer = self.send(client, &message)?;
        const W: &str = "card management answer";
        let v = cbor::decode(W, &answer, Limits::new(1024))?;
        let m = cbor::access::map(W, &v)?;
        let inner = cbor::access::map(W, cbor::access::req(W, m, card::MANAGEMENT_KEY)?)?;
        let result = cbor::access::text(W, cbor::access::req(W, inner, "result")?)?.to_owned();
        let tries = cbor::access::get(W, inner, "triesLeft")?
            .map(|t| cbor::access::uint(W, t))
            .transpose()?;
        Ok((result, tries))
    }

    /// End the session (SessionData status 20).
    pub fn end<T: CardTransport>(self, client: &mut CardClient<T>) -> Result<()> {
        let sd = SessionData {
            data: None,
            status: Some(STATUS_TERMINATION),
        };
        client.envelope(&sd.to_vec(), self.limits).map(drop)
    }

    fn open(&mut self, reply: &[u8]) -> Result<Vec<u8>> {
        let sd = SessionData::from_slice(reply)?;
        match (sd.data, sd.status) {
            (Some(data), _) => Ok(self.session.decrypt(&data)?),
            (None, Some(status)) => Err(Error::SessionStatus(status)),
            (None, None) => Err(Error::Protocol("empty SessionData".into())),
        }
    }
}

/// The issuing agency's side of personalization: every command MAC'd under the batch transport
/// key with the card's counter.
pub struct Personalizer<'a, T> {
    client: &'a mut CardClient<T>,
    key: TransportKey,
    serial: [u8; 16],
    counter: u32,
    /// Longest command data per APDU (chained above it); 255 keeps to short APDUs.
    pub max_chunk: usize,
}

impl<'a, T: CardTransport> Personalizer<'a, T> {
    /// Read the card's serial and counter and get ready to personalize it.
    pub fn start(client: &'a mut CardClient<T>, key: TransportKey) -> Result<Self> {
        let info = client.info_with(&key)?;
        Ok(Self {
            client,
            key,
            serial: info.serial,
            counter: info.perso_counter,
            max_chunk: 255,
        })
    }

    /// Send one personalization command (chained if long) and return its data.
    pub fn command(
        &mut self,
        what: &'static str,
        ins: u8,
        p1: u8,
        p2: u8,
        body: &[u8],
    ) -> Result<Vec<u8>> {
        let commands = self.key.command(
            &self.serial,
            self.counter,
            [ins, p1, p2],
            body,
            self.max_chunk,
        );
        self.counter = self.counter.wrapping_add(1);
        let mut out = Vec::new();
        for cmd in &commands {
            match self.client.expect_ok(what, cmd) {
                Ok(data) => out = data,
                Err(e) => {
                    // The card uses up a counter value only for commands whose MAC it
                    // checked; after any failure take its counter as it is.
                    if let Ok(info) = self.client.info_with(&self.key) {
                        self.counter = info.perso_counter;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// GENERATE KEY: the card's public key (the VRF key it makes alongside is dropped; see
    /// [`Self::generate_keys`]).
    pub fn generate_key(&mut self) -> Result<EcPublicKey> {
        Ok(self.generate_keys()?.0)
    }

    /// GENERATE KEY: the card key (SEC1 uncompressed, 65 bytes) and the separate VRF key for
    /// election pseudonyms (SEC1 compressed, 33 bytes), both made on the card.
    pub fn generate_keys(&mut self) -> Result<(EcPublicKey, VrfPublicKey)> {
        let public = self.command("GENERATE KEY", card::ins::GENERATE_KEY, 0, 0, &[])?;
        let (card_key, vrf_key) = split_generated(&public)?;
        Ok((card_key, vrf_key))
    }

    /// Set the PIN.
    pub fn set_pin(&mut self, pin: &str) -> Result<()> {
        let [p1, p2] = card::item::PIN.to_be_bytes();
        self.command("SET PIN", card::ins::PUT_DATA, p1, p2, pin.as_bytes())
            .map(drop)
    }

    /// Set the PUK.
    pub fn set_puk(&mut self, puk: &str) -> Result<()> {
        let [p1, p2] = card::item::PUK.to_be_bytes();
        self.command("SET PUK", card::ins::PUT_DATA, p1, p2, puk.as_bytes())
            .map(drop)
    }

    /// Install the governance set as the genesis defines it (members' inception keys and
    /// next-key commitments); the card then follows rotations (`push_rotation`).
    pub fn set_governance(
        &mut self,
        chain: &str,
        members: &[(EcPublicKey, civis_core::did::KeyCommitment)],
    ) -> Result<()> {
        let [p1, p2] = card::item::GOVERNANCE.to_be_bytes();
        self.command(
            "SET GOVERNANCE",
            card::ins::PUT_DATA,
            p1,
            p2,
            &card::governance::GovernanceSet::inception_value(chain, members),
        )
        .map(drop)
    }

    /// Mark elements as needing the PIN.
    pub fn set_pin_elements(&mut self, elements: &[(String, String)]) -> Result<()> {
        let [p1, p2] = card::item::PIN_ELEMENTS.to_be_bytes();
        self.command(
            "SET PIN ELEMENTS",
            card::ins::PUT_DATA,
            p1,
            p2,
            &card::pin_elements_value(elements),
        )
        .map(drop)
    }

    /// Store a credential (IssuerSigned bytes) in `slot`.
    pub fn put_credential(&mut self, slot: u8, issuer_signed: &[u8]) -> Result<()> {
        self.command(
            "PUT CREDENTIAL",
            card::ins::PUT_CREDENTIAL,
            slot,
            0,
            issuer_signed,
        )
        .map(drop)
    }

    /// LOCK: no more personalization.
    pub fn lock(&mut self) -> Result<()> {
        self.command("LOCK", card::ins::LOCK, 0, 0, &[]).map(drop)
    }

    /// RENEW CREDENTIAL on a locked card: `issuer_signed` sealed to `card_key` replaces the
    /// credential in `slot`. Returns the card's receipt (checked against `card_key`).
    pub fn renew_credential(
        &mut self,
        slot: u8,
        card_key: &EcPublicKey,
        issuer_signed: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>> {
        let counter = self.counter;
        let body = card::renewal::seal(card_key, &self.serial, counter, slot, issuer_signed, rng)?;
        let receipt = self.command(
            "RENEW CREDENTIAL",
            card::ins::RENEW_CREDENTIAL,
            slot,
            0,
            &body,
        )?;
        card::renewal::verify_receipt(
            card_key,
            &self.serial,
            counter,
            slot,
            issuer_signed,
            &receipt,
        )?;
        Ok(receipt)
    }
}

/// Split GENERATE KEY's answer: card key (65 bytes, uncompressed) ‖ VRF key (33, compressed).
pub fn split_generated(answer: &[u8]) -> Result<(EcPublicKey, VrfPublicKey)> {
    if answer.len() != 65 + 33 {
        return Err(Error::Protocol(format!(
            "GENERATE KEY answered {} bytes, not 98",
            answer.len()
        )));
    }
    let (card_key, vrf_key) = answer.split_at(65);
    Ok((
        EcPublicKey::from_sec1(card_key)?,
        VrfPublicKey::from_sec1(vrf_key)?,
    ))
}
