//! The rules of each operation, one function per operation. Each checks everything before it
//! writes anything, so a refusal leaves the state as it was.

use std::sync::Arc;

use ciborium::Value;

use super::lists::{MAX_STATUS_ENTRIES, STATUS_CHUNK, chunk_key};
use super::records::{
    DidRecord, ListInfo, PENDING_VALIDATORS, accreditation_value, encode_key_list, kiosk_value,
};
use super::{Refused, State, invalid, status_uri};
use crate::cbor::{self, text, text_map};
use crate::chain::table::Table;
use crate::chain::tx::{self, SignedTx};
use crate::cose::{self, Domain};
use crate::crypto::EcPublicKey;
use crate::did::{Did, KeyCommitment};
use crate::kiosk::ElementGrants;
use crate::kiosk::KioskAccreditation;
use crate::status::{Bits, Status, StatusDelta, StatusList};

impl State {
    pub(super) fn rotate_key(
        &mut self,
        did: &Did,
        rec: &mut DidRecord,
        key: &EcPublicKey,
        next: &KeyCommitment,
        now: i64,
    ) -> Result<(), Refused> {
        const NAME: &str = "rotate-key";
        let committed = rec
            .next
            .ok_or_else(|| invalid(NAME, "no next-key commitment"))?;
        if !committed.matches(key) {
            return Err(invalid(
                NAME,
                "the key does not match the pre-rotation commitment",
            ));
        }
        if next.matches(key) {
            return Err(invalid(NAME, "the next commitment names the same key"));
        }
        // The key rotated away from signs nothing after this block.
        let retired = rec.key_url(did).to_string();
        let old = rec.key.clone();
        self.retire_key(&retired, &old, now);
        rec.key = key.clone();
        rec.key_index = rec
            .key_index
            .checked_add(1)
            .ok_or_else(|| invalid(NAME, "too many rotations"))?;
        rec.next = Some(*next);
        self.record_key(did, rec);
        Ok(())
    }

    pub(super) fn deactivate(&mut self, did: &Did, rec: &mut DidRecord) -> Result<(), Refused> {
        if self.governance.contains(did) {
            return Err(invalid(
                "deactivate",
                "a governance member cannot deactivate itself",
            ));
        }
        rec.deactivated = true;
        rec.next = None;
        // A deactivated issuer issues nothing more.
        if self
            .kiosk
            .get(Table::Issuer, did.as_str().as_bytes())
            .is_some()
        {
            self.kiosk.put(
                Table::Issuer,
                did.as_str().as_bytes(),
                accreditation_value(&[], i64::MIN),
            );
        }
        Ok(())
    }

    pub(super) fn accredit_issuer(
        &mut self,
        signer: &Did,
        issuer: &Did,
        doc_types: &[String],
        until: i64,
        now: i64,
    ) -> Result<(), Refused> {
        const NAME: &str = "accredit-issuer";
        self.require_governance(signer, NAME)?;
        let target = self
            .did(issuer)
            .ok_or_else(|| invalid(NAME, "the issuer DID does not exist"))?;
        if target.deactivated {
            return Err(invalid(NAME, "the issuer DID is deactivated"));
        }
        if doc_types.is_empty() || doc_types.iter().any(|d| d.is_empty() || d.len() > 128) {
            return Err(invalid(
                NAME,
                "docTypes must be 1..128 characters, at least one",
            ));
        }
        if until <= now {
            return Err(invalid(NAME, "accreditation would already have ended"));
        }
        self.anchor(issuer, &target);
        self.kiosk.put(
            Table::Issuer,
            issuer.as_str().as_bytes(),
            accreditation_value(doc_types, until),
        );
        Ok(())
    }

