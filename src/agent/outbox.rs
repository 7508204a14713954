//! What the agent must not forget across its own restarts: the per-instance event sequence,
//! the last snapshot it emitted for each task (so that it emits only changes, and never
//! starts a task twice), and the events not yet delivered.
//!
//! Events go to an append-only journal (`DATA/agent/journal.jsonl`), fsynced before an event
//! counts as emitted; the state file (`DATA/agent/state.json`) is rewritten atomically after.
//! A crash between the two is repaired at load: the journal's newer events are replayed over
//! the state. Delivered events (up to the server's `applied_seq`) are dropped by rewriting the
//! journal without them.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AgentError;
use crate::proto::TaskEvent;

/// What the agent knows of one task of the control plane.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub task_arn: String,
    /// The last snapshot emitted.
    #[serde(default)]
    pub last: Option<TaskEvent>,
    /// How it ended without a task directory (reason, stop code): a failed start, a stop
    /// that came before the start, or its directory removed on the host before it was
    /// reported stopped. Such a task is never started again.
    #[serde(default)]
    pub ended_without_dir: Option<(String, String)>,
    /// The control plane asked to stop it, with this reason (ECS's StopTask reason).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// When the agent asked the task to stop (epoch seconds).
    #[serde(default)]
    pub stopping_at: Option<f64>,
    /// When the agent started pulling and starting it (epoch seconds).
    #[serde(default)]
    pub start_requested_at: Option<f64>,
}

impl Entry {
    pub fn emitted_stopped(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|e| e.last_status == "STOPPED")
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    seq: u64,
    /// By task id (the id part of the ARN).
    tasks: BTreeMap<String, Entry>,
}

pub struct Outbox {
    dir: PathBuf,
    state: State,
    pending: VecDeque<TaskEvent>,
}

const STATE_FILE: &str = "state.json";
const JOURNAL_FILE: &str = "journal.jsonl";

fn io(what: String) -> impl FnOnce(std::io::Error) -> AgentError {
    move |source| AgentError::Io { what, source }
}

/// The id part of a task ARN (`.../task/<cluster>/<id>`).
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Writes `bytes` to `path` through a fsynced temporary file and a rename.
pub fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Two snapshots are the same state when they differ only in seq and observation time.
fn same(a: &TaskEvent, b: &TaskEvent) -> bool {
    let strip = |e: &TaskEvent| TaskEvent {
        seq: 0,
        at: 0.0,
        ..e.clone()
    };
    strip(a) == strip(b)
}

