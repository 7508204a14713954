//! `skiff pull`, `skiff images`, `skiff rmi`, `skiff prune`, and the image options that
//! `skiff run` shares.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;

use super::tasks::parse_duration;
use super::EXIT_RUNNER_ERROR;
use crate::image::digest::Digest;
use crate::image::gc::{CleanupPolicy, Removed};
use crate::image::manifest::Platform;
use crate::image::pipeline::{Progress, Quiet};
use crate::image::store::now_unix;
use crate::image::unpack::UnpackLimits;
use crate::image::{Store, StoreOptions};
use crate::task::record::images_in_use;

/// Registry and platform options of every command that pulls.
#[derive(Args, Clone)]
pub struct PullOpts {
    /// A registry (host[:port]) to reach over plain HTTP although it is not on loopback.
    /// Repeatable; SKIFF_INSECURE_REGISTRIES takes a comma-separated list.
    #[arg(
        long = "insecure-registry",
        env = "SKIFF_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// The platform to pull from a multi-platform image: os/arch[/variant] (default: this host's).
    #[arg(long)]
    platform: Option<String>,
    /// Layers downloaded at once.
    #[arg(long, env = "SKIFF_MAX_CONCURRENT_DOWNLOADS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=32))]
    max_concurrent_downloads: u64,
    /// Largest uncompressed layer (tar bytes) unpacked.
    #[arg(long, env = "SKIFF_UNPACK_MAX_BYTES", default_value_t = UnpackLimits::default().max_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    unpack_max_bytes: u64,
    /// Most entries in one layer.
    #[arg(long, env = "SKIFF_UNPACK_MAX_ENTRIES", default_value_t = UnpackLimits::default().max_entries,
          value_parser = clap::value_parser!(u64).range(1..))]
    unpack_max_entries: u64,
    /// Longest entry name or link target in a layer, in bytes.
    #[arg(long, env = "SKIFF_UNPACK_MAX_PATH_LEN", default_value_t = UnpackLimits::default().max_path_len as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    unpack_max_path_len: u64,
    /// Most bytes of xattr names and values on one layer entry.
    #[arg(long, env = "SKIFF_UNPACK_MAX_XATTR_BYTES", default_value_t = UnpackLimits::default().max_xattr_bytes as u64,
          value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    unpack_max_xattr_bytes: u64,
}

pub fn parse_platform(s: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let ok = |x: &&str| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match parts.as_slice() {
        [os, arch] if ok(os) && ok(arch) => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: None,
        }),
        [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: Some(v.to_string()),
        }),
        _ => Err(format!(
            "--platform {s:?}: expected os/arch[/variant], like linux/arm64 or linux/arm/v7"
        )),
    }
}

impl PullOpts {
    pub fn store_options(&self) -> Result<StoreOptions, String> {
        Ok(StoreOptions {
            insecure: self.insecure_registries.clone(),
            max_concurrent_layers: self.max_concurrent_downloads as usize,
            platform: self.platform.as_deref().map(parse_platform).transpose()?,
            unpack: UnpackLimits {
                max_bytes: self.unpack_max_bytes,
                max_entries: self.unpack_max_entries,
                max_path_len: self.unpack_max_path_len as usize,
                max_xattr_bytes: self.unpack_max_xattr_bytes as usize,
            },
        })
    }
}

