//! What the kiosk screen says, in English, German and Korean: the verdict's headline, a reason
//! a resident understands (never the engine's technical detail), and the labels of the elements
//! a policy shows. Pure data; the screen picks the language.

use ciborium::Value;

use crate::outcome::Reason;

/// A language of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    /// English.
    En,
    /// German.
    De,
    /// Korean.
    Ko,
}

impl Lang {
    /// Every language the screen offers, in the order of its buttons.
    pub const ALL: [Lang; 3] = [Lang::En, Lang::De, Lang::Ko];

    /// From a BCP 47 tag's primary subtag (`en`, `de-AT`, `ko`); anything else is English.
    pub fn from_tag(tag: &str) -> Self {
        let primary = tag.split(['-', '_']).next().unwrap_or("");
        match primary.to_ascii_lowercase().as_str() {
            "de" => Lang::De,
            "ko" => Lang::Ko,
            _ => Lang::En,
        }
    }

    /// The BCP 47 tag (`lang` attribute of the page).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Ko => "ko",
        }
    }

    /// The language's own name, for its button.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::De => "Deutsch",
            Lang::Ko => "한국어",
        }
    }
}

/// The fixed texts of the screen in one language.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Texts {
    /// The idle prompt.
    pub prompt: &'static str,
    /// Under the prompt: what to do with a phone.
    pub prompt_phone: &'static str,
    /// Headline of an accept.
    pub accept: &'static str,
    /// Headline of a reject.
    pub reject: &'static str,
    /// Headline of an undetermined verdict.
    pub undetermined: &'static str,
    /// "Registry data from" (before the snapshot's time).
    pub synced: &'static str,
    /// Shown when the kiosk never synced.
    pub never_synced: &'static str,
    /// Warning shown when the snapshot is close to its maximum age.
    pub stale_soon: &'static str,
    /// Warning shown when the snapshot is older than the policy allows.
    pub stale: &'static str,
    /// "Reading…" while a card is being read.
    pub reading: &'static str,
    /// The camera is on.
    pub camera_on: &'static str,
    /// Label of the language choice.
    pub language: &'static str,
    /// Label of the "next resident" button.
    pub done: &'static str,
    /// The button that starts "read my card's log".
    pub review: &'static str,
    /// Over the PIN pad.
    pub review_pin: &'static str,
    /// The PIN pad's confirm key.
    pub review_ok: &'static str,
    /// The PIN pad's clear key.
    pub review_clear: &'static str,
    /// Leaves the PIN pad.
    pub review_cancel: &'static str,
    /// Headline while the entered PIN waits for the card.
    pub review_tap: &'static str,
    /// Headline of the log.
    pub review_title: &'static str,
    /// Under the headline: what the dates mean (the card has no clock).
    pub review_note: &'static str,
    /// Shown when no reader is in the log.
    pub review_empty: &'static str,
    /// Headline when the log cannot be shown.
    pub review_refused: &'static str,
    /// Column: when.
    pub review_when: &'static str,
    /// Column: who (purpose and reader).
    pub review_who: &'static str,
    /// Column: what was released.
    pub review_what: &'static str,
    /// Nothing was released in that read.
    pub review_nothing: &'static str,
}

