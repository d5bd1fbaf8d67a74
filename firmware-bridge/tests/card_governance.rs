//! The card follows the chain's governance set (card-applet.md §3.4): an accreditation signed
//! by any member's current key is honoured; a member's rotation, pushed as the member's own
//! `rotate-key` transaction, moves the card on, after which the rotated-out key accredits
//! nothing; forged, foreign and out-of-order rotations change nothing; a power cut during a
//! rotation leaves the old set or the new one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use civis_core::apdu::{Command, StatusWord};
use civis_core::card::{self, CLA_PROPRIETARY, TransportKey};
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::did::{Did, KeyCommitment};
use civis_firmware_bridge::reader::{CardClient, Personalizer};
use civis_firmware_bridge::transport::InProcess;
use civis_wallet_core::applet::CardState;
use civis_wallet_core::holder::codes;
use common::*;
use rand_core::OsRng;

/// A governance member with its key history: `keys[i]` is `#key-(i+1)`.
struct Member {
    keys: Vec<SoftwareKey>,
}

impl Member {
    fn new() -> Self {
        Self {
            keys: (0..4).map(|_| SoftwareKey::generate(&mut OsRng)).collect(),
        }
    }

    fn inception(&self) -> (EcPublicKey, KeyCommitment) {
        (
            self.keys[0].public_key().clone(),
            KeyCommitment::to(self.keys[1].public_key()),
        )
    }

    fn did(&self) -> Did {
        let (k, n) = self.inception();
        Did::from_inception(&k, &n)
    }

    /// The `rotate-key` transaction from `#key-index` to the next key, as the chain records it.
    fn rotation(&self, index: usize) -> Vec<u8> {
        self.rotation_to(index, self.keys[index].public_key())
    }

    fn rotation_to(&self, index: usize, key: &EcPublicKey) -> Vec<u8> {
        let tx = Tx {
            chain: CHAIN.into(),
            seq: index as u64,
            op: Op::RotateKey {
                key: key.clone(),
                next: KeyCommitment::to(self.keys[index + 1].public_key()),
            },
        };
        let url = self.did().key_url(u32::try_from(index).unwrap());
        SignedTx::sign(tx, url, &self.keys[index - 1])
            .unwrap()
            .bytes()
            .to_vec()
    }

    /// A world whose kiosk is accredited by this member's `#key-index`.
    fn accredits(&self, index: usize, world: &World) -> World {
        let mut w = World::with_grants(&["age_over_18"]);
        w.kiosk = world.kiosk.clone();
        w.issuer = world.issuer.clone();
        w.issuer_kid = world.issuer_kid.clone();
        let mut statement = civis_core::kiosk::statement_unverified(&world.statement).unwrap();
        statement.not_before = NOW - 86_400;
        w.statement = statement
            .sign(
                &self.did().key_url(u32::try_from(index).unwrap()),
                &self.keys[index - 1],
            )
            .unwrap();
        w
    }
}

/// A card personalized with the two-member set `[a, b]` at inception.
fn card(world: &World, a: &Member, b: &Member) -> CardClient<InProcess> {
    let mut client = CardClient::new(InProcess::new(CardState::blank(
        [7; 16],
        TransportKey([0x42; 32]),
    )));
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    let key = p.generate_key().unwrap();
    p.set_pin(PIN).unwrap();
    p.set_puk(PUK).unwrap();
    p.set_governance(CHAIN, &[a.inception(), b.inception()])
        .unwrap();
    p.put_credential(0, &world.credential(&key)).unwrap();
    p.lock().unwrap();
    client
}

/// Whether a tap by `world`'s kiosk gets `age_over_18` (else the card refused the reader).
fn honoured(client: &mut CardClient<InProcess>, world: &World) -> bool {
    client.transport().reset();
    let (_, response, transcript, request) = read(client, world, &["age_over_18"], None, true);
    match world.verify(&response, &transcript, &request) {
        Ok(docs) if disclosed(&docs[0]) == ["age_over_18"] => true,
        _ => {
            assert_eq!(
                document_error(&response, civis_core::mdoc::citizen::DOC_TYPE),
                Some(codes::READER_NOT_AUTHENTICATED)
            );
            false
        }
    }
}

fn push(client: &mut CardClient<InProcess>, tx: &[u8]) -> StatusWord {
    client.transport().reset();
    client.select(card::AID_CIVIS).unwrap();
    client
        .send(&Command::new(CLA_PROPRIETARY, card::ins::ROTATE_GOVERNANCE, 0, 0).with_data(tx))
        .unwrap()
        .sw
}

