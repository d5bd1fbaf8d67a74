-- Renewals of a locked card's credential (specs/issuer-personalization.md §6). One renewal
-- per replaced credential, ever: a second request key for it is a conflict.
CREATE TABLE renewals (
    id TEXT PRIMARY KEY,
    agency TEXT NOT NULL,
    request_key TEXT NOT NULL,
    replaces TEXT NOT NULL UNIQUE,
    serial BYTEA NOT NULL,
    state TEXT NOT NULL,
    list TEXT,
    idx BIGINT,
    credential TEXT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    UNIQUE (agency, request_key)
);
