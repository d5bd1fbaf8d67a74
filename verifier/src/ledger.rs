//! The polling station's ledger of election pseudonyms (specs/evote.md §2): each authentication
//! is recorded as (election, pseudonym, station, time) in the kiosk's database, so a second
//! authentication in one election is found at once — at this station, and at others once
//! their records are imported. The pseudonym is the card's VRF output for the election: it
//! links nothing across elections and names nobody.

use civis_core::evote::Reauth;
use civis_core::mdoc::citizen;
use civis_core::verdict::RejectReason;
use civis_core::verify::Verdict;
use sqlx::Row;

use crate::policy::KioskPolicy;

use crate::store::{KioskStore, db};
use crate::sync::SyncError;

pub use civis_core::evote::Pseudonym;

/// One recorded authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// The voter's pseudonym in this election.
    pub pseudonym: Pseudonym,
    /// The station that recorded it.
    pub station: String,
    /// When (Unix milliseconds: two taps of one card at one station are never one record).
    pub at: i64,
}

/// What recording an authentication found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The pseudonym's first authentication in this election (as far as this ledger knows).
    First,
    /// It authenticated before: the earliest record and how many there were before this one.
    Again {
        /// The earliest earlier authentication.
        first: Authentication,
        /// Earlier authentications, all stations.
        earlier: u64,
    },
}

/// Counts for one election (`civis evote tally-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Authentications recorded, repeats included.
    pub authentications: u64,
    /// Distinct pseudonyms.
    pub voters: u64,
    /// Pseudonyms recorded more than once, with their count and the stations involved.
    pub duplicates: Vec<(Pseudonym, u64, Vec<String>)>,
}

/// What an import added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    /// Records new to this ledger.
    pub added: u64,
    /// Records it already held (an import repeated, or overlapping).
    pub known: u64,
    /// Of the added ones, those whose pseudonym this ledger had already seen in the election:
    /// double authentications found by the exchange.
    pub duplicates: u64,
}

fn pseudonym_of(row: &sqlx::sqlite::SqliteRow, col: usize) -> Result<Pseudonym, SyncError> {
    let bytes: Vec<u8> = row.try_get(col).map_err(db)?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| SyncError::Store("a stored pseudonym is not 32 bytes".into()))?;
    Ok(Pseudonym(arr))
}

/// Longest station name a ledger takes from an import.
pub const MAX_STATION_LEN: usize = 128;

