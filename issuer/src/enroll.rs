//! Enrollment: checking a resident's attributes and the minimal record the issuer keeps
//! (specs/issuer-storage.md § Residents). Errors name the field, never its value.

use civis_core::issuer_api::EnrollRequest;
use civis_core::mdoc::citizen::CitizenRecord;
use serde::{Deserialize, Serialize};

use crate::config::AgencyConfig;
use crate::error::{Error, Result};

/// What is stored per resident: exactly what a credential needs and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Attributes {
    /// Family name.
    pub family_name: String,
    /// Given name.
    pub given_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// District.
    pub resident_district: String,
    /// Document number.
    pub document_number: String,
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// Characters that show nothing, or only a frame around the letter before: Hangul fillers
/// (alphabetic, yet blank), the combining grapheme joiner, variation selectors, enclosing
/// marks, the Braille blank, Khmer inherent vowels.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{034F}' | '\u{2800}'
        | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{FE00}'..='\u{FE0F}'
        | '\u{E0100}'..='\u{E01EF}' | '\u{0488}'..='\u{0489}' | '\u{20DD}'..='\u{20E0}'
        | '\u{20E2}'..='\u{20E4}' | '\u{A670}'..='\u{A672}')
}

fn name(field: &'static str, s: &str) -> Result<()> {
    let n = s.chars().count();
    if n == 0 || n > 64 {
        return Err(Error::Invalid {
            field,
            why: "must be 1 to 64 characters",
        });
    }
    // Letters of any script, up to four combining marks after a letter (the ones
    // normalization cannot fold into it), and the few signs names use. No control characters,
    // so nothing an operator types can forge a log line or a terminal sequence; nothing
    // invisible, so two records never differ by what no one can see.
    let mut marks: Option<usize> = None;
    let ok = s.chars().all(|c| {
        if invisible(c) {
            return false;
        }
        if unicode_normalization::char::is_combining_mark(c) {
            marks = marks.map(|n| n + 1);
            return marks.is_some_and(|n| n <= 4);
        }
        marks = c.is_alphabetic().then_some(0);
        c.is_alphabetic() || matches!(c, ' ' | '-' | '\'' | '.')
    }) && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.contains("  ")
        && s.chars().any(char::is_alphabetic);
    if !ok {
        return Err(Error::Invalid {
            field,
            why: "only letters, single inner spaces, - ' and . are allowed",
        });
    }
    Ok(())
}

