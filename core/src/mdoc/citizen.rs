//! The Civis citizen credential: docType and namespace `org.civis.citizen.1` and its elements.
//! The normative description is `specs/credential-profile.md` (CDDL).

use ciborium::Value;

use super::response::NameSpaced;
use crate::error::{Error, Result};

/// docType of the citizen credential.
pub const DOC_TYPE: &str = "org.civis.citizen.1";
/// Namespace of its elements.
pub const NAMESPACE: &str = "org.civis.citizen.1";

/// CBOR tag for an RFC 8943 full-date string.
pub const TAG_FULL_DATE: u64 = 1004;

/// The type of an element value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// `tstr`.
    Text,
    /// `full-date` = `#6.1004(tstr)`, `YYYY-MM-DD`.
    FullDate,
    /// `bool`.
    Bool,
    /// `bstr` (JPEG).
    Bytes,
    /// `bstr .size 33`: a P-256 point, SEC1 compressed (the card's VRF key, specs/evote.md).
    Point,
}

/// Every element of the namespace with its type and whether it is mandatory.
pub const ELEMENTS: &[(&str, ElementType, bool)] = &[
    ("family_name", ElementType::Text, true),
    ("given_name", ElementType::Text, true),
    ("birth_date", ElementType::FullDate, true),
    ("age_over_16", ElementType::Bool, true),
    ("age_over_18", ElementType::Bool, true),
    ("age_over_21", ElementType::Bool, true),
    ("age_over_65", ElementType::Bool, true),
    ("resident_city", ElementType::Text, true),
    ("resident_district", ElementType::Text, true),
    ("document_number", ElementType::Text, true),
    ("issue_date", ElementType::FullDate, true),
    ("expiry_date", ElementType::FullDate, true),
    ("issuing_authority", ElementType::Text, true),
    ("portrait", ElementType::Bytes, false),
    ("vrf_key", ElementType::Point, false),
];

/// A `full-date` value.
pub fn full_date(yyyy_mm_dd: &str) -> Value {
    Value::Tag(TAG_FULL_DATE, Box::new(Value::Text(yyyy_mm_dd.to_owned())))
}

fn is_full_date(s: &str) -> bool {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    s.len() == 10 && time::Date::parse(s, &fmt).is_ok()
}

/// Check that `value` has the type the profile gives `element`. Unknown elements are refused.
pub fn check_element(element: &str, value: &Value) -> Result<()> {
    let (_, ty, _) = ELEMENTS
        .iter()
        .find(|(id, _, _)| *id == element)
        .ok_or_else(|| Error::invalid("citizen element", format!("unknown element {element}")))?;
    let ok = match (ty, value) {
        (ElementType::Text, Value::Text(t)) => t.len() <= 256,
        (ElementType::FullDate, Value::Tag(TAG_FULL_DATE, inner)) => {
            inner.as_text().is_some_and(is_full_date)
        }
        (ElementType::Bool, Value::Bool(_)) => true,
        (ElementType::Bytes, Value::Bytes(b)) => b.len() <= 32 * 1024,
        (ElementType::Point, Value::Bytes(b)) => {
            b.len() == 33 && crate::vrf::VrfPublicKey::from_sec1(b).is_ok()
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "citizen element",
            format!("{element} has the wrong type or size"),
        ))
    }
}

/// A resident's data as the issuer enters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitizenRecord {
    /// Family name.
    pub family_name: String,
    /// Given name.
    pub given_name: String,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: String,
    /// City of residence.
    pub resident_city: String,
    /// District of residence.
    pub resident_district: String,
    /// Document number.
    pub document_number: String,
    /// Issue date, `YYYY-MM-DD`.
    pub issue_date: String,
    /// Expiry date, `YYYY-MM-DD`.
    pub expiry_date: String,
    /// Issuing authority.
    pub issuing_authority: String,
    /// JPEG thumbnail.
    pub portrait: Option<Vec<u8>>,
}

