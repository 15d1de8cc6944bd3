//! The data of one secret version: a JSON object, wiped from memory when
//! dropped and never printed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret's data: a JSON object of any shape.
///
/// Every string in it (keys and values, at any depth) is overwritten when
/// it is dropped, and `Debug` prints `[redacted]`. The crate hands it out
/// inside a `Secret<SecretData>`; keep exposed borrows short. Numbers are
/// replaced rather than overwritten in place (serde_json keeps them by
/// value), which is the best `serde_json` allows.
#[derive(Clone, Default, PartialEq)]
pub struct SecretData(Map<String, Value>);

impl SecretData {
    pub fn new(map: Map<String, Value>) -> Self {
        Self(map)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Mutable access, for building the data in place.
    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }

    /// Applies a JSON merge patch (RFC 7386), as Vault's KV v2 PATCH does:
    /// a `null` removes a key, an object is merged key by key (at any
    /// depth), anything else replaces the value.
    pub(crate) fn merge_patch(&mut self, patch: &SecretData) {
        merge_map(&mut self.0, &patch.0);
    }
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, p) in patch {
        match p {
            Value::Null => {
                if let Some(mut old) = target.remove(k) {
                    zeroize_value(&mut old);
                }
            }
            Value::Object(po) => {
                let slot = target.entry(k.clone()).or_insert(Value::Null);
                if !slot.is_object() {
                    zeroize_value(slot);
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(to) = slot {
                    merge_map(to, po);
                }
            }
            other => {
                let slot = target.entry(k.clone()).or_insert(Value::Null);
                zeroize_value(slot);
                *slot = other.clone();
            }
        }
    }
}

fn zeroize_map(m: &mut Map<String, Value>) {
    for (mut k, mut v) in std::mem::take(m) {
        k.zeroize();
        zeroize_value(&mut v);
    }
}

fn zeroize_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => {
            a.iter_mut().for_each(zeroize_value);
            a.clear();
        }
        Value::Object(m) => zeroize_map(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    *v = Value::Null;
}

impl Zeroize for SecretData {
    fn zeroize(&mut self) {
        zeroize_map(&mut self.0);
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretData {}

impl From<Map<String, Value>> for SecretData {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretData([redacted])")
    }
}

impl Serialize for SecretData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SecretData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_identity::Secret;
    use serde_json::json;

    fn data(v: Value) -> SecretData {
        match v {
            Value::Object(m) => SecretData::new(m),
            _ => unreachable!("test data must be an object"),
        }
    }

    #[test]
    fn debug_is_redacted() {
        let d = data(json!({"password": "CANARY-hunter2", "n": 1}));
        assert!(!format!("{d:?}").contains("CANARY"));
        let s = Secret::new(d);
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose().as_map()["password"], "CANARY-hunter2");
    }

    #[test]
    fn zeroize_empties_everything() {
        let mut d = data(json!({"a": "x", "b": {"c": ["y", {"d": "z"}]}}));
        d.zeroize();
        assert!(d.as_map().is_empty());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut d = data(json!({
            "keep": "k", "drop": "x", "replace": "old",
            "nested": {"a": 1, "b": 2}, "scalar_to_obj": 5
        }));
        d.merge_patch(&data(json!({
            "drop": null, "replace": "new", "added": [1, 2],
            "nested": {"b": null, "c": 3}, "scalar_to_obj": {"x": null, "y": 1},
            "missing": null
        })));
        assert_eq!(
            Value::Object(d.as_map().clone()),
            json!({
                "keep": "k", "replace": "new", "added": [1, 2],
                "nested": {"a": 1, "c": 3}, "scalar_to_obj": {"y": 1}
            })
        );
    }
}