/// The screen's texts in `lang`.
pub fn texts(lang: Lang) -> Texts {
    match lang {
        Lang::En => Texts {
            prompt: "Tap your card or show your code",
            prompt_phone: "With a phone: scan this code with your wallet, then hold your answer up to the camera.",
            accept: "Accepted",
            reject: "Not accepted",
            undetermined: "Cannot check right now",
            synced: "Registry data from",
            never_synced: "This kiosk has no registry data yet.",
            stale_soon: "Registry data is getting old. Staff: connect the kiosk to the network.",
            stale: "Registry data is too old to check credentials. Please ask staff.",
            reading: "Reading your card…",
            camera_on: "Camera on",
            language: "Language",
            done: "Done",
            review: "Read my card's log",
            review_pin: "Enter your PIN, then tap your card",
            review_ok: "OK",
            review_clear: "Clear",
            review_cancel: "Cancel",
            review_tap: "Tap your card now",
            review_title: "Who read your card",
            review_note: "Newest first. Dates are the earliest the read can have happened: the card has no clock.",
            review_empty: "No accredited reader has read this card yet.",
            review_refused: "Your card's log cannot be shown",
            review_when: "On or after",
            review_who: "Who and why",
            review_what: "Data given",
            review_nothing: "nothing",
        },
        Lang::De => Texts {
            prompt: "Karte auflegen oder Code zeigen",
            prompt_phone: "Mit dem Telefon: diesen Code mit Ihrer Wallet scannen, dann die Antwort vor die Kamera halten.",
            accept: "Bestätigt",
            reject: "Nicht bestätigt",
            undetermined: "Prüfung gerade nicht möglich",
            synced: "Registerdaten vom",
            never_synced: "Dieser Kiosk hat noch keine Registerdaten.",
            stale_soon: "Die Registerdaten werden alt. Personal: Kiosk mit dem Netz verbinden.",
            stale: "Die Registerdaten sind zu alt für eine Prüfung. Bitte wenden Sie sich an das Personal.",
            reading: "Karte wird gelesen…",
            camera_on: "Kamera an",
            language: "Sprache",
            done: "Fertig",
            review: "Protokoll meiner Karte",
            review_pin: "PIN eingeben, dann Karte auflegen",
            review_ok: "OK",
            review_clear: "Löschen",
            review_cancel: "Abbrechen",
            review_tap: "Jetzt Karte auflegen",
            review_title: "Wer Ihre Karte gelesen hat",
            review_note: "Neueste zuerst. Das Datum ist der früheste mögliche Zeitpunkt: Die Karte hat keine Uhr.",
            review_empty: "Noch kein zugelassenes Lesegerät hat diese Karte gelesen.",
            review_refused: "Das Protokoll Ihrer Karte kann nicht angezeigt werden",
            review_when: "Am oder nach",
            review_who: "Wer und wozu",
            review_what: "Freigegebene Daten",
            review_nothing: "nichts",
        },
        Lang::Ko => Texts {
            prompt: "카드를 대거나 코드를 보여 주세요",
            prompt_phone: "휴대폰 사용 시: 지갑 앱으로 이 코드를 스캔한 뒤 응답 코드를 카메라에 보여 주세요.",
            accept: "확인되었습니다",
            reject: "확인되지 않았습니다",
            undetermined: "지금은 확인할 수 없습니다",
            synced: "등록 정보 기준 시각",
            never_synced: "이 키오스크에는 아직 등록 정보가 없습니다.",
            stale_soon: "등록 정보가 곧 만료됩니다. 직원: 키오스크를 네트워크에 연결하세요.",
            stale: "등록 정보가 오래되어 확인할 수 없습니다. 직원에게 문의하세요.",
            reading: "카드를 읽는 중…",
            camera_on: "카메라 켜짐",
            language: "언어",
            done: "완료",
            review: "내 카드 열람 기록",
            review_pin: "PIN을 입력한 뒤 카드를 대세요",
            review_ok: "확인",
            review_clear: "지우기",
            review_cancel: "취소",
            review_tap: "지금 카드를 대세요",
            review_title: "내 카드를 읽은 곳",
            review_note: "최신 순입니다. 날짜는 열람이 일어났을 수 있는 가장 이른 날짜입니다(카드에는 시계가 없습니다).",
            review_empty: "아직 인가된 판독기가 이 카드를 읽은 적이 없습니다.",
            review_refused: "카드 열람 기록을 표시할 수 없습니다",
            review_when: "이후",
            review_who: "읽은 곳과 목적",
            review_what: "제공된 정보",
            review_nothing: "없음",
        },
    }
}

