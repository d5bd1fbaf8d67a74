-- Validator-set changes: for each boundary block whose state names a new set, the change a
-- kiosk checks (header, the old set's finalization, the chain record and its proof).
CREATE TABLE epoch_changes (
    height BIGINT PRIMARY KEY,
    change BYTEA NOT NULL
);