#[test]
fn a_second_members_accreditation_is_honoured_and_a_rotated_out_key_is_not() {
    let world = World::with_grants(&["age_over_18"]);
    let (a, b) = (Member::new(), Member::new());
    let mut client = card(&world, &a, &b);

    assert!(honoured(&mut client, &a.accredits(1, &world)));
    assert!(honoured(&mut client, &b.accredits(1, &world)));
    // A key the member has not rotated to yet (the card holds #key-1).
    assert!(!honoured(&mut client, &a.accredits(2, &world)));

    // A rotates on chain; the kiosk pushes the recorded transaction at the next tap.
    client.transport().reset();
    assert_eq!(client.follow_governance(&[a.rotation(1)]).unwrap(), 1);
    assert!(
        !honoured(&mut client, &a.accredits(1, &world)),
        "rotated-out key"
    );
    assert!(honoured(&mut client, &a.accredits(2, &world)));
    assert!(
        honoured(&mut client, &b.accredits(1, &world)),
        "B untouched"
    );

    // Every recorded rotation pushed at every tap: the ones the card has change nothing, the
    // next ones in order move it on.
    let before = client.transport().state().clone();
    client.transport().reset();
    assert_eq!(client.follow_governance(&[a.rotation(1)]).unwrap(), 1);
    assert_eq!(client.transport().state().governance, before.governance);
    client.transport().reset();
    assert_eq!(
        client
            .follow_governance(&[a.rotation(1), a.rotation(2), b.rotation(1)])
            .unwrap(),
        3
    );
    let g = client.transport().state().governance.clone().unwrap();
    assert_eq!((g.members[0].index, g.members[1].index), (3, 2));
    assert!(!honoured(&mut client, &a.accredits(2, &world)));
    assert!(!honoured(&mut client, &b.accredits(1, &world)));
    assert!(honoured(&mut client, &a.accredits(3, &world)));
    assert!(honoured(&mut client, &b.accredits(2, &world)));
}

#[test]
fn forged_foreign_and_out_of_order_rotations_change_nothing() {
    let world = World::with_grants(&["age_over_18"]);
    let (a, b) = (Member::new(), Member::new());
    let mut client = card(&world, &a, &b);
    let before = client.transport().state().clone();
    let thief = SoftwareKey::generate(&mut OsRng);

    // A thief of A's current key cannot pick A's next key: the commitment pins it.
    assert_eq!(
        push(&mut client, &a.rotation_to(1, thief.public_key())),
        StatusWord::SecurityStatusNotSatisfied
    );
    // A's committed key, in a transaction signed by someone else under A's name.
    let tx = SignedTx::sign(
        SignedTx::decode(&a.rotation(1)).unwrap().tx,
        a.did().key_url(1),
        &thief,
    )
    .unwrap();
    assert_eq!(
        push(&mut client, tx.bytes()),
        StatusWord::SecurityStatusNotSatisfied
    );
    // The second rotation before the first.
    assert_eq!(
        push(&mut client, &a.rotation(2)),
        StatusWord::ConditionsNotSatisfied
    );
    // A stranger's own rotation; another chain's; not a rotation; garbage; truncated.
    let stranger = Member::new();
    assert_eq!(
        push(&mut client, &stranger.rotation(1)),
        StatusWord::SecurityStatusNotSatisfied
    );
    let mut other_chain = SignedTx::decode(&a.rotation(1)).unwrap().tx;
    other_chain.chain = "civis-other".into();
    let other = SignedTx::sign(other_chain, a.did().key_url(1), &a.keys[0]).unwrap();
    assert_eq!(
        push(&mut client, other.bytes()),
        StatusWord::SecurityStatusNotSatisfied
    );
    let good = a.rotation(1);
    for cut in [0, 1, good.len() / 2, good.len() - 1] {
        assert_ne!(push(&mut client, &good[..cut]), StatusWord::Ok, "cut {cut}");
    }
    assert_ne!(push(&mut client, &[0xFF; 300]), StatusWord::Ok);
    assert_eq!(
        client.transport().state().governance,
        before.governance,
        "nothing refused changed the set"
    );
    assert_eq!(push(&mut client, &good), StatusWord::Ok);
}

#[test]
fn a_power_cut_during_a_rotation_leaves_the_old_set_or_the_new_one() {
    let world = World::with_grants(&["age_over_18"]);
    let (a, b) = (Member::new(), Member::new());
    let mut client = card(&world, &a, &b);
    let state = client.transport().state().clone();
    let mut outcomes = Vec::new();
    for n in 0..3 {
        let mut t = InProcess::new(state.clone());
        t.memory().cut_at(n);
        let mut c = CardClient::new(t);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.follow_governance(&[a.rotation(1)])
        }));
        let held = c.transport().memory().state().clone();
        let index = held.governance.as_ref().unwrap().members[0].index;
        assert!(index == 1 || index == 2, "cut at write {n}: index {index}");
        assert!(CardState::decode(&held.encode()).is_ok());
        outcomes.push(index);
    }
    // The rotation's only write: cut there, the old set; past it, the new one.
    assert_eq!(outcomes, [1, 2, 2]);
}

/// A holder with the mdoc application only (a phone's mdoc over NFC): SELECT of the Civis AID
/// answers "file not found".
struct MdocOnly<'a>(&'a mut InProcess);

impl civis_firmware_bridge::CardTransport for MdocOnly<'_> {
    fn transmit(&mut self, command: &[u8]) -> civis_firmware_bridge::Result<Vec<u8>> {
        if command.get(1) == Some(&0xA4) && command.ends_with(card::AID_CIVIS) {
            return Ok(vec![0x6A, 0x82]);
        }
        self.0.transmit(command)
    }
}

#[test]
fn a_holder_without_the_civis_application_is_read_all_the_same() {
    let world = World::with_grants(&["age_over_18"]);
    let (a, b) = (Member::new(), Member::new());
    let mut client = card(&world, &a, &b);
    client.transport().reset();
    let mut phone = CardClient::new(MdocOnly(client.transport()));
    assert_eq!(phone.follow_governance(&[a.rotation(1)]).unwrap(), 0);
    let (_, response, transcript, request) = read(
        &mut phone,
        &b.accredits(1, &world),
        &["age_over_18"],
        None,
        true,
    );
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(disclosed(&docs[0]), ["age_over_18"]);
}