    pub(super) fn revoke_issuer(&mut self, signer: &Did, issuer: &Did) -> Result<(), Refused> {
        const NAME: &str = "revoke-issuer";
        self.require_governance(signer, NAME)?;
        if self
            .kiosk
            .get(Table::Issuer, issuer.as_str().as_bytes())
            .is_none()
        {
            return Err(invalid(NAME, "the issuer is not accredited"));
        }
        self.kiosk.put(
            Table::Issuer,
            issuer.as_str().as_bytes(),
            accreditation_value(&[], i64::MIN),
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn accredit_kiosk(
        &mut self,
        signer: &Did,
        signer_rec: &DidRecord,
        kiosk: &Did,
        grants: &ElementGrants,
        purpose: &str,
        (not_before, not_after): (i64, i64),
        statement: &[u8],
        now: i64,
    ) -> Result<(), Refused> {
        const NAME: &str = "accredit-kiosk";
        self.require_governance(signer, NAME)?;
        let target = self
            .did(kiosk)
            .ok_or_else(|| invalid(NAME, "the kiosk DID does not exist"))?;
        if target.deactivated {
            return Err(invalid(NAME, "the kiosk DID is deactivated"));
        }
        if grants.is_empty() || purpose.is_empty() || not_after <= not_before || not_after <= now {
            return Err(invalid(
                NAME,
                "needs grants, a purpose and a window that has not ended",
            ));
        }
        // The statement cards check must say exactly what the chain records, for the kiosk's
        // current key, signed by this governance member.
        let signed = KioskAccreditation::verify(statement, &signer_rec.key)
            .map_err(|e| invalid(NAME, format!("statement: {e}")))?;
        let expected = KioskAccreditation {
            chain: self.chain_id.clone(),
            kiosk: kiosk.clone(),
            key: target.key.clone(),
            grants: grants.to_vec(),
            purpose: purpose.to_owned(),
            not_before,
            not_after,
        };
        if signed != expected {
            return Err(invalid(
                NAME,
                "the statement differs from the transaction or names another key",
            ));
        }
        self.anchor(kiosk, &target);
        self.kiosk.put(
            Table::Kiosk,
            kiosk.as_str().as_bytes(),
            kiosk_value(
                &target.key,
                grants,
                purpose,
                not_before,
                not_after,
                statement,
            ),
        );
        Ok(())
    }

    pub(super) fn create_status_list(
        &mut self,
        issuer: &Did,
        list: &str,
        bits: u8,
        size: u64,
        now: i64,
    ) -> Result<(), Refused> {
        const NAME: &str = "create-status-list";
        let unauthorized = || Refused::Unauthorized {
            signer: issuer.to_string(),
            op: NAME,
        };
        let (_, until) = self.issuer_accreditation(issuer).ok_or_else(unauthorized)?;
        if until <= now {
            return Err(unauthorized());
        }
        if list.is_empty()
            || list.len() > 64
            || !list
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(NAME, "list name must be 1..64 of [A-Za-z0-9_-]"));
        }
        let bits = Bits::new(u64::from(bits)).map_err(|e| invalid(NAME, e.to_string()))?;
        if size == 0 || size > MAX_STATUS_ENTRIES {
            return Err(invalid(NAME, "size must be 1..=16777216 entries"));
        }
        let uri = status_uri(issuer, list);
        if self.lists.contains_key(&uri) {
            return Err(invalid(NAME, "the list exists"));
        }
        let l = StatusList::new(bits, size).map_err(|e| invalid(NAME, e.to_string()))?;
        let meta = ListInfo {
            // Numbered in creation order: sync deltas name lists by this short id.
            id: self.lists.len() as u64,
            bits,
            size,
        };
        self.kiosk
            .put(Table::StatusMeta, uri.as_bytes(), meta.encode());
        for (i, chunk) in (0u64..).zip(l.as_bytes().chunks(STATUS_CHUNK)) {
            self.kiosk
                .put(Table::StatusChunk, &chunk_key(&uri, i), chunk.to_vec());
        }
        self.lists.insert(uri, Arc::new((meta, l)));
        Ok(())
    }

    pub(super) fn update_status(
        &mut self,
        issuer: &Did,
        list: &str,
        delta: &StatusDelta,
    ) -> Result<(), Refused> {
        const NAME: &str = "update-status";
        let uri = status_uri(issuer, list);
        let (meta, current) = self
            .lists
            .get(&uri)
            .map(|e| (&e.0, &e.1))
            .ok_or_else(|| invalid(NAME, "no such list for this issuer"))?;
        if delta.changes().is_empty() {
            return Err(invalid(NAME, "empty delta"));
        }
        for (idx, value) in delta.changes() {
            if *idx >= meta.size {
                return Err(invalid(NAME, format!("index {idx} outside the list")));
            }
            if Status::from_value(*value).is_none() {
                return Err(invalid(NAME, format!("status value {value} undefined")));
            }
            // Revocation is final.
            if current.get(*idx) == Some(Status::Invalid.value())
                && *value != Status::Invalid.value()
            {
                return Err(invalid(NAME, format!("entry {idx} is revoked for good")));
            }
        }
        let mut updated = current.clone();
        updated
            .apply(delta)
            .map_err(|e| invalid(NAME, e.to_string()))?;
        let per_chunk = (STATUS_CHUNK as u64).saturating_mul(meta.bits.per_byte());
        let mut chunks: Vec<u64> = delta.changes().iter().map(|(i, _)| i / per_chunk).collect();
        chunks.dedup();
        for c in chunks {
            let start = usize::try_from(c)
                .unwrap_or(usize::MAX)
                .saturating_mul(STATUS_CHUNK);
            let end = start
                .saturating_add(STATUS_CHUNK)
                .min(updated.as_bytes().len());
            let bytes = updated
                .as_bytes()
                .get(start..end)
                .unwrap_or_default()
                .to_vec();
            self.kiosk
                .put(Table::StatusChunk, &chunk_key(&uri, c), bytes);
        }
        let meta = *meta;
        self.lists.insert(uri, Arc::new((meta, updated)));
        Ok(())
    }

