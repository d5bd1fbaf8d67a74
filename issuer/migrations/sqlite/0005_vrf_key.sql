-- The card's VRF key (election pseudonyms, specs/evote.md), SEC1 compressed, recorded with the
-- card key: every credential minted for the card, renewals included, binds it.
ALTER TABLE personalizations ADD COLUMN vrf_key BLOB;
