-- A card serial is unique within an agency, not across agencies: another agency's
-- personalization answered "conflict" for a serial it does not own, telling it the card
-- existed, and one agency could claim serials to block another's cards (issue #11 attack
-- review). Card keys stay unique across all agencies (card_keys).
CREATE TABLE personalizations_new (
    id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    request_key TEXT NOT NULL,
    resident TEXT NOT NULL,
    batch TEXT NOT NULL,
    serial BLOB NOT NULL,
    state TEXT NOT NULL,
    card_key BLOB,
    list TEXT,
    idx INTEGER,
    credential TEXT,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    UNIQUE (agency, request_key),
    UNIQUE (agency, serial)
);
INSERT INTO personalizations_new
    SELECT id, agency, request_key, resident, batch, serial, state, card_key, list, idx,
           credential, created, updated
    FROM personalizations;
DROP TABLE personalizations;
ALTER TABLE personalizations_new RENAME TO personalizations;
