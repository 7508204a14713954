//! The local secret store of standalone mode: `secrets[].valueFrom` of a container resolves
//! here (the control plane delivers secrets itself later). One root-only file per secret in
//! `STATE/secrets/` (directory 0700, files 0600), named by the SHA-256 of the secret's name.
//!
//! Values never pass through a state file: the engine resolves each `valueFrom` to the file
//! that holds it, the shim's config carries only that path, and the shim reads the value
//! when it starts the container, straight into the process's environment.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use crate::runtime::secret::SecretRef;
use crate::runtime::secret::{read_file, Secret};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name:?}: {msg}")]
    Invalid { name: String, msg: String },
    #[error("secret store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("secrets")
}

fn file_of(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir).join(hex::encode(Sha256::digest(name.as_bytes())))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 2048
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SecretError::Invalid {
            name: name.to_string(),
            msg: "a name is 1-2048 of letters, digits and / _ + = . @ - :".into(),
        })
    }
}

/// Stores (or replaces) a secret, atomically and readable by root only.
pub fn set(state_dir: &Path, name: &str, value: &str) -> Result<(), SecretError> {
    check_name(name)?;
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(io(&d))?;
    let path = file_of(state_dir, name);
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(&Secret {
        name: name.to_string(),
        updated_at: crate::image::store::now_unix(),
        value: value.to_string(),
    })
    .expect("secret serializes");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&body).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

pub fn remove(state_dir: &Path, name: &str) -> Result<(), SecretError> {
    let path = file_of(state_dir, name);
    std::fs::remove_file(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SecretError::Invalid {
                name: name.to_string(),
                msg: "no such secret".into(),
            }
        } else {
            SecretError::Io { path, source: e }
        }
    })
}

/// The stored secrets' names and update times (never their values), by name.
pub fn list(state_dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir(state_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_none())
        .filter_map(|e| read_file(&e.path()).ok())
        .map(|s| (s.name, s.updated_at))
        .collect();
    out.sort();
    out
}

/// The names a `valueFrom` may be stored under, most specific first: the string itself; for
/// a Secrets Manager ARN (`arn:aws:secretsmanager:R:A:secret:NAME[-XXXXXX][:json-key:stage:id]`)
/// its name with and without the 6-character suffix AWS appends; for an SSM parameter ARN
/// (`arn:aws:ssm:R:A:parameter/NAME`) `NAME` and `/NAME`. Also the JSON key, if named.
fn candidates(value_from: &str) -> (Vec<String>, Option<String>) {
    let mut names = vec![value_from.to_string()];
    let mut json_key = None;
    if let Some(rest) = value_from
        .strip_prefix("arn:")
        .and_then(|r| r.split_once(":secret:"))
        .map(|(_, r)| r)
    {
        let mut parts = rest.split(':');
        let name = parts.next().unwrap_or_default();
        json_key = parts.next().filter(|k| !k.is_empty()).map(str::to_string);
        names.push(name.to_string());
        if let Some((base, suffix)) = name.rsplit_once('-') {
            if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
                names.push(base.to_string());
            }
        }
    } else if let Some((_, p)) = value_from
        .strip_prefix("arn:")
        .and_then(|r| r.split_once(":parameter"))
    {
        names.push(p.to_string());
        names.push(p.trim_start_matches('/').to_string());
    }
    names.dedup();
    (names, json_key)
}

/// Finds the stored secret a `valueFrom` names.
pub fn resolve(state_dir: &Path, value_from: &str) -> Result<SecretRef, String> {
    let (names, json_key) = candidates(value_from);
    for n in &names {
        let f = file_of(state_dir, n);
        if f.exists() {
            return Ok(SecretRef { file: f, json_key });
        }
    }
    Err(format!(
        "no secret {value_from:?} in the local store ({}); add it with `skiff secret set NAME`",
        dir(state_dir).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::secret::value;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "skiff-secrets-{}-{}",
            std::process::id(),
            crate::image::store::now_unix()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn set_list_resolve_and_remove() {
        let d = tmp();
        set(&d, "db-password", "s3cret").unwrap();
        set(&d, "app/creds", r#"{"user":"u","token":"t"}"#).unwrap();
        let mode = std::fs::metadata(file_of(&d, "db-password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir(&d)).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let names: Vec<String> = list(&d).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["app/creds", "db-password"]);

        let r = resolve(&d, "db-password").unwrap();
        assert_eq!(value(&r).unwrap(), "s3cret");
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-password-AbCdEf";
        assert_eq!(value(&resolve(&d, arn).unwrap()).unwrap(), "s3cret");
        let keyed = "arn:aws:secretsmanager:eu-west-1:1:secret:app/creds:token::";
        assert_eq!(value(&resolve(&d, keyed).unwrap()).unwrap(), "t");
        let ssm = "arn:aws:ssm:eu-west-1:1:parameter/db-password";
        assert_eq!(value(&resolve(&d, ssm).unwrap()).unwrap(), "s3cret");
        let e = resolve(&d, "nope").unwrap_err();
        assert!(e.contains("no secret \"nope\""), "{e}");

        remove(&d, "db-password").unwrap();
        assert!(resolve(&d, "db-password").is_err());
        assert!(remove(&d, "db-password").is_err());
        assert!(set(&d, "bad name", "x").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