impl Outbox {
    /// Loads the state and the journal of `dir` (DATA/agent), repairing a torn journal tail.
    pub fn open(dir: &Path) -> Result<Outbox, AgentError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let sp = dir.join(STATE_FILE);
        let mut state: State = match std::fs::read(&sp) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AgentError::Corrupt {
                file: sp.clone(),
                msg: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(format!("read {}", sp.display()))(e)),
        };
        let jp = dir.join(JOURNAL_FILE);
        let text = match std::fs::read(&jp) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(format!("read {}", jp.display()))(e)),
        };
        let mut pending = VecDeque::new();
        let mut good_len = 0;
        for line in text.split_inclusive(|b| *b == b'\n') {
            // A line without its newline, or unreadable, is the tail of a write cut off by a
            // crash: it was never fsynced, hence never counted as emitted.
            if !line.ends_with(b"\n") {
                break;
            }
            let Ok(ev) = serde_json::from_slice::<TaskEvent>(line) else {
                break;
            };
            good_len += line.len();
            pending.push_back(ev);
        }
        let mut ob = Outbox {
            dir: dir.to_path_buf(),
            state: State::default(),
            pending: VecDeque::new(),
        };
        if good_len != text.len() {
            tracing::warn!(journal = %jp.display(), "dropping a torn journal tail");
            ob.pending = pending.clone();
            ob.rewrite_journal()?;
        }
        let mut replayed = false;
        for ev in &pending {
            if ev.seq > state.seq {
                state.seq = ev.seq;
                let id = task_id(&ev.task_arn).to_string();
                let e = state.tasks.entry(id).or_insert_with(|| Entry {
                    task_arn: ev.task_arn.clone(),
                    ..Entry::default()
                });
                e.last = Some(ev.clone());
                replayed = true;
            }
        }
        ob.state = state;
        ob.pending = pending;
        if replayed {
            ob.save()?;
        }
        Ok(ob)
    }

    fn save(&self) -> Result<(), AgentError> {
        let p = self.dir.join(STATE_FILE);
        write_durably(
            &p,
            &serde_json::to_vec(&self.state).expect("state serializes"),
            0o600,
        )
        .map_err(io(format!("write {}", p.display())))
    }

    fn rewrite_journal(&self) -> Result<(), AgentError> {
        let p = self.dir.join(JOURNAL_FILE);
        let mut bytes = Vec::new();
        for ev in &self.pending {
            serde_json::to_writer(&mut bytes, ev).expect("event serializes");
            bytes.push(b'\n');
        }
        write_durably(&p, &bytes, 0o600).map_err(io(format!("write {}", p.display())))
    }

    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.state.tasks.get(id)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.state.tasks.iter()
    }

    /// Changes (or creates) a task's entry and saves the state.
    pub fn update(
        &mut self,
        id: &str,
        arn: &str,
        f: impl FnOnce(&mut Entry),
    ) -> Result<(), AgentError> {
        let e = self
            .state
            .tasks
            .entry(id.to_string())
            .or_insert_with(|| Entry {
                task_arn: arn.to_string(),
                ..Entry::default()
            });
        f(e);
        self.save()
    }

    /// Forgets tasks for which `keep` says no (stopped, reported, and gone).
    pub fn retain(&mut self, keep: impl Fn(&str, &Entry) -> bool) -> Result<(), AgentError> {
        let before = self.state.tasks.len();
        self.state.tasks.retain(|id, e| keep(id, e));
        if self.state.tasks.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Emits `snapshot` (its seq is assigned here) unless it equals the last one of its task.
    /// Returns whether it was emitted; once this returns true the event is on disk.
    pub fn emit(&mut self, mut snapshot: TaskEvent) -> Result<bool, AgentError> {
        let id = task_id(&snapshot.task_arn).to_string();
        if let Some(last) = self.state.tasks.get(&id).and_then(|e| e.last.as_ref()) {
            if same(last, &snapshot) {
                return Ok(false);
            }
        }
        snapshot.seq = self.state.seq + 1;
        let p = self.dir.join(JOURNAL_FILE);
        let mut line = serde_json::to_vec(&snapshot).expect("event serializes");
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io(format!("open {}", p.display())))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(io(format!("append to {}", p.display())))?;
        self.state.seq = snapshot.seq;
        let arn = snapshot.task_arn.clone();
        self.pending.push_back(snapshot.clone());
        self.update(&id, &arn, |e| e.last = Some(snapshot))?;
        Ok(true)
    }

    /// Up to `n` undelivered events, oldest first.
    pub fn batch(&self, n: usize) -> Vec<TaskEvent> {
        self.pending.iter().take(n).cloned().collect()
    }

    /// Whether an event of this task waits for delivery.
    pub fn is_pending(&self, arn: &str) -> bool {
        self.pending.iter().any(|e| e.task_arn == arn)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    pub fn seq(&self) -> u64 {
        self.state.seq
    }

    /// Numbering continues above what the server applied, even if the local state was lost.
    pub fn observe_applied(&mut self, applied: u64) -> Result<(), AgentError> {
        if applied > self.state.seq {
            tracing::warn!(
                applied,
                local = self.state.seq,
                "the server applied more events than this agent remembers"
            );
            self.state.seq = applied;
            self.save()?;
        }
        self.delivered(applied)
    }

    /// Drops the events the server has applied (seq ≤ `applied`).
    pub fn delivered(&mut self, applied: u64) -> Result<(), AgentError> {
        let before = self.pending.len();
        while self.pending.front().is_some_and(|e| e.seq <= applied) {
            self.pending.pop_front();
        }
        if self.pending.len() != before {
            self.rewrite_journal()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(arn: &str, status: &str) -> TaskEvent {
        serde_json::from_value(serde_json::json!({
            "seq": 0, "taskArn": arn, "lastStatus": status, "at": 1.0
        }))
        .unwrap()
    }

    #[test]
    fn emits_changes_only_numbers_them_and_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("skiff-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut ob = Outbox::open(&dir).unwrap();
        let a = "arn:aws:ecs:local:0:task/default/aa";
        assert!(ob.emit(ev(a, "PENDING")).unwrap());
        assert!(!ob.emit(ev(a, "PENDING")).unwrap());
        assert!(ob.emit(ev(a, "RUNNING")).unwrap());
        assert_eq!(
            ob.batch(10).iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        ob.delivered(1).unwrap();
        // A torn line at the end (a crash mid-write) is dropped at load.
        let jp = dir.join(JOURNAL_FILE);
        let mut f = std::fs::OpenOptions::new().append(true).open(&jp).unwrap();
        f.write_all(b"{\"seq\":3,\"taskA").unwrap();
        let mut ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.batch(10).iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(ob.seq(), 2);
        assert!(ob.emit(ev(a, "STOPPED")).unwrap());
        assert_eq!(ob.seq(), 3);
        assert!(ob.entry("aa").unwrap().emitted_stopped());
        // The state file lost (a crash after the journal append): the journal restores it.
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let ob = Outbox::open(&dir).unwrap();
        assert_eq!(ob.seq(), 3);
        assert!(ob.entry("aa").unwrap().emitted_stopped());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
