//! Removing images and layers: by request (`skiff rmi`, `skiff prune`) and by the cleanup
//! policy of the ECS agent (ECS_IMAGE_CLEANUP_INTERVAL, ECS_IMAGE_MINIMUM_CLEANUP_AGE,
//! ECS_NUM_IMAGES_DELETE_PER_CYCLE, ECS_DISABLE_IMAGE_CLEANUP): daemonless, a cycle runs
//! when a command finds the last one older than the interval (a stamp in the store). An
//! image a task uses is never removed; a layer goes when no image record names it. Everything runs under the store's exclusive lock, so no
//! pull is half-way while layers are swept.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::digest::Digest;
use super::store::{FileLock, Image, Store};
use super::ImageError;

/// The ECS agent's cleanup settings.
#[derive(Debug, Clone, Copy)]
pub struct CleanupPolicy {
    /// No automatic cycles at all (ECS_DISABLE_IMAGE_CLEANUP).
    pub disabled: bool,
    /// Time between automatic cycles (ECS_IMAGE_CLEANUP_INTERVAL).
    pub interval: Duration,
    /// Images pulled or used more recently than this stay (ECS_IMAGE_MINIMUM_CLEANUP_AGE).
    pub minimum_age: Duration,
    /// At most this many images go per cycle (ECS_NUM_IMAGES_DELETE_PER_CYCLE).
    pub images_per_cycle: usize,
}

impl Default for CleanupPolicy {
    fn default() -> Self {
        CleanupPolicy {
            disabled: false,
            interval: DEFAULT_INTERVAL,
            minimum_age: Duration::from_secs(3600),
            images_per_cycle: 5,
        }
    }
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// The ECS agent takes its default instead of a shorter interval.
pub const MINIMUM_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The stamp file: the Unix time (seconds) the last automatic cycle ran.
const STAMP: &str = "image-cleanup";

/// What one removal did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Removed {
    pub references: Vec<String>,
    pub images: Vec<String>,
    pub layers: usize,
    pub bytes: u64,
}

/// Images the policy removes now: not in use, older than the minimum age by both pull and
/// last use, least recently used first, at most `images_per_cycle`.
pub fn select_for_cleanup(
    images: &[Image],
    in_use: &HashSet<String>,
    now: u64,
    policy: &CleanupPolicy,
) -> Vec<Digest> {
    let min_age = policy.minimum_age.as_secs();
    let mut candidates: Vec<&Image> = images
        .iter()
        .filter(|i| !in_use.contains(&i.manifest_digest.to_string()))
        .filter(|i| now.saturating_sub(i.pulled_at.max(i.last_used)) >= min_age)
        .collect();
    candidates.sort_by_key(|i| (i.last_used.max(i.pulled_at), i.pulled_at));
    candidates
        .into_iter()
        .take(policy.images_per_cycle)
        .map(|i| i.manifest_digest.clone())
        .collect()
}

fn remove_file(p: &Path) {
    let _ = std::fs::remove_file(p);
}

impl Store {
    async fn exclusive(&self) -> Result<FileLock, ImageError> {
        FileLock::acquire(self.root().join("locks").join("store"), true).await
    }

    /// Removes references (name:tag, or a manifest digest for all its names) and then every
    /// image no reference names any more and no task uses, and the layers only they had.
    /// `in_use` is asked under the lock: a task being set up holds the store lock shared
    /// until its record names its images (see [`Store::hold`]), so the answer is complete.
    pub async fn remove(
        &self,
        targets: &[String],
        in_use: impl FnOnce() -> HashSet<String>,
    ) -> Result<Removed, ImageError> {
        let _lock = self.exclusive().await?;
        self.remove_locked(targets, &in_use())
    }

    /// [`Store::remove`] with the store's exclusive lock already held.
    fn remove_locked(
        &self,
        targets: &[String],
        in_use: &HashSet<String>,
    ) -> Result<Removed, ImageError> {
        let mut removed = Removed::default();
        let refs = self.refs();
        for t in targets {
            // A digest names an image with all its references; anything else is a reference.
            let (digest, names): (Digest, Vec<String>) = match Digest::parse(t) {
                Ok(d) => {
                    if self.image(&d).is_none() {
                        return Err(ImageError::Reference {
                            image: t.clone(),
                            msg: "no such image here".into(),
                        });
                    }
                    let names = refs
                        .iter()
                        .filter(|r| r.manifest_digest == d)
                        .map(|r| r.reference.clone())
                        .collect();
                    (d, names)
                }
                Err(_) => {
                    let norm = super::reference::Reference::parse(t)
                        .map(|r| r.to_string())
                        .map_err(|msg| ImageError::Reference {
                            image: t.clone(),
                            msg,
                        })?;
                    let hit = refs.iter().find(|r| r.reference == norm).ok_or_else(|| {
                        ImageError::Reference {
                            image: t.clone(),
                            msg: "no such image here".into(),
                        }
                    })?;
                    (hit.manifest_digest.clone(), vec![norm])
                }
            };
            if in_use.contains(&digest.to_string()) {
                return Err(ImageError::Reference {
                    image: t.clone(),
                    msg: format!("in use by a running task ({digest})"),
                });
            }
            for n in names {
                remove_file(&self.ref_path(&n));
                removed.references.push(n);
            }
            if Digest::parse(t).is_ok() {
                self.drop_image(&digest, &mut removed);
            }
        }
        self.sweep(in_use, &mut removed);
        Ok(removed)
    }

