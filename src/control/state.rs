//! The server's state: every record in memory, written through the store before a change
//! is visible; plus what is never durable (heartbeats, poll wake-ups, utilization).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::ApiError;
use super::model::*;
use super::store::{decode, Store, StoreError, Write};
use crate::proto::{TaskUsage, Usage};

/// Utilization windows kept per instance and per task (20 s each: the last 5 minutes).
pub const USAGE_WINDOWS: usize = 15;
/// Each known instance adds this much to the heartbeat timeout (see [`State::heartbeat_timeout`]).
pub const HEARTBEAT_PER_INSTANCE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub window_start: f64,
    pub window_end: f64,
    #[serde(flatten)]
    pub usage: Usage,
}

/// What an instance has in memory only.
pub struct Live {
    pub last_seen: Option<Instant>,
    /// Long-polls in flight: an instance waiting in a poll is connected.
    pub polls: u32,
    pub notify: watch::Sender<u64>,
    pub usage: VecDeque<UsageRecord>,
}

pub struct State {
    store: Box<dyn Store>,
    pub clusters: BTreeMap<String, Cluster>,
    /// By the token's hash.
    pub join_tokens: HashMap<String, JoinToken>,
    /// By (family, revision).
    pub taskdefs: BTreeMap<(String, u32), TaskDef>,
    /// By instance id.
    pub instances: BTreeMap<String, Instance>,
    /// Credential hash → instance id.
    pub credentials: HashMap<String, String>,
    /// By task id.
    pub tasks: BTreeMap<String, Task>,
    /// Instance id → its tasks not yet STOPPED (the desired set, the resources held).
    pub active: HashMap<String, BTreeSet<String>>,
    pub live: HashMap<String, Live>,
    pub task_usage: HashMap<String, VecDeque<UsageRecord>>,
    pub heartbeat_base: Duration,
    /// Instances not INACTIVE (the fleet the heartbeat timeout grows with).
    fleet: u32,
}

impl State {
    /// Loads every record; makes the `default` cluster on first start.
    pub fn load(mut store: Box<dyn Store>, heartbeat_base: Duration) -> Result<State, StoreError> {
        let records = store.load()?;
        let mut s = State {
            clusters: BTreeMap::new(),
            join_tokens: HashMap::new(),
            taskdefs: BTreeMap::new(),
            instances: BTreeMap::new(),
            credentials: HashMap::new(),
            tasks: BTreeMap::new(),
            active: HashMap::new(),
            live: HashMap::new(),
            task_usage: HashMap::new(),
            heartbeat_base,
            store,
            fleet: 0,
        };
        for (kind, key, value) in records {
            match kind.as_str() {
                KIND_CLUSTER => {
                    let c: Cluster = decode(&kind, &key, &value)?;
                    s.clusters.insert(c.name.clone(), c);
                }
                KIND_JOIN_TOKEN => {
                    let t: JoinToken = decode(&kind, &key, &value)?;
                    s.join_tokens.insert(t.hash.clone(), t);
                }
                KIND_TASKDEF => {
                    let d: TaskDef = decode(&kind, &key, &value)?;
                    s.taskdefs.insert((d.family.clone(), d.revision), d);
                }
                KIND_INSTANCE => {
                    let i: Instance = decode(&kind, &key, &value)?;
                    s.put_instance_mem(i);
                }
                KIND_TASK => {
                    let t: Task = decode(&kind, &key, &value)?;
                    s.put_task_mem(t);
                }
                _ => tracing::warn!("store: unknown record kind {kind} ({key}), ignored"),
            }
        }
        if !s.clusters.contains_key("default") {
            let c = Cluster {
                name: "default".into(),
                created_at: now(),
            };
            s.commit(vec![Write::put(KIND_CLUSTER, &c.name, &c)])?;
            s.clusters.insert(c.name.clone(), c);
        }
        Ok(s)
    }

    /// Writes a batch durably. Callers change memory only after this succeeded.
    pub fn commit(&mut self, batch: Vec<Write>) -> Result<(), StoreError> {
        self.store.apply(&batch)
    }

    pub fn put_instance_mem(&mut self, i: Instance) {
        // A deregistered instance's credential opens nothing any more.
        if i.status == "INACTIVE" {
            self.credentials.remove(&i.credential_hash);
        } else {
            self.credentials
                .insert(i.credential_hash.clone(), i.id.clone());
        }
        let live = self.live.entry(i.id.clone()).or_insert_with(|| Live {
            last_seen: None,
            polls: 0,
            notify: watch::channel(0).0,
            usage: VecDeque::new(),
        });
        // Wakes the instance's waiting polls when its set changed.
        live.notify.send_replace(i.version);
        let counts = |x: &Instance| u32::from(x.status != "INACTIVE");
        let new = counts(&i);
        let old = self
            .instances
            .insert(i.id.clone(), i)
            .map_or(0, |o| counts(&o));
        self.fleet = self.fleet + new - old;
    }