/// Why the card's log was not shown, in words the holder understands.
pub fn review_refused(lang: Lang, why: crate::review::ReviewRefused) -> &'static str {
    use crate::review::ReviewRefused as R;
    match (lang, why) {
        (Lang::En, R::WrongPin) => "The card did not accept the PIN. Nothing was shown.",
        (Lang::De, R::WrongPin) => {
            "Die Karte hat die PIN nicht angenommen. Es wurde nichts angezeigt."
        }
        (Lang::Ko, R::WrongPin) => {
            "카드가 PIN을 받아들이지 않았습니다. 아무것도 표시되지 않았습니다."
        }
        (Lang::En, R::PinBlocked) => {
            "Your card's PIN is blocked. Nothing was shown. Unblock it with your PUK at a service counter."
        }
        (Lang::De, R::PinBlocked) => {
            "Die PIN Ihrer Karte ist gesperrt. Es wurde nichts angezeigt. Entsperren Sie sie mit Ihrer PUK an einem Bürgerschalter."
        }
        (Lang::Ko, R::PinBlocked) => {
            "카드의 PIN이 잠겼습니다. 아무것도 표시되지 않았습니다. 민원 창구에서 PUK로 잠금을 해제하세요."
        }
        (Lang::En, R::CardError) => "The card could not be read. Please try again.",
        (Lang::De, R::CardError) => {
            "Die Karte konnte nicht gelesen werden. Bitte erneut versuchen."
        }
        (Lang::Ko, R::CardError) => "카드를 읽을 수 없습니다. 다시 시도하세요.",
        (Lang::En, R::Unavailable) => {
            "This kiosk cannot read card logs right now. Please ask staff."
        }
        (Lang::De, R::Unavailable) => {
            "Dieser Kiosk kann Kartenprotokolle gerade nicht lesen. Bitte wenden Sie sich an das Personal."
        }
        (Lang::Ko, R::Unavailable) => {
            "이 키오스크는 지금 카드 기록을 읽을 수 없습니다. 직원에게 문의하세요."
        }
    }
}

