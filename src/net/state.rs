//! The allocation state that IPAM and host ports share: one JSON file,
//! `STATE/net/allocations.json`, read, changed and written back under an exclusive flock of
//! `STATE/net/allocations.lock`, so that concurrent skiff processes never hand out one
//! address or port twice. Writes go through a temporary file and a rename, so a reader
//! without the lock sees the old state or the new one, never half of one.
//!
//! No fsync: after a power loss no task survives, so every allocation is stale anyway and
//! reconcile drops it; an empty file (what a power loss can leave) reads as no allocations.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ports::{PortLease, Proto};
use super::{invalid, io_err, NetError};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Allocations {
    /// Address leases per subnet (`172.31.252.0/22`).
    #[serde(default)]
    pub subnets: BTreeMap<String, SubnetLeases>,
    #[serde(default)]
    pub ports: Vec<PortLease>,
    /// The last dynamic port handed out per protocol: the next search starts after it, so a
    /// port just released is not reused at once.
    #[serde(default)]
    pub last_port: BTreeMap<Proto, u16>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubnetLeases {
    /// owner (`task/container`) → address.
    #[serde(default)]
    pub leases: BTreeMap<String, Ipv4Addr>,
    /// The last address handed out (the next search starts after it).
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
}

/// Where the allocation state lives: `STATE/net/`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An exclusive flock, held until dropped (closing the file releases it).
pub(crate) struct Flock(#[allow(dead_code)] std::fs::File);

/// Takes an exclusive flock of `path` (created, with its directory, when missing).
pub(crate) fn lock_exclusive(path: &Path) -> Result<Flock, NetError> {
    let object = format!("lock {}", path.display());
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io_err(&object, "create directory"))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(&object, "open"))?;
    loop {
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(Flock(f));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(io_err(&object, "flock")(e));
        }
    }
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("net"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("allocations.json")
    }

    fn lock(&self) -> Result<Flock, NetError> {
        lock_exclusive(&self.dir.join("allocations.lock"))
    }

    fn load(&self) -> Result<(Allocations, String), NetError> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(format!("state {}", path.display()), "read")(e)),
        };
        if text.trim().is_empty() {
            return Ok((Allocations::default(), text));
        }
        let a = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("state {}", path.display()), format!("parse: {e}")))?;
        Ok((a, text))
    }

    /// The state as it is now (no lock: writes are atomic renames).
    pub(crate) fn read(&self) -> Result<Allocations, NetError> {
        Ok(self.load()?.0)
    }

    /// Runs `f` on the state under the exclusive lock and writes the state back if `f`
    /// changed it; when `f` fails, nothing is written.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut Allocations) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        let _lock = self.lock()?;
        let (mut a, before) = self.load()?;
        let out = f(&mut a)?;
        let after = serde_json::to_string_pretty(&a).expect("allocations serialize");
        if after != before {
            let path = self.file();
            let tmp = self
                .dir
                .join(format!("allocations.json.{}", std::process::id()));
            std::fs::write(&tmp, &after)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(io_err(format!("state {}", path.display()), "write"))?;
        }
        Ok(out)
    }
}
