//! CBOR element values as JSON for people and scripts: full-date as `YYYY-MM-DD`, tdate as
//! RFC 3339, byte strings as base64url (no padding), other tags unwrapped.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use serde_json::{Map, Value as Json};

use super::response::NameSpaced;

/// One CBOR value as JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Integer(i) => {
            let n = i128::from(*i);
            i64::try_from(n)
                .map(Json::from)
                .or_else(|_| u64::try_from(n).map(Json::from))
                .unwrap_or_else(|_| Json::String(n.to_string()))
        }
        Value::Bytes(b) => Json::String(URL_SAFE_NO_PAD.encode(b)),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Text(t) => Json::String(t.clone()),
        Value::Bool(b) => Json::Bool(*b),
        Value::Null => Json::Null,
        Value::Tag(24, inner) => to_json(inner),
        Value::Tag(_, inner) => to_json(inner),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Value::Text(t) => t.clone(),
                    other => match to_json(other) {
                        Json::String(s) => s,
                        j => j.to_string(),
                    },
                };
                out.insert(key, to_json(v));
            }
            Json::Object(out)
        }
        _ => Json::Null,
    }
}

/// `{namespace: {element: value}}`.
pub fn name_spaced_to_json(ns: &NameSpaced<Value>) -> Json {
    let mut out = Map::new();
    for (name, els) in ns {
        let entry = out
            .entry(name.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(m) = entry {
            for (id, v) in els {
                m.insert(id.clone(), to_json(v));
            }
        }
    }
    Json::Object(out)
}