/// Why, in words a resident understands. `subject` fills the policy-specific reasons (the
/// district of `resident-of`).
pub fn reason(lang: Lang, reason: &Reason, subject: Option<&str>) -> String {
    let s = subject.unwrap_or("");
    let t: &str = match (lang, reason) {
        (Lang::En, Reason::Accepted) => "",
        (Lang::De, Reason::Accepted) => "",
        (Lang::Ko, Reason::Accepted) => "",
        (Lang::En, Reason::Revoked) => "This credential has been revoked.",
        (Lang::De, Reason::Revoked) => "Dieser Nachweis wurde widerrufen.",
        (Lang::Ko, Reason::Revoked) => "이 증명서는 취소되었습니다.",
        (Lang::En, Reason::Suspended) => {
            "This credential is suspended. Please contact the issuing office."
        }
        (Lang::De, Reason::Suspended) => {
            "Dieser Nachweis ist vorübergehend gesperrt. Bitte wenden Sie sich an die ausstellende Stelle."
        }
        (Lang::Ko, Reason::Suspended) => "이 증명서는 일시 정지되었습니다. 발급 기관에 문의하세요.",
        (Lang::En, Reason::Expired) => "This credential has expired.",
        (Lang::De, Reason::Expired) => "Dieser Nachweis ist abgelaufen.",
        (Lang::Ko, Reason::Expired) => "이 증명서는 만료되었습니다.",
        (Lang::En, Reason::NotYetValid) => "This credential is not valid yet.",
        (Lang::De, Reason::NotYetValid) => "Dieser Nachweis ist noch nicht gültig.",
        (Lang::Ko, Reason::NotYetValid) => "이 증명서는 아직 유효하지 않습니다.",
        (Lang::En, Reason::IssuerNotTrusted) => {
            "The issuer of this credential is not recognised for it."
        }
        (Lang::De, Reason::IssuerNotTrusted) => {
            "Die ausstellende Stelle ist für diesen Nachweis nicht anerkannt."
        }
        (Lang::Ko, Reason::IssuerNotTrusted) => "이 증명서의 발급 기관은 인정되지 않습니다.",
        (Lang::En, Reason::NotThisDevice) => {
            "This card or phone is not the one the credential was issued to."
        }
        (Lang::De, Reason::NotThisDevice) => {
            "Diese Karte oder dieses Telefon ist nicht das Gerät, für das der Nachweis ausgestellt wurde."
        }
        (Lang::Ko, Reason::NotThisDevice) => "이 카드나 휴대폰은 증명서가 발급된 기기가 아닙니다.",
        (Lang::En, Reason::NotShared) => "The information this service needs was not shared.",
        (Lang::De, Reason::NotShared) => {
            "Die für diesen Dienst nötigen Angaben wurden nicht freigegeben."
        }
        (Lang::Ko, Reason::NotShared) => "이 서비스에 필요한 정보가 공유되지 않았습니다.",
        (Lang::En, Reason::NotOver18) => "This service is only for people aged 18 or over.",
        (Lang::De, Reason::NotOver18) => "Dieser Dienst ist nur für Personen ab 18 Jahren.",
        (Lang::Ko, Reason::NotOver18) => "이 서비스는 만 18세 이상만 이용할 수 있습니다.",
        (Lang::En, Reason::NotResident) => return format!("This service is for residents of {s}."),
        (Lang::De, Reason::NotResident) => {
            return format!("Dieser Dienst ist für Einwohner von {s}.");
        }
        (Lang::Ko, Reason::NotResident) => {
            return format!("이 서비스는 {s} 주민만 이용할 수 있습니다.");
        }
        (Lang::En, Reason::Unreadable) => "The credential could not be read or has been altered.",
        (Lang::De, Reason::Unreadable) => "Der Nachweis ist nicht lesbar oder wurde verändert.",
        (Lang::Ko, Reason::Unreadable) => "증명서를 읽을 수 없거나 변조되었습니다.",
        (Lang::En, Reason::WrongCode) => {
            "This code was made for another screen or was already used. Please show a new code."
        }
        (Lang::De, Reason::WrongCode) => {
            "Dieser Code gehört zu einem anderen Bildschirm oder wurde schon verwendet. Bitte einen neuen Code zeigen."
        }
        (Lang::Ko, Reason::WrongCode) => {
            "이 코드는 다른 화면용이거나 이미 사용되었습니다. 새 코드를 보여 주세요."
        }
        (Lang::En, Reason::KioskNotRecognised) => {
            "This card did not accept this kiosk's accreditation. Please ask staff."
        }
        (Lang::De, Reason::KioskNotRecognised) => {
            "Diese Karte hat die Zulassung dieses Kiosks nicht anerkannt. Bitte wenden Sie sich an das Personal."
        }
        (Lang::Ko, Reason::KioskNotRecognised) => {
            "이 카드가 이 키오스크의 인가를 받아들이지 않았습니다. 직원에게 문의하세요."
        }
        (Lang::En, Reason::CardError) => "The card could not be read. Please tap it again.",
        (Lang::De, Reason::CardError) => {
            "Die Karte konnte nicht gelesen werden. Bitte erneut auflegen."
        }
        (Lang::Ko, Reason::CardError) => "카드를 읽을 수 없습니다. 다시 대 주세요.",
        (Lang::En, Reason::Stale) => "The kiosk's registry data is too old. Please ask staff.",
        (Lang::De, Reason::Stale) => {
            "Die Registerdaten des Kiosks sind zu alt. Bitte wenden Sie sich an das Personal."
        }
        (Lang::Ko, Reason::Stale) => {
            "키오스크의 등록 정보가 너무 오래되었습니다. 직원에게 문의하세요."
        }
        (Lang::En, Reason::CannotCheck) => {
            "The kiosk cannot check this credential right now. Please ask staff."
        }
        (Lang::De, Reason::CannotCheck) => {
            "Der Kiosk kann diesen Nachweis gerade nicht prüfen. Bitte wenden Sie sich an das Personal."
        }
        (Lang::Ko, Reason::CannotCheck) => {
            "키오스크가 지금 이 증명서를 확인할 수 없습니다. 직원에게 문의하세요."
        }
        (Lang::En, Reason::NotEligible) => "You are not eligible to vote in this election.",
        (Lang::De, Reason::NotEligible) => "Sie sind bei dieser Wahl nicht wahlberechtigt.",
        (Lang::Ko, Reason::NotEligible) => "이 선거의 투표 자격이 없습니다.",
        (Lang::En, Reason::ElectionClosed) => "This election is not open now.",
        (Lang::De, Reason::ElectionClosed) => "Diese Wahl ist derzeit nicht geöffnet.",
        (Lang::Ko, Reason::ElectionClosed) => "지금은 이 선거의 투표 시간이 아닙니다.",
        (Lang::En, Reason::NoPseudonym) => {
            "The card did not confirm your vote authentication. Check your PIN and tap again."
        }
        (Lang::De, Reason::NoPseudonym) => {
            "Die Karte hat die Wahlanmeldung nicht bestätigt. Bitte PIN prüfen und erneut auflegen."
        }
        (Lang::Ko, Reason::NoPseudonym) => {
            "카드가 투표 인증을 확인하지 않았습니다. PIN을 확인하고 다시 대 주세요."
        }
        (Lang::En, Reason::AlreadyAuthenticated) => {
            "You have already been authenticated in this election. Please ask staff."
        }
        (Lang::De, Reason::AlreadyAuthenticated) => {
            "Sie wurden bei dieser Wahl bereits angemeldet. Bitte wenden Sie sich an das Personal."
        }
        (Lang::Ko, Reason::AlreadyAuthenticated) => {
            "이 선거에서 이미 인증되었습니다. 직원에게 문의하세요."
        }
        (Lang::En, Reason::Reauthenticated) => {
            "You had already been authenticated; this authentication replaces the earlier one."
        }
        (Lang::De, Reason::Reauthenticated) => {
            "Sie waren bereits angemeldet; diese Anmeldung ersetzt die frühere."
        }
        (Lang::Ko, Reason::Reauthenticated) => {
            "이미 인증된 적이 있습니다. 이번 인증이 이전 인증을 대신합니다."
        }
    };
    t.to_owned()
}