/// The automatic cleanup policy from the ECS agent's variables: ECS_DISABLE_IMAGE_CLEANUP
/// (true/false), ECS_IMAGE_CLEANUP_INTERVAL (a Go duration, 30m; like the agent, a value
/// under 10m gives the default), ECS_IMAGE_MINIMUM_CLEANUP_AGE (1h),
/// ECS_NUM_IMAGES_DELETE_PER_CYCLE (5; at least 1).
pub fn cleanup_policy_from_env() -> Result<CleanupPolicy, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut p = CleanupPolicy::default();
    if let Some(v) = var("ECS_DISABLE_IMAGE_CLEANUP") {
        p.disabled = match v.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(format!(
                    "ECS_DISABLE_IMAGE_CLEANUP={v:?}: expected true or false"
                ))
            }
        };
    }
    if let Some(v) = var("ECS_IMAGE_CLEANUP_INTERVAL") {
        let d = parse_duration(&v).map_err(|e| format!("ECS_IMAGE_CLEANUP_INTERVAL={e}"))?;
        if d < crate::image::gc::MINIMUM_INTERVAL {
            tracing::warn!(value = %v, "ECS_IMAGE_CLEANUP_INTERVAL is under 10m; using 30m");
        } else {
            p.interval = d;
        }
    }
    if let Some(v) = var("ECS_IMAGE_MINIMUM_CLEANUP_AGE") {
        p.minimum_age =
            parse_duration(&v).map_err(|e| format!("ECS_IMAGE_MINIMUM_CLEANUP_AGE={e}"))?;
    }
    if let Some(v) = var("ECS_NUM_IMAGES_DELETE_PER_CYCLE") {
        p.images_per_cycle = match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "ECS_NUM_IMAGES_DELETE_PER_CYCLE={v:?}: expected a whole number of at least 1"
                ))
            }
        };
    }
    Ok(p)
}

/// Starts the automatic image cleanup cycle when one is due (see
/// [`crate::image::gc::maybe_cleanup`]); `skiff run` and `skiff pull` call it once their own
/// work is done. The cycle runs in a process of its own (`skiff prune --auto --if-due`, in
/// its own process group, output to `<state>/image-cleanup.log`) that this command does not
/// wait for: removing a large image takes seconds on a busy disk. A failure is a warning: the
/// command itself succeeded.
pub fn cleanup_if_due(state_dir: &Path) {
    use std::os::unix::process::CommandExt;
    let policy = match cleanup_policy_from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skiff: warning: image cleanup: {e}");
            return;
        }
    };
    // The usual case (not due) costs one small read.
    if !crate::image::gc::cleanup_due(state_dir, &policy) {
        return;
    }
    let started = std::env::current_exe().and_then(|exe| {
        let log = std::fs::File::create(state_dir.join("image-cleanup.log"))?;
        std::process::Command::new(exe)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["prune", "--auto", "--if-due"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
    });
    if let Err(e) = started {
        eprintln!("skiff: warning: image cleanup: start it: {e}");
    }
}

use super::human_bytes as human;

fn short(d: &Digest) -> String {
    d.hex()[..12].to_string()
}

/// Progress on a terminal: one line per layer, redrawn in place.
struct Bars {
    state: Mutex<BarState>,
}

