//! The local image store under the state directory:
//!
//! ```text
//! <state>/layers/<chain-id hex>/        one unpacked layer (an overlay lower directory)
//! <state>/layers/<chain-id hex>.size    its uncompressed size
//! <state>/images/<manifest hex>.json    an image: config, chain IDs, size, pull and use times
//! <state>/refs/<sha256(ref) hex>.json   a reference (name:tag) → manifest digest
//! <state>/locks/                        flock files: one per layer, one for the store
//! <state>/locks/image-cleanup            when the last automatic cleanup cycle ran
//! <state>/tmp/                          downloads and unpacks in progress
//! ```
//!
//! A layer directory appears only by an atomic rename after its content was synced, so a
//! crash never leaves a half layer that counts as present. A pull holds the store lock
//! shared and each layer's lock exclusively while it fetches that layer (one download per
//! layer, whatever number of pulls, in this process or another); garbage collection holds the
//! store lock exclusively.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::auth::PullAuth;
use super::digest::Digest;
use super::manifest::{self, ConfigFile, ImageConfig, Index, Manifest, Platform};
use super::pipeline::{self, backoff, transient, LayerError, Progress, MAX_ATTEMPTS};
use super::reference::Reference;
use super::registry::{read_capped, Registry, RegistryClient, RegistryError};
use super::unpack::UnpackLimits;
use super::ImageError;

/// What a container needs of its image, kept on disk per manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// The reference it was last pulled by.
    pub reference: String,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    /// Chain IDs, bottom layer first.
    pub chain_ids: Vec<Digest>,
    /// Uncompressed bytes of its layers.
    #[serde(default)]
    pub size: u64,
    /// `os/arch[/variant]`.
    #[serde(default)]
    pub platform: String,
    /// Unix seconds.
    #[serde(default)]
    pub pulled_at: u64,
    #[serde(default)]
    pub last_used: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefRecord {
    pub reference: String,
    pub manifest_digest: Digest,
}

/// When `skiff run` fetches images (ECS_IMAGE_PULL_BEHAVIOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullBehavior {
    /// Pull; if the registry cannot be reached, use the cached image when there is one.
    #[default]
    Default,
    /// Pull, and fail when the pull fails.
    Always,
    /// Pull only when the reference was never pulled here.
    Once,
    /// Use the cached image when there is one, else pull.
    PreferCached,
}

impl std::str::FromStr for PullBehavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(PullBehavior::Default),
            "always" => Ok(PullBehavior::Always),
            "once" => Ok(PullBehavior::Once),
            "prefer-cached" => Ok(PullBehavior::PreferCached),
            _ => Err(format!(
                "{s:?} is not one of default, always, once, prefer-cached"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Registries besides loopback ones spoken to in plain HTTP.
    pub insecure: Vec<String>,
    /// Layers downloaded at once (per store).
    pub max_concurrent_layers: usize,
    /// The platform to pick from an index; the host's when None.
    pub platform: Option<Platform>,
    /// Caps on what one layer may make the unpacker do.
    pub unpack: UnpackLimits,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            insecure: Vec::new(),
            max_concurrent_layers: 3,
            platform: None,
            unpack: UnpackLimits::default(),
        }
    }
}

pub struct Store {
    root: PathBuf,
    registry: RegistryClient,
    layer_slots: Arc<Semaphore>,
    platform: Platform,
    unpack: UnpackLimits,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("getrandom");
    hex::encode(b)
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.to_string();
    move |source| ImageError::Io { what, source }
}

/// An flock held until dropped (closing the file releases it).
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    /// Blocks (on a blocking thread) until the lock is held.
    pub async fn acquire(path: PathBuf, exclusive: bool) -> Result<FileLock, ImageError> {
        tokio::task::spawn_blocking(move || FileLock::acquire_blocking(&path, exclusive))
            .await
            .map_err(|e| ImageError::Io {
                what: "lock".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// The lock file, created when missing.
    fn open(path: &Path) -> Result<std::fs::File, ImageError> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(format!("open lock {}", path.display())))
    }

    /// The exclusive lock if nobody holds the lock now; `None` otherwise.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>, ImageError> {
        let f = Self::open(path)?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(FileLock { _file: f }));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        Err(io_err(format!("lock {}", path.display()))(e))
    }

    pub fn acquire_blocking(path: &Path, exclusive: bool) -> Result<FileLock, ImageError> {
        let f = Self::open(path)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                return Ok(FileLock { _file: f });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_err(format!("lock {}", path.display()))(e));
            }
        }
    }
}

