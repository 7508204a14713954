//! A secret as the local store keeps it, and how the shim reads one into a container's
//! environment at start (see `task::secrets` for the store). The shim's config names the
//! file only; the value exists in the shim's memory and the container's environment.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One stored secret (the file's JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    /// Unix seconds.
    pub updated_at: u64,
    pub value: String,
}

/// Where one secret of a container comes from: the file holding it and, for a Secrets
/// Manager ARN that names one, the JSON key to take from its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub file: PathBuf,
    #[serde(default)]
    pub json_key: Option<String>,
}

pub fn read_file(path: &Path) -> std::io::Result<Secret> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A secret's value (the named JSON key of it, when the reference names one).
pub fn value(r: &SecretRef) -> Result<String, String> {
    let s = read_file(&r.file).map_err(|e| format!("{}: {e}", r.file.display()))?;
    match &r.json_key {
        None => Ok(s.value),
        Some(k) => {
            let v: serde_json::Value = serde_json::from_str(&s.value)
                .map_err(|_| format!("secret {}: not JSON, so it has no key {k:?}", s.name))?;
            match v.get(k) {
                Some(serde_json::Value::String(x)) => Ok(x.clone()),
                Some(other) => Ok(other.to_string()),
                None => Err(format!("secret {}: no JSON key {k:?}", s.name)),
            }
        }
    }
}