/// Insert one record unless the ledger holds it already; whether it was new.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    election: &str,
    a: &Authentication,
) -> Result<bool, SyncError> {
    let done = sqlx::query(
        "INSERT OR IGNORE INTO evote_auth (election, pseudonym, station, at) VALUES ($1, $2, $3, $4)",
    )
    .bind(election)
    .bind(&a.pseudonym.0[..])
    .bind(&a.station)
    .bind(a.at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A polling station's last step for an `evote:` policy: an accepted presentation's pseudonym
/// is recorded (nothing else about the voter), and a second authentication in the election is
/// refused or, where the last one counts, accepted as a replacement (`now_ms`: Unix
/// milliseconds). Returns the final verdict
/// and what the ledger found; any other policy or verdict passes through unrecorded.
pub async fn admit(
    store: &KioskStore,
    policy: &KioskPolicy,
    verdict: Verdict,
    station: &str,
    now_ms: i64,
) -> Result<(Verdict, Option<Recorded>), SyncError> {
    let (Some(election), Verdict::Accept(docs)) = (policy.election(), &verdict) else {
        return Ok((verdict, None));
    };
    let Some(pseudonym) = docs
        .iter()
        .find(|d| d.doc_type == citizen::DOC_TYPE)
        .and_then(|d| policy.pseudonym(d))
    else {
        // The policy accepted only with a valid pseudonym; this cannot happen.
        return Ok((
            Verdict::Reject(RejectReason::Pseudonym("missing".into())),
            None,
        ));
    };
    let auth = Authentication {
        pseudonym,
        station: station.to_owned(),
        at: now_ms,
    };
    let recorded = store.record_authentication(&election.id, &auth).await?;
    let verdict = match (&recorded, election.reauth) {
        (Recorded::Again { .. }, Reauth::Refuse) => {
            Verdict::Reject(RejectReason::AlreadyAuthenticated)
        }
        _ => verdict,
    };
    Ok((verdict, Some(recorded)))
}

impl KioskStore {
    /// Record that `pseudonym` authenticated for `election` at `station` at time `at`, and say
    /// whether it had before. Both happen in one transaction, so two taps racing each other
    /// cannot both be first.
    pub async fn record_authentication(
        &self,
        election: &str,
        auth: &Authentication,
    ) -> Result<Recorded, SyncError> {
        // IMMEDIATE: take the write lock first, so another process's writer makes this wait
        // (busy timeout) instead of failing when a read transaction tries to upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let earlier = sqlx::query(
            "SELECT station, at, (SELECT COUNT(*) FROM evote_auth WHERE election = $1 AND pseudonym = $2) \
             FROM evote_auth WHERE election = $1 AND pseudonym = $2 ORDER BY at, station LIMIT 1",
        )
        .bind(election)
        .bind(&auth.pseudonym.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        insert(&mut tx, election, auth).await?;
        tx.commit().await.map_err(db)?;
        Ok(match earlier {
            None => Recorded::First,
            Some(row) => Recorded::Again {
                first: Authentication {
                    pseudonym: auth.pseudonym,
                    station: row.try_get(0).map_err(db)?,
                    at: row.try_get(1).map_err(db)?,
                },
                earlier: count(row.try_get(2).map_err(db)?),
            },
        })
    }

    /// Whether `pseudonym` has authenticated in `election` (the station's lookup before it
    /// admits a voter).
    pub async fn authenticated(
        &self,
        election: &str,
        pseudonym: &Pseudonym,
    ) -> Result<bool, SyncError> {
        let row =
            sqlx::query("SELECT 1 FROM evote_auth WHERE election = $1 AND pseudonym = $2 LIMIT 1")
                .bind(election)
                .bind(&pseudonym.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.is_some())
    }

    /// This ledger's records of `election` recorded by `station`, oldest first (what a station
    /// hands to the others).
    pub async fn station_records(
        &self,
        election: &str,
        station: &str,
    ) -> Result<Vec<Authentication>, SyncError> {
        let rows = sqlx::query(
            "SELECT pseudonym, station, at FROM evote_auth WHERE election = $1 AND station = $2 ORDER BY at, pseudonym",
        )
        .bind(election)
        .bind(station)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Authentication {
                    pseudonym: pseudonym_of(r, 0)?,
                    station: r.try_get(1).map_err(db)?,
                    at: r.try_get(2).map_err(db)?,
                })
            })
            .collect()
    }

    /// Add another station's records of `election`, in one transaction: all or nothing.
    pub async fn import_authentications(
        &self,
        election: &str,
        records: &[Authentication],
    ) -> Result<Imported, SyncError> {
        // Station names come from the other side: bounded before anything is written.
        if let Some(a) = records.iter().find(|a| a.station.len() > MAX_STATION_LEN) {
            return Err(SyncError::Store(format!(
                "a station name of {} bytes (at most {MAX_STATION_LEN})",
                a.station.len()
            )));
        }
        // IMMEDIATE: take the write lock first, so another process's writer makes this wait
        // (busy timeout) instead of failing when a read transaction tries to upgrade.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let mut out = Imported::default();
        for a in records {
            let seen_before = sqlx::query(
                "SELECT 1 FROM evote_auth WHERE election = $1 AND pseudonym = $2 LIMIT 1",
            )
            .bind(election)
            .bind(&a.pseudonym.0[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
            if !insert(&mut tx, election, a).await? {
                out.known += 1;
                continue;
            }
            out.added += 1;
            if seen_before {
                out.duplicates += 1;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    /// The counts of `election`: authentications, distinct voters, and every pseudonym seen
    /// more than once with the stations that saw it.
    pub async fn tally(&self, election: &str) -> Result<Tally, SyncError> {
        let totals = sqlx::query(
            "SELECT COUNT(*), COUNT(DISTINCT pseudonym) FROM evote_auth WHERE election = $1",
        )
        .bind(election)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        // The stations as a JSON array: a station name may hold any character, commas too.
        let rows = sqlx::query(
            "SELECT pseudonym, COUNT(*), json_group_array(DISTINCT station) FROM evote_auth \
             WHERE election = $1 GROUP BY pseudonym HAVING COUNT(*) > 1 ORDER BY pseudonym",
        )
        .bind(election)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let duplicates = rows
            .iter()
            .map(|r| {
                let stations: String = r.try_get(2).map_err(db)?;
                let mut stations: Vec<String> = serde_json::from_str(&stations).map_err(db)?;
                stations.sort();
                Ok((
                    pseudonym_of(r, 0)?,
                    count(r.try_get(1).map_err(db)?),
                    stations,
                ))
            })
            .collect::<Result<_, SyncError>>()?;
        Ok(Tally {
            authentications: count(totals.try_get(0).map_err(db)?),
            voters: count(totals.try_get(1).map_err(db)?),
            duplicates,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn auth(p: u8, station: &str, at: i64) -> Authentication {
        Authentication {
            pseudonym: Pseudonym([p; 32]),
            station: station.into(),
            at,
        }
    }

    async fn store(name: &str) -> (KioskStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("civis-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (KioskStore::open(&dir.join("kiosk.db")).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn a_second_authentication_is_caught_at_one_station_and_after_an_exchange() {
        let (north, d1) = store("north").await;
        let (south, d2) = store("south").await;
        let e = "city-2027";
        // At one station: first, then again.
        assert_eq!(
            north
                .record_authentication(e, &auth(1, "north", 100))
                .await
                .unwrap(),
            Recorded::First
        );
        assert_eq!(
            north
                .record_authentication(e, &auth(1, "north", 160))
                .await
                .unwrap(),
            Recorded::Again {
                first: auth(1, "north", 100),
                earlier: 1
            }
        );
        // The same pseudonym in another election is another voter record.
        assert_eq!(
            north
                .record_authentication("city-2028", &auth(1, "north", 170))
                .await
                .unwrap(),
            Recorded::First
        );
        // Offline, south admits voter 2 and voter 3; north admitted voter 2 too.
        north
            .record_authentication(e, &auth(2, "north", 110))
            .await
            .unwrap();
        south
            .record_authentication(e, &auth(2, "south", 120))
            .await
            .unwrap();
        south
            .record_authentication(e, &auth(3, "south", 130))
            .await
            .unwrap();
        assert!(!north.authenticated(e, &Pseudonym([3; 32])).await.unwrap());
        // They exchange: each finds the double authentication of voter 2.
        let from_south = south.station_records(e, "south").await.unwrap();
        let got = north.import_authentications(e, &from_south).await.unwrap();
        assert_eq!(
            got,
            Imported {
                added: 2,
                known: 0,
                duplicates: 1
            }
        );
        assert!(north.authenticated(e, &Pseudonym([3; 32])).await.unwrap());
        // Importing the same records again adds nothing.
        let again = north.import_authentications(e, &from_south).await.unwrap();
        assert_eq!(
            again,
            Imported {
                added: 0,
                known: 2,
                duplicates: 0
            }
        );
        let t = north.tally(e).await.unwrap();
        assert_eq!((t.authentications, t.voters), (5, 3));
        assert_eq!(
            t.duplicates,
            vec![
                (Pseudonym([1; 32]), 2, vec!["north".to_owned()]),
                (
                    Pseudonym([2; 32]),
                    2,
                    vec!["north".to_owned(), "south".to_owned()]
                ),
            ]
        );
        assert_eq!(north.tally("city-2028").await.unwrap().duplicates, vec![]);
        // A station name with a comma stays one name; an oversized one is refused, nothing
        // of that import written.
        north
            .record_authentication("city-2029", &auth(4, "east, gate 2", 1))
            .await
            .unwrap();
        north
            .record_authentication("city-2029", &auth(4, "east, gate 2", 2))
            .await
            .unwrap();
        assert_eq!(
            north.tally("city-2029").await.unwrap().duplicates,
            vec![(Pseudonym([4; 32]), 2, vec!["east, gate 2".to_owned()])]
        );
        let long = auth(5, &"x".repeat(MAX_STATION_LEN + 1), 3);
        assert!(
            north
                .import_authentications("city-2029", &[auth(6, "west", 3), long])
                .await
                .is_err()
        );
        assert!(
            !north
                .authenticated("city-2029", &Pseudonym([6; 32]))
                .await
                .unwrap()
        );
        north.close().await;
        south.close().await;
        let _ = std::fs::remove_dir_all(d1);
        let _ = std::fs::remove_dir_all(d2);
    }
}