/// Writes `body` to `path` through a synced temporary file and a rename.
pub fn write_atomic(tmp_dir: &Path, path: &Path, body: &[u8]) -> Result<(), ImageError> {
    use std::io::Write;
    let tmp = tmp_dir.join(format!("{}.part", random_hex()));
    let io = io_err(format!("write {}", path.display()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// ext4's "top of a directory hierarchy" flag (`chattr +T`), missing from libc.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Marks `dir` (the store's tmp, where layers are unpacked) as the top of a directory
/// hierarchy: ext4's allocator then places each layer directory made in it in a little-used
/// block group instead of in tmp's own group. This matters after removals: without a journal,
/// ext4 steps over every inode freed in the last minute one by one when allocating in a group,
/// and unpacking thousands of files into the group where a removed image's files were freed
/// just before (image cleanup, `skiff rmi`, a re-pull) cost seconds of system time. Only a
/// hint: file systems without the flag refuse it and nothing changes.
fn spread_subdirs(dir: &Path) {
    let Ok(f) = std::fs::File::open(dir) else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls read or write one int through a pointer to a live local.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0
            || flags & FS_TOPDIR_FL != 0
        {
            return;
        }
        flags |= FS_TOPDIR_FL;
        libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
    }
}

fn ref_key(reference: &str) -> String {
    Digest::of(reference.as_bytes()).hex().to_string()
}

impl Store {
    /// Opens (creating) the store.
    pub fn open(state_dir: &Path, opts: StoreOptions) -> Result<Store, ImageError> {
        let root = state_dir.to_path_buf();
        for d in ["layers", "images", "refs", "locks", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(format!("create {}", p.display())))?;
        }
        spread_subdirs(&root.join("tmp"));
        let registry = RegistryClient::new(opts.insecure).map_err(|e| ImageError::Registry {
            image: String::new(),
            source: e,
        })?;
        Ok(Store {
            root,
            registry,
            layer_slots: Arc::new(Semaphore::new(opts.max_concurrent_layers.max(1))),
            platform: opts.platform.unwrap_or_else(manifest::host_platform),
            unpack: opts.unpack,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The overlay lower directory of a layer stack.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    pub(crate) fn ref_path(&self, reference: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", ref_key(reference)))
    }

    fn image_path(&self, d: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", d.hex()))
    }

    /// The image a reference was last pulled as, if any.
    pub fn local(&self, image: &str) -> Option<Image> {
        let r = Reference::parse(image).ok()?;
        let rec: RefRecord = read_json(&self.ref_path(&r.to_string()))?;
        self.image(&rec.manifest_digest)
    }

    pub fn image(&self, d: &Digest) -> Option<Image> {
        read_json(&self.image_path(d))
    }

    /// Every image record, and the references that point at each.
    pub fn list(&self) -> Vec<(Image, Vec<String>)> {
        let refs = self.refs();
        let mut out: Vec<(Image, Vec<String>)> = read_dir_json::<Image>(&self.root.join("images"))
            .into_iter()
            .map(|img| {
                let names = refs
                    .iter()
                    .filter(|r| r.manifest_digest == img.manifest_digest)
                    .map(|r| r.reference.clone())
                    .collect();
                (img, names)
            })
            .collect();
        out.sort_by_key(|x| std::cmp::Reverse(x.0.pulled_at));
        out
    }

    pub fn refs(&self) -> Vec<RefRecord> {
        read_dir_json(&self.root.join("refs"))
    }

    /// Marks an image as used now (for the cleanup policy). A minute is fine enough for a
    /// policy counted in hours: a task started again within it does not write the record.
    pub fn touch(&self, img: &Image) {
        if let Some(mut rec) = self.image(&img.manifest_digest) {
            let now = now_unix();
            if now.saturating_sub(rec.last_used) < 60 {
                return;
            }
            rec.last_used = now;
            let body = serde_json::to_vec_pretty(&rec).expect("record serializes");
            let _ = write_atomic(
                &self.root.join("tmp"),
                &self.image_path(&rec.manifest_digest),
                &body,
            );
        }
    }

    /// The store lock, shared: no removal runs while it is held. A task holds it from before
    /// it looks for its images until its record names them, so a cleanup either finishes
    /// before the task looks (and the task pulls again) or sees the task's images in use.
    pub async fn hold(&self) -> Result<FileLock, ImageError> {
        FileLock::acquire(self.root.join("locks").join("store"), false).await
    }

    /// Gives an image for `image` according to `behavior`, pulling when needed.
    pub async fn ensure(
        &self,
        image: &str,
        behavior: PullBehavior,
        auth: PullAuth,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        let cached = || self.local(image).filter(|img| self.layers_present(img));
        let img = match behavior {
            PullBehavior::Always => self.pull_with(image, auth.clone(), progress).await?,
            PullBehavior::Once | PullBehavior::PreferCached => match cached() {
                Some(img) => img,
                None => self.pull_with(image, auth.clone(), progress).await?,
            },
            PullBehavior::Default => match self.pull_with(image, auth.clone(), progress).await {
                Ok(img) => img,
                Err(e @ ImageError::Registry { .. }) => match cached() {
                    Some(img) => {
                        tracing::warn!(image, error = %e, "pull failed; using the cached image");
                        img
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            },
        };
        self.touch(&img);
        Ok(img)
    }

    fn layers_present(&self, img: &Image) -> bool {
        img.chain_ids.iter().all(|c| self.layer_dir(c).is_dir())
    }

    /// Resolves `image` at the registry and makes sure all its layers are unpacked locally.
    pub async fn pull(&self, image: &str, progress: &dyn Progress) -> Result<Image, ImageError> {
        self.pull_with(image, PullAuth::Configured, progress).await
    }

    /// Like [`Store::pull`], with the credentials `auth` names (a task's
    /// `repositoryCredentials`).
    pub async fn pull_with(
        &self,
        image: &str,
        auth: PullAuth,
        progress: &dyn Progress,
    ) -> Result<Image, ImageError> {
        let registry = &self.registry.with_pull_auth(auth);
        let r = Reference::parse(image).map_err(|msg| ImageError::Reference {
            image: image.to_string(),
            msg,
        })?;
        let _store_lock = FileLock::acquire(self.root.join("locks").join("store"), false).await?;
        let (manifest, manifest_digest) = self.resolve(registry, &r).await?;

        let image_name = r.to_string();
        let verify = |msg: String| ImageError::Verify {
            image: image_name.clone(),
            msg,
        };
        if manifest.config.size > manifest::MAX_CONFIG_BYTES {
            return Err(verify(format!(
                "config of {} bytes is too large",
                manifest.config.size
            )));
        }
        let cfg_bytes = retry(|| async {
            let resp = registry.blob(&r, &manifest.config.digest).await?;
            read_capped(resp, manifest.config.size, "config").await
        })
        .await
        .map_err(|source| ImageError::Registry {
            image: r.to_string(),
            source,
        })?;
        if Digest::of(&cfg_bytes) != manifest.config.digest {
            return Err(verify(format!(
                "config {}: digest mismatch",
                manifest.config.digest
            )));
        }
        let cfg: ConfigFile = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| verify(format!("bad image config: {e}")))?;
        let want = &self.platform;
        if (!cfg.os.is_empty() && cfg.os != want.os)
            || (!cfg.architecture.is_empty() && cfg.architecture != want.architecture)
        {
            return Err(ImageError::Unsupported {
                image: r.to_string(),
                msg: format!(
                    "image is for {}/{}, wanted {}/{}",
                    cfg.os, cfg.architecture, want.os, want.architecture
                ),
            });
        }
        if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(verify(format!(
                "manifest has {} layers but the config lists {} diff IDs",
                manifest.layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let chain_ids = Digest::chain_ids(&cfg.rootfs.diff_ids);
        // One fetch per layer across pulls and processes: hold every layer's lock, taken
        // bottom-up (a stack's shared prefix is always locked in the same order, so two
        // pulls never wait for each other in a cycle).
        let mut layer_locks = Vec::with_capacity(chain_ids.len());
        for c in &chain_ids {
            layer_locks.push(FileLock::acquire(self.root.join("locks").join(c.hex()), true).await?);
        }
        let jobs = manifest.layers.iter().enumerate().map(|(i, desc)| {
            let diff_id = cfg.rootfs.diff_ids[i].clone();
            let chain = chain_ids[i].clone();
            let r = &r;
            async move {
                self.ensure_layer(registry, r, desc, &diff_id, &chain, progress)
                    .await
            }
        });
        let states = futures_util::future::try_join_all(jobs).await?;
        // One syncfs for every new layer (not one each): nothing is renamed into place before
        // all their content is on disk.
        if states.iter().any(|s| matches!(s, LayerState::Pending(..))) {
            let tmp = self.root.join("tmp");
            tokio::task::spawn_blocking(move || pipeline::sync_fs(&tmp))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(io_err("sync the unpacked layers"))?;
        }
        // Bottom-up: a layer's implicit directories take attributes from the ones below.
        let mut sizes = Vec::with_capacity(states.len());
        for (i, st) in states.into_iter().enumerate() {
            match st {
                LayerState::Present(size) => sizes.push(size),
                LayerState::Pending(dir, unpacked) => {
                    let lowers: Vec<PathBuf> = chain_ids[..i]
                        .iter()
                        .rev()
                        .map(|c| self.layer_dir(c))
                        .collect();
                    self.commit_layer(&chain_ids[i], dir, &unpacked, &lowers)?;
                    sizes.push(unpacked.size);
                }
            }
        }
        drop(layer_locks);

        let old = self.image(&manifest_digest);
        let img = Image {
            reference: r.to_string(),
            manifest_digest: manifest_digest.clone(),
            config: cfg.config.unwrap_or_default(),
            chain_ids,
            size: sizes.iter().sum(),
            platform: match &want.variant {
                Some(v) => format!("{}/{}/{v}", want.os, want.architecture),
                None => format!("{}/{}", want.os, want.architecture),
            },
            pulled_at: now_unix(),
            last_used: old.map(|o| o.last_used).unwrap_or(0),
        };
        let tmp = self.root.join("tmp");
        let body = serde_json::to_vec_pretty(&img).expect("image record serializes");
        write_atomic(&tmp, &self.image_path(&manifest_digest), &body)?;
        let rec = RefRecord {
            reference: r.to_string(),
            manifest_digest,
        };
        let body = serde_json::to_vec_pretty(&rec).expect("ref serializes");
        write_atomic(&tmp, &self.ref_path(&rec.reference), &body)?;
        Ok(img)
    }

    /// Follows indexes to the manifest of our platform; verifies digests on the way.
    async fn resolve(
        &self,
        registry: &RegistryClient,
        r: &Reference,
    ) -> Result<(Manifest, Digest), ImageError> {
        let reg_err = |source: RegistryError| ImageError::Registry {
            image: r.to_string(),
            source,
        };
        let mut reference = r.manifest_ref();
        for _depth in 0..5 {
            let (body, header_type, digest) = retry(|| registry.manifest(r, &reference))
                .await
                .map_err(reg_err)?;
            if let Ok(expected) = Digest::parse(&reference) {
                if expected != digest {
                    return Err(ImageError::Verify {
                        image: r.to_string(),
                        msg: format!("manifest digest is {digest}, expected {expected}"),
                    });
                }
            }
            let bad = |what: &str, e: serde_json::Error| ImageError::Verify {
                image: r.to_string(),
                msg: format!("bad {what}: {e}"),
            };
            match media_type_of(&body, &header_type).as_str() {
                manifest::OCI_INDEX | manifest::DOCKER_LIST => {
                    let idx: Index = serde_json::from_slice(&body).map_err(|e| bad("image index", e))?;
                    let d = manifest::choose_platform(&idx, &self.platform).ok_or_else(|| {
                        ImageError::Unsupported {
                            image: r.to_string(),
                            msg: format!("no image for platform {}", platform_string(&self.platform)),
                        }
                    })?;
                    reference = d.digest.to_string();
                }
                manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST => {
                    let m: Manifest = serde_json::from_slice(&body).map_err(|e| bad("manifest", e))?;
                    return Ok((m, digest));
                }
                manifest::DOCKER_SCHEMA1 | manifest::DOCKER_SCHEMA1_SIGNED => {
                    return Err(ImageError::Unsupported {
                        image: r.to_string(),
                        msg: "Docker schema 1 manifests are not supported; push the image again with a current client".into(),
                    })
                }
                other => {
                    return Err(ImageError::Unsupported {
                        image: r.to_string(),
                        msg: format!("unknown manifest media type {other:?}"),
                    })
                }
            }
        }
        Err(ImageError::Unsupported {
            image: r.to_string(),
            msg: "image indexes nested too deep".into(),
        })
    }

    /// Fetches one layer unless present. The caller holds the layer's lock.
    async fn ensure_layer(
        &self,
        registry: &RegistryClient,
        r: &Reference,
        desc: &manifest::Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
        progress: &dyn Progress,
    ) -> Result<LayerState, ImageError> {
        if self.layer_dir(chain_id).is_dir() {
            progress.layer_present(&desc.digest);
            let size = std::fs::read_to_string(self.size_file(chain_id))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            return Ok(LayerState::Present(size));
        }
        let mt = desc.media_type.as_str();
        if mt.contains("encrypted") {
            return Err(ImageError::Unsupported {
                image: r.to_string(),
                msg: format!("layer {}: encrypted layers are not supported", desc.digest),
            });
        }
        if !mt.is_empty() && !mt.contains("tar") {
            return Err(ImageError::Unsupported {
                image: r.to_string(),
                msg: format!("layer {}: unknown media type {mt:?}", desc.digest),
            });
        }
        let _slot = self.layer_slots.acquire().await.expect("semaphore open");
        let dir = PendingDir(
            self.root
                .join("tmp")
                .join(format!("{}.layer", random_hex())),
        );
        let limits = self.unpack.clone();
        match pipeline::fetch_layer(registry, r, desc, diff_id, dir.0.clone(), limits, progress)
            .await
        {
            Ok(unpacked) => Ok(LayerState::Pending(dir, unpacked)),
            Err(LayerError::Registry(source)) => Err(ImageError::Registry {
                image: r.to_string(),
                source,
            }),
            Err(other) => Err(ImageError::Verify {
                image: r.to_string(),
                msg: format!("layer {}: {other}", desc.digest),
            }),
        }
    }

    fn size_file(&self, chain_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(format!("{}.size", chain_id.hex()))
    }

    /// Makes a pending layer visible: implicit directories take their attributes from the
    /// layers below (`lowers`, topmost first), then the size is written and the directory
    /// renamed into place.
    fn commit_layer(
        &self,
        chain_id: &Digest,
        dir: PendingDir,
        unpacked: &pipeline::Unpacked,
        lowers: &[PathBuf],
    ) -> Result<(), ImageError> {
        let final_dir = self.layer_dir(chain_id);
        let what = format!("commit layer {}", final_dir.display());
        for rel in &unpacked.implicit_dirs {
            if let Some(src) = lowers.iter().find_map(|l| real_dir(l, rel)) {
                copy_dir_attributes(&src, &dir.0.join(rel))
                    .map_err(io_err(format!("{what}: attributes of /{}", rel.display())))?;
            }
        }
        std::fs::write(self.size_file(chain_id), unpacked.size.to_string())
            .map_err(io_err(&what))?;
        std::fs::rename(&dir.0, &final_dir).map_err(io_err(&what))?;
        dir.disarm();
        Ok(())
    }
}

/// What `ensure_layer` found or made.
enum LayerState {
    Present(u64),
    Pending(PendingDir, pipeline::Unpacked),
}

/// An unpack directory in tmp/, removed unless it was committed.
struct PendingDir(PathBuf);

impl PendingDir {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `base/rel` when every component of it is a real directory (no symlink anywhere).
fn real_dir(base: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = base.to_path_buf();
    if !std::fs::symlink_metadata(&cur).ok()?.is_dir() {
        return None;
    }
    for c in rel.components() {
        cur.push(c);
        if !std::fs::symlink_metadata(&cur).ok()?.is_dir() {
            return None;
        }
    }
    Some(cur)
}

/// Owner, mode and times of the directory `src` onto the directory `dst`.
fn copy_dir_attributes(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::symlink_metadata(src)?;
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    let ts = |s: i64, ns: i64| libc::timespec {
        tv_sec: s as _,
        tv_nsec: ns as _,
    };
    let times = [ts(m.atime(), m.atime_nsec()), ts(m.mtime(), m.mtime_nsec())];
    let c = std::ffi::CString::new(dst.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Retries transient registry failures with backoff.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if transient(&e) && attempt + 1 < MAX_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

pub fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn read_dir_json<T: serde::de::DeserializeOwned>(dir: &Path) -> Vec<T> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| read_json(&e.path()))
        .collect()
}

/// The manifest's media type: the body's `mediaType` when present, else the header's.
fn media_type_of(body: &[u8], header: &str) -> String {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(p) => {
            if let Some(mt) = p.media_type.filter(|m| !m.is_empty()) {
                return mt;
            }
            if p.schema_version == Some(1) {
                return manifest::DOCKER_SCHEMA1.into();
            }
            if !header.is_empty() && header != "application/json" {
                return header.to_string();
            }
            // OCI documents may omit mediaType: tell index from manifest by shape.
            if p.manifests.is_some() {
                manifest::OCI_INDEX.into()
            } else {
                manifest::OCI_MANIFEST.into()
            }
        }
        Err(_) => header.to_string(),
    }
}