    /// Removes images that no reference names and no task uses, unused layers and stale
    /// temporary files.
    pub async fn prune(
        &self,
        in_use: impl FnOnce() -> HashSet<String>,
    ) -> Result<Removed, ImageError> {
        let _lock = self.exclusive().await?;
        let mut removed = Removed::default();
        self.sweep(&in_use(), &mut removed);
        // With the exclusive lock held no pull runs: whatever is in tmp is a crash's debris.
        clear_tmp(self.root());
        Ok(removed)
    }

    /// One cycle of the ECS agent's cleanup policy, now (`skiff prune --auto`).
    pub async fn cleanup(
        &self,
        in_use: impl FnOnce() -> HashSet<String>,
        policy: &CleanupPolicy,
    ) -> Result<Removed, ImageError> {
        let _lock = self.exclusive().await?;
        self.cleanup_locked(&in_use(), policy)
    }

    fn cleanup_locked(
        &self,
        in_use: &HashSet<String>,
        policy: &CleanupPolicy,
    ) -> Result<Removed, ImageError> {
        let images: Vec<Image> = self.list().into_iter().map(|(i, _)| i).collect();
        let chosen = select_for_cleanup(&images, in_use, super::store::now_unix(), policy);
        if chosen.is_empty() {
            return Ok(Removed::default());
        }
        let targets: Vec<String> = chosen.iter().map(|d| d.to_string()).collect();
        self.remove_locked(&targets, in_use)
    }

    fn drop_image(&self, d: &Digest, removed: &mut Removed) {
        for r in self.refs().iter().filter(|r| &r.manifest_digest == d) {
            remove_file(&self.ref_path(&r.reference));
            removed.references.push(r.reference.clone());
        }
        let p = self.root().join("images").join(format!("{}.json", d.hex()));
        if p.exists() {
            remove_file(&p);
            removed.images.push(d.to_string());
        }
    }

    /// Images without references (and not in use) go; then layers no image names.
    fn sweep(&self, in_use: &HashSet<String>, removed: &mut Removed) {
        let refs = self.refs();
        for (img, _) in self.list() {
            let named = refs
                .iter()
                .any(|r| r.manifest_digest == img.manifest_digest);
            if !named && !in_use.contains(&img.manifest_digest.to_string()) {
                self.drop_image(&img.manifest_digest, removed);
            }
        }
        let keep: HashSet<String> = self
            .list()
            .iter()
            .flat_map(|(i, _)| i.chain_ids.iter().map(|c| c.hex().to_string()))
            .collect();
        let layers = self.root().join("layers");
        let entries: Vec<_> = std::fs::read_dir(&layers)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        // Directories first: a layer's size file is read before it goes.
        let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.path().is_dir());
        for e in dirs.iter().chain(&files) {
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name.strip_suffix(".size").unwrap_or(&name).to_string();
            if keep.contains(&hex) {
                continue;
            }
            if e.path().is_dir() {
                removed.bytes += std::fs::read_to_string(layers.join(format!("{hex}.size")))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if std::fs::remove_dir_all(e.path()).is_ok() {
                    removed.layers += 1;
                }
            } else {
                remove_file(&e.path());
            }
        }
    }
}

/// Whether an automatic cycle is due for the store at `root`: the policy allows them and the
/// stamp is older than the interval, unreadable, or in the future (the clock was set back).
/// Without a stamp the clock starts now (the stamp is written, nothing is due): like the
/// agent's first cycle, a store's first one comes an interval after its first use. One small
/// read, no lock: [`maybe_cleanup`] checks again under the lock.
pub fn cleanup_due(root: &Path, policy: &CleanupPolicy) -> bool {
    if policy.disabled {
        return false;
    }
    let stamp = root.join("locks").join(STAMP);
    let now = super::store::now_unix();
    let text = match std::fs::read_to_string(&stamp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A missing locks/ means no store here yet: nothing to start.
            let _ = std::fs::write(&stamp, now.to_string());
            return false;
        }
        Err(_) => return true,
    };
    match text.trim().parse::<u64>() {
        Ok(t) if t <= now => now - t >= policy.interval.as_secs(),
        _ => true,
    }
}

