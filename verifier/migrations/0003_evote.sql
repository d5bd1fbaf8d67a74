-- Election authentications at a polling station (specs/evote.md §3): the election, the voter's
-- election pseudonym (the VRF output, 32 bytes), the station that saw it and when (Unix
-- milliseconds, so two quick taps of one card are two rows). Nothing else:
-- no element value, no device key, no card serial. Every authentication is a row, so a second
-- one in the same election is found by the primary key's prefix (election, pseudonym).
CREATE TABLE evote_auth (
    election TEXT NOT NULL,
    pseudonym BLOB NOT NULL CHECK (length(pseudonym) = 32),
    station TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (election, pseudonym, station, at)
) WITHOUT ROWID;
