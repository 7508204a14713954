//! The agent's settings: `/etc/skiff/agent.toml` (or `--config FILE`), then the environment,
//! which wins. Environment names are the ECS agent's where ECS has one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::AgentError;
use crate::image::PullBehavior;

pub const DEFAULT_CONFIG: &str = "/etc/skiff/agent.toml";

/// The file's keys; an unknown key is an error naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    cluster: Option<String>,
    join_token: Option<String>,
    ca_file: Option<PathBuf>,
    ca_fingerprint: Option<String>,
    data_dir: Option<PathBuf>,
    reserved_memory: Option<u64>,
    reserved_ports: Option<Vec<u16>>,
    reserved_ports_udp: Option<Vec<u16>>,
    instance_attributes: Option<BTreeMap<String, String>>,
    container_stop_timeout: Option<String>,
    task_cleanup_wait: Option<String>,
    image_cleanup_interval: Option<String>,
    image_minimum_cleanup_age: Option<String>,
    num_images_delete_per_cycle: Option<usize>,
    disable_image_cleanup: Option<bool>,
    image_pull_behavior: Option<String>,
    poll_wait: Option<String>,
    utilization_interval: Option<String>,
    max_backoff: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host:port`.
    pub server: String,
    pub cluster: String,
    pub join_token: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server CA's DER, 32 bytes.
    pub ca_fingerprint: Option<[u8; 32]>,
    pub data_dir: PathBuf,
    pub reserved_memory: u64,
    pub reserved_ports: Vec<u16>,
    pub reserved_ports_udp: Vec<u16>,
    pub instance_attributes: BTreeMap<String, String>,
    pub container_stop_timeout: Duration,
    pub task_cleanup_wait: Duration,
    pub image_cleanup_interval: Duration,
    pub image_minimum_cleanup_age: Duration,
    pub num_images_delete_per_cycle: usize,
    pub disable_image_cleanup: bool,
    /// default, always, once or prefer-cached (checked).
    pub image_pull_behavior: String,
    /// How long one desired-set poll may wait on the server (at most 60 s).
    pub poll_wait: Duration,
    pub utilization_interval: Duration,
    /// Cap of the retry backoff when the server is unreachable.
    pub max_backoff: Duration,
}

fn bad(key: &str, msg: impl std::fmt::Display) -> AgentError {
    AgentError::Config(format!("{key}: {msg}"))
}

fn duration(key: &str, v: &str) -> Result<Duration, AgentError> {
    crate::cli::parse_duration(v).map_err(|e| bad(key, e))
}

/// `[22, 80]` (ECS's JSON form) or `22,80`.
fn ports(key: &str, v: &str) -> Result<Vec<u16>, AgentError> {
    let v = v.trim();
    if v.starts_with('[') {
        return serde_json::from_str(v).map_err(|e| bad(key, format!("a JSON list of ports: {e}")));
    }
    v.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| bad(key, format!("{p:?} is not a port")))
        })
        .collect()
}

fn boolean(key: &str, v: &str) -> Result<bool, AgentError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(bad(key, format!("{v:?} is not true or false"))),
    }
}

fn fingerprint(key: &str, v: &str) -> Result<[u8; 32], AgentError> {
    // `AB:CD:...` as openssl prints it, or plain hex; an optional `sha256:` prefix.
    let hexs: String = v
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bytes = hex::decode(&hexs).map_err(|_| bad(key, "not a hex SHA-256 fingerprint"))?;
    bytes
        .try_into()
        .map_err(|_| bad(key, "a SHA-256 fingerprint has 32 bytes"))
}

impl Config {
    /// Reads `file` (a missing default file is no error) and overlays `env`.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, AgentError> {
        let (path, must_exist) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let fc: FileConfig = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| AgentError::Config(format!("{}: {}", path.display(), e.message())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                FileConfig::default()
            }
            Err(e) => return Err(AgentError::Config(format!("{}: {e}", path.display()))),
        };
        Self::merge(fc, env)
    }

    fn merge(fc: FileConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, AgentError> {
        // The first variable set wins over the file's key.
        let pick = |names: &[&str], file: Option<String>| -> Option<(String, String)> {
            names
                .iter()
                .find_map(|n| env(n).map(|v| (n.to_string(), v)))
                .or(file.map(|v| (names[0].to_string(), v)))
        };
        let server = pick(&["SKIFF_SERVER"], fc.server)
            .map(|(_, v)| v)
            .ok_or_else(|| {
                bad(
                    "server",
                    "not set (SKIFF_SERVER or `server` in the config file)",
                )
            })?;
        if !server.starts_with("https://") {
            return Err(bad(
                "server",
                format!("{server:?}: must be an https:// URL"),
            ));
        }
        let cluster = pick(&["SKIFF_CLUSTER", "ECS_CLUSTER"], fc.cluster)
            .map(|(_, v)| v)
            .unwrap_or_else(|| "default".into());
        let join_token = pick(&["SKIFF_JOIN_TOKEN"], fc.join_token).map(|(_, v)| v);
        let ca_file = pick(
            &["SKIFF_CA_FILE"],
            fc.ca_file.map(|p| p.to_string_lossy().into_owned()),
        )
        .map(|(_, v)| PathBuf::from(v));
        let ca_fingerprint = pick(&["SKIFF_CA_FINGERPRINT"], fc.ca_fingerprint)
            .map(|(k, v)| fingerprint(&k, &v))
            .transpose()?;
        if ca_file.is_none() && ca_fingerprint.is_none() {
            return Err(bad(
                "ca_file",
                "neither a CA file (SKIFF_CA_FILE) nor a CA fingerprint (SKIFF_CA_FINGERPRINT) is set: the agent trusts only the server's own CA",
            ));
        }
        let data_dir = pick(
            &["SKIFF_DATA_DIR", "ECS_DATADIR"],
            fc.data_dir.map(|p| p.to_string_lossy().into_owned()),
        )
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| PathBuf::from("/var/lib/skiff"));
        let reserved_memory = match env("ECS_RESERVED_MEMORY") {
            Some(v) => v.trim().parse().map_err(|_| {
                bad(
                    "ECS_RESERVED_MEMORY",
                    format!("{v:?} is not a number of MiB"),
                )
            })?,
            None => fc.reserved_memory.unwrap_or(0),
        };
        let reserved_ports = match env("ECS_RESERVED_PORTS") {
            Some(v) => ports("ECS_RESERVED_PORTS", &v)?,
            // The ECS agent's own default.
            None => fc
                .reserved_ports
                .unwrap_or_else(|| vec![22, 2375, 2376, 51678, 51679]),
        };
        let reserved_ports_udp = match env("ECS_RESERVED_PORTS_UDP") {
            Some(v) => ports("ECS_RESERVED_PORTS_UDP", &v)?,
            None => fc.reserved_ports_udp.unwrap_or_default(),
        };
        let instance_attributes = match env("ECS_INSTANCE_ATTRIBUTES") {
            Some(v) => serde_json::from_str(&v).map_err(|e| {
                bad(
                    "ECS_INSTANCE_ATTRIBUTES",
                    format!("a JSON object of string values: {e}"),
                )
            })?,
            None => fc.instance_attributes.unwrap_or_default(),
        };
        for k in instance_attributes.keys() {
            if k.starts_with("ecs.") {
                return Err(bad(
                    "instance_attributes",
                    format!("{k:?}: the ecs. prefix is reserved for built-in attributes"),
                ));
            }
        }
        let dur = |names: &[&str], file: Option<String>, default: &str| {
            let (k, v) = pick(names, file).unwrap_or((names[0].into(), default.into()));
            duration(&k, &v)
        };
        let container_stop_timeout = dur(
            &["ECS_CONTAINER_STOP_TIMEOUT"],
            fc.container_stop_timeout,
            "30s",
        )?;
        let task_cleanup_wait = dur(
            &["ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION"],
            fc.task_cleanup_wait,
            "3h",
        )?;
        let image_cleanup_interval = dur(
            &["ECS_IMAGE_CLEANUP_INTERVAL"],
            fc.image_cleanup_interval,
            "30m",
        )?;
        let image_minimum_cleanup_age = dur(
            &["ECS_IMAGE_MINIMUM_CLEANUP_AGE"],
            fc.image_minimum_cleanup_age,
            "1h",
        )?;
        let num_images_delete_per_cycle = match env("ECS_NUM_IMAGES_DELETE_PER_CYCLE") {
            Some(v) => v.trim().parse().map_err(|_| {
                bad(
                    "ECS_NUM_IMAGES_DELETE_PER_CYCLE",
                    format!("{v:?} is not a number"),
                )
            })?,
            None => fc.num_images_delete_per_cycle.unwrap_or(5),
        };
        let disable_image_cleanup = match env("ECS_DISABLE_IMAGE_CLEANUP") {
            Some(v) => boolean("ECS_DISABLE_IMAGE_CLEANUP", &v)?,
            None => fc.disable_image_cleanup.unwrap_or(false),
        };
        let image_pull_behavior = match pick(&["ECS_IMAGE_PULL_BEHAVIOR"], fc.image_pull_behavior) {
            Some((k, v)) => {
                v.parse::<PullBehavior>().map_err(|e| bad(&k, e))?;
                v
            }
            None => "default".into(),
        };
        let poll_wait = dur(&["SKIFF_POLL_WAIT"], fc.poll_wait, "30s")?;
        if poll_wait.is_zero() || poll_wait > Duration::from_secs(60) {
            return Err(bad("poll_wait", "must be between 1s and 60s"));
        }
        let utilization_interval = dur(
            &["SKIFF_UTILIZATION_INTERVAL"],
            fc.utilization_interval,
            "20s",
        )?;
        let max_backoff = dur(&["SKIFF_MAX_BACKOFF"], fc.max_backoff, "30s")?;
        for (k, d) in [
            ("utilization_interval", utilization_interval),
            ("max_backoff", max_backoff),
            ("image_cleanup_interval", image_cleanup_interval),
        ] {
            if d < Duration::from_secs(1) {
                return Err(bad(k, "must be at least 1s"));
            }
        }
        Ok(Config {
            server: server.trim_end_matches('/').to_string(),
            cluster,
            join_token,
            ca_file,
            ca_fingerprint,
            data_dir,
            reserved_memory,
            reserved_ports,
            reserved_ports_udp,
            instance_attributes,
            container_stop_timeout,
            task_cleanup_wait,
            image_cleanup_interval,
            image_minimum_cleanup_age,
            num_images_delete_per_cycle,
            disable_image_cleanup,
            image_pull_behavior,
            poll_wait,
            utilization_interval,
            max_backoff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, AgentError> {
        let fc: FileConfig =
            toml::from_str(toml_text).map_err(|e| AgentError::Config(e.message().to_string()))?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::merge(fc, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            "server = \"https://a:1\"\ncluster = \"edge\"\nca_file = \"/ca.pem\"\nreserved_memory = 64\n[instance_attributes]\nzone = \"x\"\n",
            &[
                ("SKIFF_CLUSTER", "prod"),
                ("ECS_RESERVED_PORTS", "[22, 8080]"),
                ("ECS_INSTANCE_ATTRIBUTES", r#"{"rack":"3"}"#),
                ("ECS_CONTAINER_STOP_TIMEOUT", "45s"),
            ],
        )
        .unwrap();
        assert_eq!(c.cluster, "prod");
        assert_eq!(c.reserved_memory, 64);
        assert_eq!(c.reserved_ports, vec![22, 8080]);
        assert_eq!(c.instance_attributes.get("rack").unwrap(), "3");
        assert!(!c.instance_attributes.contains_key("zone"));
        assert_eq!(c.container_stop_timeout, Duration::from_secs(45));
        assert_eq!(c.utilization_interval, Duration::from_secs(20));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = load("server = \"https://a\"\nclustr = \"x\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("clustr"), "{e}");
        let e = load(
            "server = \"https://a\"\nca_file = \"/c\"\n",
            &[("ECS_RESERVED_MEMORY", "lots")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("ECS_RESERVED_MEMORY"), "{e}");
        let e = load("server = \"https://a\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
        let e = load("server = \"http://a\"\nca_file = \"/c\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
    }

    #[test]
    fn fingerprints_take_openssl_and_plain_hex() {
        let hexs = "ab".repeat(32);
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert_eq!(fingerprint("k", &hexs).unwrap(), [0xab; 32]);
        assert_eq!(fingerprint("k", &colons.join(":")).unwrap(), [0xab; 32]);
        assert!(fingerprint("k", "abcd").is_err());
    }

    /// The sample config shipped in packaging/ loads as it is, and with every commented key
    /// uncommented (so each one it shows is a real key with a valid default).
    #[test]
    fn the_packaged_sample_config_is_valid() {
        let text = include_str!("../../packaging/agent.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.server, "https://skiff-server.example:8443");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.starts_with("ca_fingerprint") => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, text);
        let all = load(&uncommented, &[]).unwrap();
        assert_eq!(all.cluster, "default");
        assert_eq!(
            all.reserved_ports, c.reserved_ports,
            "the sample shows the defaults"
        );
        assert_eq!(all.task_cleanup_wait, c.task_cleanup_wait);
        assert_eq!(all.image_cleanup_interval, c.image_cleanup_interval);
        assert_eq!(all.poll_wait, c.poll_wait);
        assert_eq!(
            all.instance_attributes.get("rack").map(String::as_str),
            Some("r1")
        );
    }
}