/// The ECS agent's periodic image cleanup, for callers without a loop of their own (`skiff
/// run` and `skiff pull` call it after their work; the agent on its own timer): one cycle
/// when [`cleanup_due`], recorded in the stamp. Never waits: when a pull or a removal holds
/// the store, the cycle is left to a later caller (`Ok(None)`, as when none is due).
/// `in_use` is asked under the lock, so it sees every task started before the cycle.
/// Blocking file system work: async callers run it with `spawn_blocking`.
pub fn maybe_cleanup(
    store: &Store,
    policy: &CleanupPolicy,
    in_use: impl FnOnce() -> HashSet<String>,
) -> Result<Option<Removed>, ImageError> {
    if !cleanup_due(store.root(), policy) {
        return Ok(None);
    }
    let Some(_lock) = FileLock::try_exclusive(&store.root().join("locks").join("store"))? else {
        return Ok(None);
    };
    // Another process may have run the cycle between the first look and the lock.
    if !cleanup_due(store.root(), policy) {
        return Ok(None);
    }
    let removed = store.cleanup_locked(&in_use(), policy)?;
    let stamp = store.root().join("locks").join(STAMP);
    std::fs::write(&stamp, super::store::now_unix().to_string()).map_err(|source| {
        ImageError::Io {
            what: format!("write {}", stamp.display()),
            source,
        }
    })?;
    Ok(Some(removed))
}

fn clear_tmp(root: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(root.join("tmp")) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Removes what killed pulls left in the store's `tmp`, when no pull runs (the store lock is
/// free right now); otherwise leaves it for a later command. For the daemonless commands,
/// which clean up after crashed ones as they start.
pub fn clear_debris_if_idle(state_dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(state_dir.join("locks").join("store")) else {
        return;
    };
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        clear_tmp(state_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::ImageConfig;

    fn img(n: u8, pulled: u64, used: u64) -> Image {
        Image {
            reference: format!("r/{n}"),
            manifest_digest: Digest::of(&[n]),
            config: ImageConfig::default(),
            chain_ids: vec![],
            size: 0,
            platform: String::new(),
            pulled_at: pulled,
            last_used: used,
        }
    }

    #[test]
    fn a_cycle_is_due_by_the_stamp() {
        let root = std::env::temp_dir().join(format!("skiff-gc-{}", std::process::id()));
        std::fs::create_dir_all(root.join("locks")).unwrap();
        let p = CleanupPolicy::default();
        let now = crate::image::store::now_unix();
        let stamp = |t: String| std::fs::write(root.join("locks").join(STAMP), t).unwrap();
        assert!(!cleanup_due(&root, &p), "no stamp yet: the clock starts");
        let first: u64 = std::fs::read_to_string(root.join("locks").join(STAMP))
            .unwrap()
            .parse()
            .unwrap();
        assert!(first >= now);
        stamp((now - 60).to_string());
        assert!(!cleanup_due(&root, &p), "a minute ago");
        stamp((now - 1801).to_string());
        assert!(cleanup_due(&root, &p), "over 30 minutes ago");
        stamp((now + 3600).to_string());
        assert!(cleanup_due(&root, &p), "the clock went back");
        stamp("garbage".into());
        assert!(cleanup_due(&root, &p), "unreadable");
        let off = CleanupPolicy {
            disabled: true,
            ..p
        };
        assert!(!cleanup_due(&root, &off));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn policy_keeps_young_and_used_images_and_caps_the_cycle() {
        let now = 100_000;
        let images: Vec<Image> = vec![
            img(1, 10, 20),       // old, least recently used
            img(2, 10, now - 10), // used just now: stays
            img(3, now - 60, 0),  // pulled a minute ago: stays
            img(4, 10, 500),      // old
            img(5, 10, 400),      // old, in use: stays
            img(6, 10, 300),
            img(7, 10, 200),
            img(8, 10, 100),
            img(9, 10, 50),
        ];
        let in_use: HashSet<String> = [Digest::of(&[5]).to_string()].into();
        let p = CleanupPolicy::default();
        assert_eq!(p.interval, Duration::from_secs(1800));
        let chosen = select_for_cleanup(&images, &in_use, now, &p);
        let want: Vec<Digest> = [1u8, 9, 8, 7, 6]
            .iter()
            .map(|n| Digest::of(&[*n]))
            .collect();
        assert_eq!(chosen, want);
        let p = CleanupPolicy {
            images_per_cycle: 2,
            ..p
        };
        assert_eq!(select_for_cleanup(&images, &in_use, now, &p).len(), 2);
    }
}