impl Attributes {
    /// Check an enrollment against the agency's rules on day `today`.
    pub fn check(req: &EnrollRequest, agency: &AgencyConfig, today: time::Date) -> Result<Self> {
        // One name, one form, however it was typed: names are kept in NFKC, so a decomposed
        // "Zoe\u{301}" is the "Zoé" another keyboard sends, and fullwidth or mathematical
        // letters are the plain ones they look like.
        use unicode_normalization::UnicodeNormalization as _;
        let family_name: String = req.family_name.nfkc().collect();
        let given_name: String = req.given_name.nfkc().collect();
        name("familyName", &family_name)?;
        name("givenName", &given_name)?;
        // Exactly ten characters: `time` would also take a signed or longer year.
        let shaped = req.birth_date.len() == 10
            && req.birth_date.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        let birth = time::Date::parse(&req.birth_date, DATE)
            .ok()
            .filter(|_| shaped)
            .ok_or(Error::Invalid {
                field: "birthDate",
                why: "must be a date YYYY-MM-DD",
            })?;
        if birth > today || birth.year() < 1900 {
            return Err(Error::Invalid {
                field: "birthDate",
                why: "must be between 1900-01-01 and today",
            });
        }
        if !agency.districts.contains(&req.resident_district) {
            return Err(Error::Invalid {
                field: "residentDistrict",
                why: "is not one of the agency's districts",
            });
        }
        let doc = &req.document_number;
        if doc.is_empty()
            || doc.len() > 32
            || !doc
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::Invalid {
                field: "documentNumber",
                why: "must be 1 to 32 of A-Z 0-9 -",
            });
        }
        Ok(Self {
            family_name,
            given_name,
            birth_date: req.birth_date.clone(),
            resident_district: req.resident_district.clone(),
            document_number: req.document_number.clone(),
        })
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|_| Error::Corrupt("resident attributes"))
    }

    /// The citizen record a credential issued on `today` carries.
    pub fn record(&self, agency: &AgencyConfig, today: time::Date) -> Result<CitizenRecord> {
        let expiry = today
            .checked_add(time::Duration::days(i64::from(agency.validity_days)))
            .ok_or(Error::Config("validity_days too large".into()))?;
        let fmt = |d: time::Date| d.format(DATE).unwrap_or_default();
        Ok(CitizenRecord {
            family_name: self.family_name.clone(),
            given_name: self.given_name.clone(),
            birth_date: self.birth_date.clone(),
            resident_city: agency.city.clone(),
            resident_district: self.resident_district.clone(),
            document_number: self.document_number.clone(),
            issue_date: fmt(today),
            expiry_date: fmt(expiry),
            issuing_authority: agency.name.clone(),
            portrait: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn agency() -> AgencyConfig {
        toml::from_str(
            r#"id = "a"
name = "A"
city = "Civitas"
districts = ["Harbour"]
key = "k"
next_key = "n""#,
        )
        .unwrap()
    }

    #[test]
    fn names_are_kept_in_one_form_whatever_the_keyboard_sent_and_nothing_invisible() {
        let today = time::macros::date!(2026 - 12 - 05);
        let mut decomposed = req();
        decomposed.given_name = "Zoe\u{301}".into();
        decomposed.family_name = "Nguye\u{302}\u{303}n".into();
        let a = Attributes::check(&decomposed, &agency(), today).unwrap();
        assert_eq!(a.given_name, "Zo\u{e9}");
        assert_eq!(a.family_name, "Nguy\u{1ec5}n");
        let mut composed = req();
        composed.given_name = "Zo\u{e9}".into();
        composed.family_name = "Nguy\u{1ec5}n".into();
        let b = Attributes::check(&composed, &agency(), today).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        // A mark with no precomposed form stays, after its letter; alone or first it is refused.
        let mut mark = req();
        mark.given_name = "An\u{308}a".into();
        assert!(Attributes::check(&mark, &agency(), today).is_ok());
        // Look-alikes fold to the letters they show.
        let mut wide = req();
        wide.family_name = "\u{FF24}\u{FF4F}\u{FF45}".into();
        wide.given_name = "\u{1D403}\u{1D428}\u{1D41E}".into();
        let w = Attributes::check(&wide, &agency(), today).unwrap();
        assert_eq!(
            (w.family_name.as_str(), w.given_name.as_str()),
            ("Doe", "Doe")
        );
        for bad in [
            "\u{301}Ana",
            "An \u{301}a",
            "\u{301}",
            "Do\u{34F}e",
            "Doe\u{FE0F}",
            "\u{3164}",
            "D\u{20DD}",
            "D\u{301}\u{302}\u{303}\u{304}\u{306}",
        ] {
            let mut m = req();
            m.given_name = bad.into();
            assert!(Attributes::check(&m, &agency(), today).is_err(), "{bad:?}");
        }
    }

    fn req() -> EnrollRequest {
        EnrollRequest {
            request_key: "k".into(),
            family_name: "Jansen".into(),
            given_name: "Mira".into(),
            birth_date: "1990-04-12".into(),
            resident_district: "Harbour".into(),
            document_number: "CIV-000042".into(),
        }
    }

    #[test]
    fn each_rule_refuses_without_echoing_the_value() {
        let today = time::macros::date!(2026 - 12 - 05);
        assert!(Attributes::check(&req(), &agency(), today).is_ok());
        type Mutation = Box<dyn Fn(&mut EnrollRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "familyName",
                Box::new(|r| r.family_name = "Eve\nINFO forged".into()),
            ),
            ("familyName", Box::new(|r| r.family_name = String::new())),
            ("givenName", Box::new(|r| r.given_name = "x".repeat(65))),
            (
                "givenName",
                Box::new(|r| r.given_name = "\u{1b}[31mred".into()),
            ),
            (
                "birthDate",
                Box::new(|r| r.birth_date = "2030-01-01".into()),
            ),
            (
                "birthDate",
                Box::new(|r| r.birth_date = "1990-02-30".into()),
            ),
            (
                "birthDate",
                Box::new(|r| r.birth_date = "1899-12-31".into()),
            ),
            (
                "residentDistrict",
                Box::new(|r| r.resident_district = "Nowhere".into()),
            ),
            (
                "documentNumber",
                Box::new(|r| r.document_number = "civ 1".into()),
            ),
        ];
        for (field, mutate) in cases {
            let mut r = req();
            mutate(&mut r);
            let e = Attributes::check(&r, &agency(), today).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(field), "{field}: {text}");
            assert!(!text.contains("Eve") && !text.contains("Nowhere"), "{text}");
        }
        // Names of other scripts are names.
        let mut r = req();
        r.family_name = "Ñúñez-O'Brien".into();
        r.given_name = "Zoë Ångström".into();
        assert!(Attributes::check(&r, &agency(), today).is_ok());
    }

    #[test]
    fn the_record_carries_the_agency_and_the_validity() {
        let today = time::macros::date!(2026 - 12 - 05);
        let a = Attributes::check(&req(), &agency(), today).unwrap();
        let back = Attributes::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back, a);
        let rec = a.record(&agency(), today).unwrap();
        assert_eq!(rec.resident_city, "Civitas");
        assert_eq!(rec.issue_date, "2026-12-05");
        assert_eq!(rec.expiry_date, "2031-12-04");
    }
}