    pub(super) fn set_validators(
        &mut self,
        signer: &Did,
        tx: &SignedTx,
        validators: &[EcPublicKey],
        approvals: &[Vec<u8>],
    ) -> Result<(), Refused> {
        const NAME: &str = "set-validators";
        self.require_governance(signer, NAME)?;
        if validators.is_empty() || validators.len() > crate::chain::cert::MAX_VALIDATORS {
            return Err(invalid(NAME, "needs 1..=1024 validators"));
        }
        let mut sorted: Vec<_> = validators.iter().map(EcPublicKey::compressed).collect();
        sorted.sort();
        if sorted.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Err(invalid(NAME, "a validator appears twice"));
        }
        let mut approvers = vec![signer.clone()];
        let payload = tx.tx.op.approval_payload(&self.chain_id, self.set_epoch());
        for a in approvals {
            let (member, sign1) =
                tx::decode_approval(a).map_err(|e| invalid(NAME, e.to_string()))?;
            self.require_governance(&member.did, NAME)?;
            let mrec = self
                .did(&member.did)
                .ok_or_else(|| Refused::UnknownSigner(member.did.to_string()))?;
            if member != mrec.key_url(&member.did) {
                return Err(Refused::StaleKey(member.to_string()));
            }
            if sign1.payload.as_deref() != Some(payload.as_slice()) {
                return Err(invalid(NAME, "an approval is for another operation"));
            }
            cose::verify_sign1(&sign1, &mrec.key, Domain::GovernanceApproval, None)
                .map_err(|_| Refused::BadSignature)?;
            if approvers.contains(&member.did) {
                return Err(invalid(NAME, "a member approved twice"));
            }
            approvers.push(member.did);
        }
        if approvers.len() < self.threshold {
            return Err(invalid(
                NAME,
                format!(
                    "{} of {} governance members, {} needed",
                    approvers.len(),
                    self.governance.len(),
                    self.threshold
                ),
            ));
        }
        // Takes effect at the end of this epoch (State::end_block).
        self.public.put(
            Table::Chain,
            PENDING_VALIDATORS,
            encode_key_list(validators),
        );
        Ok(())
    }

    pub(super) fn register_election(
        &mut self,
        signer: &Did,
        id: &str,
        eligibility: &[(String, Value)],
        (opens, closes): (i64, i64),
        reauth: crate::evote::Reauth,
        now: i64,
    ) -> Result<(), Refused> {
        const NAME: &str = "register-election";
        self.require_governance(signer, NAME)?;
        if !crate::evote::valid_election_id(id) || closes <= opens || closes <= now {
            return Err(invalid(NAME, "needs an id and a window that has not ended"));
        }
        if let Err(e) = crate::evote::Election::check_rule(eligibility) {
            return Err(invalid(NAME, e.to_string()));
        }
        if self.kiosk.get(Table::Election, id.as_bytes()).is_some() {
            return Err(invalid(NAME, "the election exists"));
        }
        let mut record = vec![
            ("eligibility", tx::eligibility_value(eligibility)),
            ("opens", Value::Integer(opens.into())),
            ("closes", Value::Integer(closes.into())),
        ];
        if reauth != crate::evote::Reauth::Refuse {
            record.push(("reauth", text(reauth.name())));
        }
        let value = cbor::encode(&text_map(record));
        self.kiosk.put(Table::Election, id.as_bytes(), value);
        Ok(())
    }
}
