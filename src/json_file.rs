//! Reading the JSON files the command line names (config, state, catalog):
//! each must hold one JSON object, and errors say which file and why.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Reads a file that must hold one JSON object; `what` names it in errors.
pub(crate) fn read_json_object(path: &Path, what: &'static str) -> Result<Map<String, Value>> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|source| Error::InputRead {
        what,
        path: shown.to_string(),
        source,
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Input(format!(
            "{what} file '{shown}' is empty; it must hold a JSON object"
        )));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::Input(format!(
            "{what} file '{shown}' holds a JSON {}; it must hold a JSON object",
            json_kind(&other)
        ))),
        Err(source) => Err(Error::InputJson {
            what,
            path: shown.to_string(),
            source,
        }),
    }
}

/// The JSON type name of a value, for messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