    pub fn put_task_mem(&mut self, t: Task) {
        let set = self.active.entry(t.instance_id.clone()).or_default();
        if t.is_stopped() {
            set.remove(&t.id);
            self.task_usage.remove(&t.id);
        } else {
            set.insert(t.id.clone());
        }
        self.tasks.insert(t.id.clone(), t);
    }

    pub fn remove_task_mem(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            if let Some(set) = self.active.get_mut(&t.instance_id) {
                set.remove(id);
            }
        }
        self.task_usage.remove(id);
    }

    pub fn cluster(&self, name_or_arn: Option<&str>) -> Result<&Cluster, ApiError> {
        let name = cluster_name(name_or_arn.unwrap_or("default"));
        self.clusters
            .get(name)
            .ok_or_else(|| ApiError::cluster_not_found(name))
    }

    /// Resolves `family`, `family:revision` or a task definition ARN (family alone: the
    /// latest ACTIVE revision).
    pub fn taskdef(&self, r: &str) -> Result<&TaskDef, ApiError> {
        let s = r.strip_prefix("arn:").map(|_| short_id(r)).unwrap_or(r);
        let found = match s.rsplit_once(':') {
            Some((fam, rev)) => rev
                .parse::<u32>()
                .ok()
                .and_then(|rev| self.taskdefs.get(&(fam.to_string(), rev))),
            None => self
                .taskdefs
                .range((s.to_string(), 0)..=(s.to_string(), u32::MAX))
                .rev()
                .map(|(_, d)| d)
                .find(|d| d.status == "ACTIVE"),
        };
        found.ok_or_else(|| {
            ApiError::client(format!(
                "taskDefinition: unable to describe task definition {r:?}"
            ))
        })
    }

    /// An instance of `cluster` by id or ARN.
    pub fn instance_in(&self, cluster: &str, r: &str) -> Option<&Instance> {
        self.instances
            .get(short_id(r))
            .filter(|i| i.cluster == cluster)
    }

    /// max(base, base + 10 ms × instances): after a server restart a larger fleet takes longer
    /// to come back through the agents' backoff, and one poll round of a large fleet takes
    /// longer to serve, so the timeout grows with it (60 s base: +20 s at 2,000 instances).
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_base + HEARTBEAT_PER_INSTANCE * self.fleet
    }

    pub fn connected(&self, id: &str) -> bool {
        let timeout = self.heartbeat_timeout();
        self.live
            .get(id)
            .is_some_and(|l| l.polls > 0 || l.last_seen.is_some_and(|t| t.elapsed() < timeout))
    }

    pub fn seen(&mut self, id: &str) {
        if let Some(l) = self.live.get_mut(id) {
            l.last_seen = Some(Instant::now());
        }
    }

    /// cpu, memory and host ports the instance's not-yet-STOPPED tasks hold.
    pub fn used(&self, id: &str) -> (u64, u64, Ports) {
        let mut cpu = 0;
        let mut mem = 0;
        let mut ports = Ports::default();
        for t in self
            .active
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|t| self.tasks.get(t))
        {
            cpu += t.cpu;
            mem += t.memory;
            ports.tcp.extend(&t.ports.tcp);
            ports.udp.extend(&t.ports.udp);
        }
        (cpu, mem, ports)
    }

    /// Why `need` does not fit on the instance (ECS's failure reasons), or None if it does.
    pub fn misfit(&self, i: &Instance, cpu: u64, mem: u64, ports: &Ports) -> Option<&'static str> {
        let (ucpu, umem, uports) = self.used(&i.id);
        if ucpu + cpu > i.resources.cpu {
            return Some("RESOURCE:CPU");
        }
        if umem + mem > i.resources.memory {
            return Some("RESOURCE:MEMORY");
        }
        let taken =
            |p: &u16, held: &[u16], reserved: &[u16]| held.contains(p) || reserved.contains(p);
        if ports
            .tcp
            .iter()
            .any(|p| taken(p, &uports.tcp, &i.resources.reserved_ports))
            || ports
                .udp
                .iter()
                .any(|p| taken(p, &uports.udp, &i.resources.reserved_ports_udp))
        {
            return Some("RESOURCE:PORTS");
        }
        None
    }

    /// The instance's set changed: bump its version (to be committed with the change).
    pub fn bumped(&self, id: &str) -> Option<Instance> {
        let mut i = self.instances.get(id)?.clone();
        i.version += 1;
        Some(i)
    }

    pub fn record_usage(
        &mut self,
        id: &str,
        start: f64,
        end: f64,
        inst: Usage,
        tasks: Vec<TaskUsage>,
    ) {
        let push = |q: &mut VecDeque<UsageRecord>, usage: Usage| {
            q.push_back(UsageRecord {
                window_start: start,
                window_end: end,
                usage,
            });
            while q.len() > USAGE_WINDOWS {
                q.pop_front();
            }
        };
        if let Some(l) = self.live.get_mut(id) {
            push(&mut l.usage, inst);
        }
        for t in tasks {
            let tid = short_id(&t.task_arn).to_string();
            push(self.task_usage.entry(tid).or_default(), t.usage);
        }
    }
}
