-- The issuer's records (specs/issuer-storage.md). Nothing here holds a PIN, a PUK, a private
-- key or a transport key; resident attributes live only in residents.attributes.

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash BYTEA NOT NULL,
    agency TEXT NOT NULL,
    scopes TEXT NOT NULL,
    label TEXT NOT NULL,
    created BIGINT NOT NULL,
    revoked BIGINT
);

CREATE TABLE residents (
    id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    request_key TEXT NOT NULL,
    attributes BYTEA NOT NULL,
    created BIGINT NOT NULL,
    UNIQUE (agency, request_key)
);

-- Status indexes are handed out from reserved ranges; a reserved index is never reserved again.
CREATE TABLE index_reservations (
    agency TEXT NOT NULL,
    list TEXT NOT NULL,
    next_index BIGINT NOT NULL,
    PRIMARY KEY (agency, list)
);

-- Every card key ever seen, from any batch of any agency: a key seen twice is a cloned or badly
-- generated chip.
CREATE TABLE card_keys (
    public_key BYTEA PRIMARY KEY,
    serial BYTEA NOT NULL,
    agency TEXT NOT NULL,
    batch TEXT NOT NULL,
    seen BIGINT NOT NULL
);

CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    resident TEXT NOT NULL,
    request_key TEXT NOT NULL,
    list TEXT NOT NULL,
    idx BIGINT NOT NULL,
    card_serial BYTEA,
    batch TEXT,
    issuer_signed BYTEA NOT NULL,
    state TEXT NOT NULL,
    wanted BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL,
    UNIQUE (agency, request_key),
    UNIQUE (agency, list, idx)
);
CREATE INDEX credentials_batch ON credentials (agency, batch);
CREATE INDEX credentials_card ON credentials (card_serial);

CREATE TABLE personalizations (
    id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    request_key TEXT NOT NULL,
    resident TEXT NOT NULL,
    batch TEXT NOT NULL,
    serial BYTEA NOT NULL UNIQUE,
    state TEXT NOT NULL,
    card_key BYTEA,
    list TEXT,
    idx BIGINT,
    credential TEXT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    UNIQUE (agency, request_key)
);

CREATE TABLE batch_suspensions (
    agency TEXT NOT NULL,
    batch TEXT NOT NULL,
    request_key TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (agency, batch)
);

-- One row per requested status change, pending until the block that anchors it.
CREATE TABLE status_changes (
    id BIGSERIAL PRIMARY KEY,
    agency TEXT NOT NULL,
    request_key TEXT NOT NULL,
    credential TEXT NOT NULL,
    list TEXT NOT NULL,
    idx BIGINT NOT NULL,
    value BIGINT NOT NULL,
    state TEXT NOT NULL,
    tx TEXT,
    height BIGINT,
    created BIGINT NOT NULL,
    UNIQUE (agency, request_key, credential)
);
CREATE INDEX status_changes_pending ON status_changes (agency, state, id);
CREATE INDEX status_changes_credential ON status_changes (credential, id);

-- Transactions signed for the chain, written before they are sent so a crash re-sends the same
-- bytes (the same sequence number) instead of signing a second, different transaction. A refused
-- transaction stays as a record; its sequence number is used again by the next one.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    bytes BYTEA NOT NULL,
    state TEXT NOT NULL,
    height BIGINT,
    created BIGINT NOT NULL
);
CREATE INDEX outbox_agency ON outbox (agency, state, seq);

CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    agency TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    request_key TEXT NOT NULL
);
CREATE INDEX audit_agency ON audit (agency, id);