/// The label of a citizen element, in `lang`.
pub fn element_label(lang: Lang, element: &str) -> String {
    let l = match (lang, element) {
        (Lang::En, "age_over_18") => "Aged 18 or over",
        (Lang::De, "age_over_18") => "18 Jahre oder älter",
        (Lang::Ko, "age_over_18") => "만 18세 이상",
        (Lang::En, "resident_district") => "District",
        (Lang::De, "resident_district") => "Bezirk",
        (Lang::Ko, "resident_district") => "거주 구역",
        (Lang::En, "resident_city") => "City",
        (Lang::De, "resident_city") => "Stadt",
        (Lang::Ko, "resident_city") => "거주 도시",
        (Lang::En, "family_name") => "Family name",
        (Lang::De, "family_name") => "Familienname",
        (Lang::Ko, "family_name") => "성",
        (Lang::En, "given_name") => "Given name",
        (Lang::De, "given_name") => "Vorname",
        (Lang::Ko, "given_name") => "이름",
        (Lang::En, "birth_date") => "Date of birth",
        (Lang::De, "birth_date") => "Geburtsdatum",
        (Lang::Ko, "birth_date") => "생년월일",
        (Lang::En, "document_number") => "Document number",
        (Lang::De, "document_number") => "Dokumentnummer",
        (Lang::Ko, "document_number") => "문서 번호",
        (Lang::En, "portrait") => "Photo",
        (Lang::De, "portrait") => "Foto",
        (Lang::Ko, "portrait") => "사진",
        _ => return element.replace('_', " "),
    };
    l.to_owned()
}

/// An element's value as the screen shows it (a portrait is not shown as data).
pub fn element_value(lang: Lang, value: &Value) -> String {
    match value {
        Value::Bool(b) => match (lang, b) {
            (Lang::En, true) => "Yes",
            (Lang::En, false) => "No",
            (Lang::De, true) => "Ja",
            (Lang::De, false) => "Nein",
            (Lang::Ko, true) => "예",
            (Lang::Ko, false) => "아니요",
        }
        .to_owned(),
        Value::Text(t) => t.clone(),
        Value::Integer(i) => i128::from(*i).to_string(),
        // full-date is tag 1004 over text.
        Value::Tag(_, inner) => element_value(lang, inner),
        Value::Bytes(_) => "▣".to_owned(),
        _ => "…".to_owned(),
    }
}
