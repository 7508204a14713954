//! The network settings a task was set up with, kept in its directory (`net.json`), and the
//! release of everything a task's network holds. Used by the engine that sets a task up,
//! by the task's shim when the task ends, and by the reconcile after a crash. Blocking; the
//! work runs on a thread of its own (the netlink calls drive a runtime of their own, which
//! may not nest in a caller's).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bridge::{BridgeNet, Config};
use super::firewall::Backend;
use super::ports::PortConfig;

/// The task directory's record of the network settings in use.
pub const NET_FILE: &str = "net.json";

/// The owner name of an awsvpc task's one attachment (a container name cannot hold a '.').
pub const TASK_ATTACHMENT: &str = "task.eni";

/// How the host's bridge network is set up (flags of `skiff run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSettings {
    pub bridge: String,
    pub subnet: String,
    /// `a-b`; None: the kernel's ip_local_port_range.
    pub port_range: Option<String>,
    pub reserved_ports: Vec<u16>,
    /// `nft` or `iptables`; None: nft when installed.
    pub firewall: Option<String>,
}

impl NetSettings {
    /// These settings with the firewall backend decided: the one given, else the one found
    /// on this host (remembered per boot in `STATE/net/backend`: finding it runs nft).
    pub fn resolved(&self, state_dir: &Path) -> Result<NetSettings, String> {
        let mut s = self.clone();
        if s.firewall.is_none() {
            let cache = state_dir.join("net").join("backend");
            let boot = super::boot_id();
            let cached = std::fs::read_to_string(&cache).ok().and_then(|t| {
                let (b, backend) = t.trim().split_once(' ')?;
                (b == boot).then(|| backend.to_string())
            });
            let backend = match cached {
                Some(b) => b,
                None => {
                    let b = Backend::detect(None)
                        .map_err(|e| e.to_string())?
                        .to_string();
                    let _ = std::fs::create_dir_all(state_dir.join("net"));
                    let _ = std::fs::write(&cache, format!("{boot} {b}\n"));
                    b
                }
            };
            s.firewall = Some(backend);
        }
        Ok(s)
    }

    pub fn bridge_net(&self, state_dir: &Path) -> Result<BridgeNet, String> {
        let cfg = Config {
            bridge: self.bridge.clone(),
            subnet: self
                .subnet
                .parse()
                .map_err(|e| format!("--bridge-subnet {}: {e}", self.subnet))?,
            ports: PortConfig::new(self.port_range.as_deref(), &self.reserved_ports)
                .map_err(|e| e.to_string())?,
            firewall: Backend::detect(self.firewall.as_deref()).map_err(|e| e.to_string())?,
        };
        Ok(BridgeNet::new(state_dir, cfg))
    }
}

/// Runs `f` on a thread of its own (see the module's comment).
pub fn on_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("network thread panicked"))
}

/// Removes everything of the task's network, if it has one (`net.json`); idempotent.
/// Returns false when something could not be removed (it stays for the next reconcile).
pub fn release(task_dir: &Path, task_id: &str) -> bool {
    let file = task_dir.join(NET_FILE);
    let Ok(bytes) = std::fs::read(&file) else {
        return true;
    };
    let Ok(settings) = serde_json::from_slice::<NetSettings>(&bytes) else {
        tracing::warn!(file = %file.display(), "unreadable network settings");
        return false;
    };
    let Some(state_dir) = task_dir.parent().and_then(Path::parent) else {
        return false;
    };
    let done = on_thread(|| {
        settings
            .bridge_net(state_dir)
            .and_then(|net| net.detach_task(task_id, false).map_err(|e| e.to_string()))
    });
    match done {
        Ok(removed) => {
            tracing::debug!(task = task_id, ?removed, "network released");
            let _ = std::fs::remove_file(&file);
            true
        }
        Err(e) => {
            tracing::warn!(task = task_id, error = %e, "cannot release the task's network");
            false
        }
    }
}

/// Removes what crashed skiff processes left of tasks that no longer exist (no directory in
/// `STATE/tasks`, not even one being made): leases, namespace files, veths and port rules.
/// Cheap unless there is something to remove. Called when a task starts.
pub fn reconcile_orphans(settings: &NetSettings, state_dir: &Path) {
    let keep = |task: &str| crate::task::store::task_dir_exists(state_dir, task);
    let done = on_thread(|| {
        let net = settings.resolved(state_dir)?.bridge_net(state_dir)?;
        if !net.has_orphans(keep).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        net.reconcile(keep).map(Some).map_err(|e| e.to_string())
    });
    match done {
        Ok(Some(removed)) => {
            tracing::info!(?removed, "removed what crashed tasks left of their network")
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "network reconcile"),
    }
}