impl CitizenRecord {
    /// Mira Jansen of Civitas, the fictional resident of the demo, the golden vectors and the
    /// tests.
    pub fn example() -> Self {
        Self {
            family_name: "Jansen".into(),
            given_name: "Mira".into(),
            birth_date: "1990-04-12".into(),
            resident_city: "Civitas".into(),
            resident_district: "Harbour".into(),
            document_number: "CIV-000042".into(),
            issue_date: "2026-01-01".into(),
            expiry_date: "2031-01-01".into(),
            issuing_authority: "Civitas Civil Registry".into(),
            portrait: None,
        }
    }

    /// The elements of the **minimal** credential a phone wallet carries beside the full one:
    /// `age_over_18` and `resident_district` only. Its MSO holds two digests instead of
    /// thirteen, so an `age-over-18` or `resident-of` answer fits a QR code a kiosk camera reads
    /// reliably (specs/kiosk-screen.md, "Decoder and payload size").
    pub fn to_minimal_name_spaces(&self, today: &str) -> Result<NameSpaced<Value>> {
        let age = age_on(&self.birth_date, today)?;
        let els = vec![
            ("age_over_18".to_owned(), Value::Bool(age >= 18)),
            (
                "resident_district".to_owned(),
                Value::Text(self.resident_district.clone()),
            ),
        ];
        for (id, v) in &els {
            check_element(id, v)?;
        }
        Ok(vec![(NAMESPACE.to_owned(), els)])
    }

    /// The namespace's elements, with `age_over_NN` computed for the date `today` (`YYYY-MM-DD`).
    pub fn to_name_spaces(&self, today: &str) -> Result<NameSpaced<Value>> {
        let age = age_on(&self.birth_date, today)?;
        let t = |s: &str| Value::Text(s.to_owned());
        let mut els = vec![
            ("family_name".to_owned(), t(&self.family_name)),
            ("given_name".to_owned(), t(&self.given_name)),
            ("birth_date".to_owned(), full_date(&self.birth_date)),
            ("age_over_16".to_owned(), Value::Bool(age >= 16)),
            ("age_over_18".to_owned(), Value::Bool(age >= 18)),
            ("age_over_21".to_owned(), Value::Bool(age >= 21)),
            ("age_over_65".to_owned(), Value::Bool(age >= 65)),
            ("resident_city".to_owned(), t(&self.resident_city)),
            ("resident_district".to_owned(), t(&self.resident_district)),
            ("document_number".to_owned(), t(&self.document_number)),
            ("issue_date".to_owned(), full_date(&self.issue_date)),
            ("expiry_date".to_owned(), full_date(&self.expiry_date)),
            ("issuing_authority".to_owned(), t(&self.issuing_authority)),
        ];
        if let Some(p) = &self.portrait {
            els.push(("portrait".to_owned(), Value::Bytes(p.clone())));
        }
        for (id, v) in &els {
            check_element(id, v)?;
        }
        Ok(vec![(NAMESPACE.to_owned(), els)])
    }
}

/// Whole years between two `YYYY-MM-DD` dates.
pub fn age_on(birth: &str, today: &str) -> Result<u32> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let b = time::Date::parse(birth, &fmt)
        .map_err(|_| Error::invalid("birth_date", "not YYYY-MM-DD"))?;
    let t = time::Date::parse(today, &fmt).map_err(|_| Error::invalid("date", "not YYYY-MM-DD"))?;
    let mut years = t.year().saturating_sub(b.year());
    if (t.month() as u8, t.day()) < (b.month() as u8, b.day()) {
        years = years.saturating_sub(1);
    }
    u32::try_from(years).map_err(|_| Error::invalid("birth_date", "after today"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_types() {
        assert_eq!(age_on("2000-03-01", "2018-02-28").unwrap(), 17);
        assert_eq!(age_on("2000-03-01", "2018-03-01").unwrap(), 18);
        assert!(age_on("2030-01-01", "2020-01-01").is_err());
        assert!(check_element("birth_date", &full_date("1990-02-30")).is_err());
        assert!(check_element("birth_date", &Value::Text("1990-01-01".into())).is_err());
        assert!(check_element("age_over_18", &Value::Bool(true)).is_ok());
        assert!(check_element("shoe_size", &Value::Bool(true)).is_err());
    }
}
