-- What a request key named, for the kinds of request that may record nothing (a status change
-- to the current value, a lost card whose credentials are all suspended already, a batch
-- suspended before): without it a key that changed nothing could be used again with other
-- content, and a delayed retry of a no-op undid a later decision (issue #11 attack review).
CREATE TABLE request_keys (
    agency TEXT NOT NULL,
    kind TEXT NOT NULL,
    request_key TEXT NOT NULL,
    what TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (agency, kind, request_key)
);
