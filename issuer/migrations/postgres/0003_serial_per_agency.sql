-- A card serial is unique within an agency, not across agencies: another agency's
-- personalization answered "conflict" for a serial it does not own, telling it the card
-- existed, and one agency could claim serials to block another's cards (issue #11 attack
-- review). Card keys stay unique across all agencies (card_keys).
ALTER TABLE personalizations DROP CONSTRAINT personalizations_serial_key;
ALTER TABLE personalizations ADD CONSTRAINT personalizations_agency_serial_key
    UNIQUE (agency, serial);
