//! Points in time as plain values: `core` never reads a clock, callers pass a [`Timestamp`].

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, Result};

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parse an RFC 3339 date-time (`2021-01-01T00:00:00Z`, offsets allowed; fractions dropped).
    pub fn parse_rfc3339(s: &str) -> Result<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Self(t.unix_timestamp()))
            .map_err(|e| Error::malformed("RFC 3339 date-time", e.to_string()))
    }

    /// Format as RFC 3339 in UTC, without fractional seconds (the mdoc `tdate` profile).
    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("@{}", self.0))
    }

    /// This time plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Seconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn secs_since(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        let t = Timestamp::parse_rfc3339("2020-10-01T13:30:02Z").unwrap();
        assert_eq!(t.0, 1_601_559_002);
        assert_eq!(t.to_rfc3339(), "2020-10-01T13:30:02Z");
        assert!(Timestamp::parse_rfc3339("2020-13-01T00:00:00Z").is_err());
    }
}
