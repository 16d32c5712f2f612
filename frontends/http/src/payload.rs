//! How bytes travel in HTTP JSON bodies, for records and queue messages alike: a payload is
//! given as JSON (`<name>`, stored as its JSON text) or as bytes (`<name>_base64`); it comes back
//! as `<name>` when it parses as JSON, else as `<name>_base64`.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The stored bytes of a payload given as `json` or `base64` (`None` when neither is given);
/// `name` names the field in the error.
pub fn decode(
    json: Option<Value>,
    base64: Option<String>,
    name: &str,
) -> Result<Option<Bytes>, String> {
    match (json, base64) {
        (Some(_), Some(_)) => Err(format!("both {name} and {name}_base64")),
        (Some(v), None) => Ok(Some(Bytes::from(v.to_string()))),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(|v| Some(Bytes::from(v)))
            .map_err(|e| format!("{name}_base64: {e}")),
        (None, None) => Ok(None),
    }
}

/// Puts `bytes` into `out` as `name` (JSON) or `name_base64`; no bytes is `name: null`.
pub fn encode(out: &mut Map<String, Value>, name: &str, bytes: Option<&Bytes>) {
    match bytes.map(|b| serde_json::from_slice::<Value>(b).map_err(|_| b)) {
        Some(Ok(v)) => out.insert(name.to_string(), v),
        Some(Err(b)) => out.insert(
            format!("{name}_base64"),
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        None => out.insert(name.to_string(), Value::Null),
    };
}

/// Record headers as a JSON object of strings (non-UTF-8 bytes replaced).
pub fn headers<'a>(headers: impl Iterator<Item = &'a (String, Option<Bytes>)>) -> Value {
    Value::Object(
        headers
            .map(|(k, v)| {
                let v = v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
                (k.clone(), json!(v))
            })
            .collect(),
    )
}