struct BarState {
    layers: Vec<(Digest, u64, u64, &'static str)>,
    drawn: usize,
    last: Instant,
}

impl Bars {
    fn update(
        &self,
        d: &Digest,
        f: impl FnOnce(&mut (Digest, u64, u64, &'static str)),
        force: bool,
    ) {
        let mut s = self.state.lock().unwrap();
        if !s.layers.iter().any(|l| &l.0 == d) {
            s.layers.push((d.clone(), 0, 0, "waiting"));
        }
        let l = s.layers.iter_mut().find(|l| &l.0 == d).unwrap();
        f(l);
        if !force && s.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        s.last = Instant::now();
        let mut out = String::new();
        if s.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", s.drawn));
        }
        for (d, size, done, what) in &s.layers {
            let width = 30usize;
            let filled = if *size > 0 {
                (*done as f64 / *size as f64 * width as f64) as usize
            } else {
                0
            };
            out.push_str(&format!(
                "\x1b[2K{} [{}{}] {:>9} / {:<9} {what}\n",
                short(d),
                "=".repeat(filled.min(width)),
                " ".repeat(width - filled.min(width)),
                human(*done),
                human(*size)
            ));
        }
        s.drawn = s.layers.len();
        let _ = std::io::stderr().write_all(out.as_bytes());
    }
}

impl Progress for Bars {
    fn layer_start(&self, d: &Digest, size: u64) {
        self.update(
            d,
            |l| {
                l.1 = size;
                l.3 = "downloading"
            },
            true,
        );
    }
    fn layer_bytes(&self, d: &Digest, done: u64) {
        self.update(d, |l| l.2 = done, false);
    }
    fn layer_retry(&self, d: &Digest, _why: &str) {
        self.update(d, |l| l.3 = "retrying", true);
    }
    fn layer_done(&self, d: &Digest) {
        self.update(
            d,
            |l| {
                l.2 = l.1;
                l.3 = "done"
            },
            true,
        );
    }
    fn layer_present(&self, d: &Digest) {
        self.update(d, |l| l.3 = "already present", true);
    }
}

/// Progress when stderr is not a terminal: a line per event.
struct Lines;

impl Progress for Lines {
    fn layer_start(&self, d: &Digest, size: u64) {
        eprintln!("{}: downloading {}", short(d), human(size));
    }
    fn layer_retry(&self, d: &Digest, why: &str) {
        eprintln!("{}: retrying: {why}", short(d));
    }
    fn layer_done(&self, d: &Digest) {
        eprintln!("{}: done", short(d));
    }
    fn layer_present(&self, d: &Digest) {
        eprintln!("{}: already present", short(d));
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// The image: [registry[:port]/]repo[:tag][@sha256:...]
    image: String,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    opts: PullOpts,
}

pub async fn pull(args: PullArgs, state_dir: &Path) -> i32 {
    let fail = |e: String| {
        eprintln!("skiff: {e}");
        EXIT_RUNNER_ERROR
    };
    let opts = match args.opts.store_options() {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let store = match Store::open(state_dir, opts) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let progress: Box<dyn Progress> = if args.quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars {
            state: Mutex::new(BarState {
                layers: vec![],
                drawn: 0,
                last: Instant::now(),
            }),
        })
    } else {
        Box::new(Lines)
    };
    let started = Instant::now();
    match store.pull(&args.image, progress.as_ref()).await {
        Ok(img) => {
            if !args.quiet {
                eprintln!(
                    "pulled {} ({}, {}, {} layers, {}) in {:.1}s",
                    img.reference,
                    img.manifest_digest,
                    img.platform,
                    img.chain_ids.len(),
                    human(img.size),
                    started.elapsed().as_secs_f64()
                );
            }
            println!("{}", img.manifest_digest);
            cleanup_if_due(state_dir);
            0
        }
        Err(e) => fail(format!("CannotPullContainerError: {e}")),
    }
}

#[derive(Args)]
pub struct ImagesArgs {
    /// JSON lines.
    #[arg(long)]
    json: bool,
}

pub fn images(args: ImagesArgs, state_dir: &Path) -> i32 {
    let store = match Store::open(state_dir, StoreOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skiff: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    let in_use = images_in_use(state_dir);
    let now = now_unix();
    let ago = |t: u64| {
        if t == 0 {
            return "never".to_string();
        }
        let s = now.saturating_sub(t);
        match s {
            0..=59 => format!("{s}s ago"),
            60..=3599 => format!("{}m ago", s / 60),
            3600..=86_399 => format!("{}h ago", s / 3600),
            _ => format!("{}d ago", s / 86_400),
        }
    };
    if !args.json {
        println!(
            "{:<50} {:<14} {:>9} {:<14} {:<10} {:<5}",
            "REFERENCE", "DIGEST", "SIZE", "PULLED", "USED", "IN USE"
        );
    }
    for (img, names) in store.list() {
        let used = in_use.contains(&img.manifest_digest.to_string());
        if args.json {
            let v = serde_json::json!({
                "references": names,
                "digest": img.manifest_digest,
                "size": img.size,
                "platform": img.platform,
                "layers": img.chain_ids.len(),
                "pulled_at": img.pulled_at,
                "last_used": img.last_used,
                "in_use": used,
            });
            println!("{v}");
            continue;
        }
        let names = if names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            names
        };
        for n in names {
            println!(
                "{:<50} {:<14} {:>9} {:<14} {:<10} {:<5}",
                n,
                short(&img.manifest_digest),
                human(img.size),
                ago(img.pulled_at),
                ago(img.last_used),
                if used { "yes" } else { "" }
            );
        }
    }
    0
}

fn report(r: &Removed) {
    for x in &r.references {
        println!("untagged {x}");
    }
    for x in &r.images {
        println!("deleted {x}");
    }
    println!("{} layers removed, {} freed", r.layers, human(r.bytes));
}

#[derive(Args)]
pub struct RmiArgs {
    /// References (name:tag) or manifest digests.
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn rmi(args: RmiArgs, state_dir: &Path) -> i32 {
    let result = async {
        let store = Store::open(state_dir, StoreOptions::default())?;
        store
            .remove(&args.images, || images_in_use(state_dir))
            .await
    }
    .await;
    match result {
        Ok(r) => {
            report(&r);
            0
        }
        Err(e) => {
            eprintln!("skiff: rmi: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}

#[derive(Args)]
pub struct PruneArgs {
    /// Run one cycle of the ECS agent's cleanup policy instead: remove up to --max images
    /// not used by a task for --min-age, least recently used first.
    #[arg(long)]
    auto: bool,
    /// How long an image must be unused: a duration like 1h, 90m or 0
    /// (ECS_IMAGE_MINIMUM_CLEANUP_AGE).
    #[arg(long, env = "ECS_IMAGE_MINIMUM_CLEANUP_AGE", default_value = "1h",
          value_parser = parse_duration)]
    min_age: Duration,
    /// Images removed per cycle (ECS_NUM_IMAGES_DELETE_PER_CYCLE).
    #[arg(long, env = "ECS_NUM_IMAGES_DELETE_PER_CYCLE", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    max: u64,
    /// With --auto: only when the last automatic cycle is older than
    /// ECS_IMAGE_CLEANUP_INTERVAL and ECS_DISABLE_IMAGE_CLEANUP is not true, and only if no
    /// pull holds the store right now (then nothing happens); renews the stamp. What `skiff
    /// run` and `skiff pull` start in the background; fit for cron too.
    #[arg(long, requires = "auto")]
    if_due: bool,
}

pub async fn prune(args: PruneArgs, state_dir: &Path) -> i32 {
    let env_policy = match args.if_due.then(cleanup_policy_from_env).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skiff: prune: {e}");
            return EXIT_RUNNER_ERROR;
        }
    };
    let result = async {
        let store = Store::open(state_dir, StoreOptions::default())?;
        if let Some(env_policy) = env_policy {
            let policy = CleanupPolicy {
                minimum_age: args.min_age,
                images_per_cycle: args.max as usize,
                ..env_policy
            };
            return tokio::task::block_in_place(|| {
                crate::image::gc::maybe_cleanup(&store, &policy, || images_in_use(state_dir))
            });
        }
        let in_use = || images_in_use(state_dir);
        if args.auto {
            let policy = CleanupPolicy {
                minimum_age: args.min_age,
                images_per_cycle: args.max as usize,
                ..CleanupPolicy::default()
            };
            store.cleanup(in_use, &policy).await.map(Some)
        } else {
            store.prune(in_use).await.map(Some)
        }
    }
    .await;
    match result {
        Ok(Some(r)) => {
            report(&r);
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("skiff: prune: {e}");
            EXIT_RUNNER_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::store::platform_string;

    #[test]
    fn platforms() {
        let p = parse_platform("linux/arm/v7").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        assert_eq!(
            platform_string(&parse_platform("linux/amd64").unwrap()),
            "linux/amd64"
        );
        assert!(parse_platform("linux").is_err());
        assert!(parse_platform("linux//x").is_err());
    }
}
