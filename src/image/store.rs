//! The local image store under the state directory:
//!
//! ```text
//! <state>/layers/<chain-id hex>/   one unpacked layer (an overlay lower directory)
//! <state>/images/<manifest hex>.json   what an image needs to run (config + chain IDs)
//! <state>/tmp/                      downloads and unpacks in progress
//! ```
//!
//! A layer directory appears only by an atomic rename after its content was synced, so a
//! crash never leaves a half layer that counts as present.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::manifest::{self, ConfigFile, ImageConfig, Index, Manifest};
use super::reference::Reference;
use super::registry::{read_capped, root_cause, Registry, RegistryClient, RegistryError};
use super::unpack::apply_layer;
use super::ImageError;

/// What a container needs of its image, kept on disk per manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub reference: String,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    /// Chain IDs, bottom layer first.
    pub chain_ids: Vec<Digest>,
}

pub struct Store {
    root: PathBuf,
    registry: RegistryClient,
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("getrandom");
    hex::encode(b)
}

impl Store {
    /// Opens (creating) the store; `insecure` lists registries besides loopback ones that are
    /// spoken to in plain HTTP.
    pub fn open(state_dir: &Path, insecure: Vec<String>) -> Result<Store, ImageError> {
        let root = state_dir.to_path_buf();
        for d in ["layers", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::Io {
                what: format!("create {}", p.display()),
                source: e,
            })?;
        }
        let registry = RegistryClient::new(insecure).map_err(|e| ImageError::Registry {
            image: String::new(),
            source: e,
        })?;
        Ok(Store { root, registry })
    }

    /// The overlay lower directory of a layer stack.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    /// Resolves `image` at the registry and makes sure all its layers are unpacked locally.
    pub async fn pull(&self, image: &str) -> Result<Image, ImageError> {
        let r = Reference::parse(image).map_err(|msg| ImageError::Reference {
            image: image.to_string(),
            msg,
        })?;
        let reg_err = |source: RegistryError| ImageError::Registry {
            image: r.to_string(),
            source,
        };
        let want = manifest::host_platform();
        let mut reference = r.manifest_ref();
        let mut depth = 0;
        let (manifest, manifest_digest) = loop {
            let (body, header_type, digest) = self
                .registry
                .manifest(&r, &reference)
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
            let media_type = media_type_of(&body, &header_type);
            match media_type.as_str() {
                manifest::OCI_INDEX | manifest::DOCKER_LIST => {
                    depth += 1;
                    if depth > 4 {
                        return Err(ImageError::Unsupported {
                            image: r.to_string(),
                            msg: "image indexes nested too deep".into(),
                        });
                    }
                    let idx: Index = serde_json::from_slice(&body).map_err(|e| ImageError::Verify {
                        image: r.to_string(),
                        msg: format!("bad image index: {e}"),
                    })?;
                    let d = manifest::choose_platform(&idx, &want).ok_or_else(|| {
                        ImageError::Unsupported {
                            image: r.to_string(),
                            msg: format!(
                                "no image for platform {}/{}",
                                want.os, want.architecture
                            ),
                        }
                    })?;
                    reference = d.digest.to_string();
                }
                manifest::OCI_MANIFEST | manifest::DOCKER_MANIFEST => {
                    let m: Manifest = serde_json::from_slice(&body).map_err(|e| ImageError::Verify {
                        image: r.to_string(),
                        msg: format!("bad manifest: {e}"),
                    })?;
                    break (m, digest);
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
        };

        // The config.
        if manifest.config.size > manifest::MAX_CONFIG_BYTES {
            return Err(ImageError::Verify {
                image: r.to_string(),
                msg: format!("config of {} bytes is too large", manifest.config.size),
            });
        }
        let resp = self
            .registry
            .blob(&r, &manifest.config.digest)
            .await
            .map_err(reg_err)?;
        let cfg_bytes = read_capped(resp, manifest.config.size, "config")
            .await
            .map_err(reg_err)?;
        if Digest::of(&cfg_bytes) != manifest.config.digest {
            return Err(ImageError::Verify {
                image: r.to_string(),
                msg: format!("config {}: digest mismatch", manifest.config.digest),
            });
        }
        let cfg: ConfigFile =
            serde_json::from_slice(&cfg_bytes).map_err(|e| ImageError::Verify {
                image: r.to_string(),
                msg: format!("bad image config: {e}"),
            })?;
        if (!cfg.os.is_empty() && cfg.os != want.os)
            || (!cfg.architecture.is_empty() && cfg.architecture != want.architecture)
        {
            return Err(ImageError::Unsupported {
                image: r.to_string(),
                msg: format!(
                    "image is for {}/{}, this host is {}/{}",
                    cfg.os, cfg.architecture, want.os, want.architecture
                ),
            });
        }
        if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Verify {
                image: r.to_string(),
                msg: format!(
                    "manifest has {} layers but the config lists {} diff IDs",
                    manifest.layers.len(),
                    cfg.rootfs.diff_ids.len()
                ),
            });
        }
        let chain_ids = Digest::chain_ids(&cfg.rootfs.diff_ids);

        let jobs = manifest.layers.iter().enumerate().map(|(i, desc)| {
            let diff_id = cfg.rootfs.diff_ids[i].clone();
            let chain = chain_ids[i].clone();
            let r = &r;
            async move { self.ensure_layer(r, desc, &diff_id, &chain).await }
        });
        futures_util::future::try_join_all(jobs).await?;

        let img = Image {
            reference: r.to_string(),
            manifest_digest,
            config: cfg.config.unwrap_or_default(),
            chain_ids,
        };
        self.save_record(&img)?;
        Ok(img)
    }

    fn save_record(&self, img: &Image) -> Result<(), ImageError> {
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", img.manifest_digest.hex()));
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.image", random_hex()));
        let io = |e| ImageError::Io {
            what: format!("write {}", path.display()),
            source: e,
        };
        let body = serde_json::to_vec_pretty(img).expect("image record serializes");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).and_then(|_| f.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    async fn ensure_layer(
        &self,
        r: &Reference,
        desc: &manifest::Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
    ) -> Result<(), ImageError> {
        let final_dir = self.layer_dir(chain_id);
        if final_dir.is_dir() {
            return Ok(());
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
        let tag = random_hex();
        let blob_path = self.root.join("tmp").join(format!("{tag}.blob"));
        let unpack_dir = self.root.join("tmp").join(format!("{tag}.layer"));
        let result = self
            .fetch_and_unpack(r, desc, diff_id, &blob_path, &unpack_dir, &final_dir)
            .await;
        let _ = std::fs::remove_file(&blob_path);
        if unpack_dir.exists() {
            let _ = std::fs::remove_dir_all(&unpack_dir);
        }
        result
    }

    async fn fetch_and_unpack(
        &self,
        r: &Reference,
        desc: &manifest::Descriptor,
        diff_id: &Digest,
        blob_path: &Path,
        unpack_dir: &Path,
        final_dir: &Path,
    ) -> Result<(), ImageError> {
        let image = r.to_string();
        let layer = desc.digest.to_string();
        let layer_err = |msg: String| ImageError::Verify {
            image: image.clone(),
            msg: format!("layer {layer}: {msg}"),
        };
        // Download, hashing as the bytes arrive, never past the descriptor's size.
        let resp = self
            .registry
            .blob(r, &desc.digest)
            .await
            .map_err(|e| ImageError::Registry {
                image: image.clone(),
                source: e,
            })?;
        let mut file = tokio::fs::File::create(blob_path)
            .await
            .map_err(|e| ImageError::Io {
                what: format!("create {}", blob_path.display()),
                source: e,
            })?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| layer_err(format!("download: {}", root_cause(&e))))?;
            total += chunk.len() as u64;
            if total > desc.size {
                return Err(layer_err(format!(
                    "registry sent more than the {} bytes announced",
                    desc.size
                )));
            }
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| ImageError::Io {
                    what: format!("write {}", blob_path.display()),
                    source: e,
                })?;
        }
        drop(file);
        if total != desc.size {
            return Err(layer_err(format!(
                "got {total} bytes, expected {}",
                desc.size
            )));
        }
        let got = Digest::from_hasher(hasher);
        if got != desc.digest {
            return Err(layer_err(format!("digest mismatch: got {got}")));
        }

        // Decompress, hash (diff ID) and apply on a blocking thread.
        let blob_path = blob_path.to_path_buf();
        let unpack_dir = unpack_dir.to_path_buf();
        let final_dir = final_dir.to_path_buf();
        let diff_id = diff_id.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir(&unpack_dir)
                .map_err(|e| format!("create {}: {e}", unpack_dir.display()))?;
            let mut f = std::fs::File::open(&blob_path).map_err(|e| e.to_string())?;
            let mut magic = [0u8; 4];
            let n = read_full(&mut f, &mut magic).map_err(|e| e.to_string())?;
            let head = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
            let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
                Box::new(flate2::read::MultiGzDecoder::new(head))
            } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
                return Err("zstd layers are not supported yet".into());
            } else {
                Box::new(head)
            };
            let mut hashing = HashingReader {
                inner: reader,
                hasher: Sha256::new(),
            };
            apply_layer(&mut hashing, &unpack_dir).map_err(|e| e.to_string())?;
            // Trailing bytes after the tar end belong to the diff ID too.
            std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| e.to_string())?;
            let got = Digest::from_hasher(hashing.hasher);
            if got != diff_id {
                return Err(format!(
                    "diff ID mismatch: got {got}, config says {diff_id}"
                ));
            }
            sync_fs(&unpack_dir).map_err(|e| format!("sync: {e}"))?;
            match std::fs::rename(&unpack_dir, &final_dir) {
                Ok(()) => Ok(()),
                // Another pull finished the same layer first: theirs is as good as ours.
                Err(_) if final_dir.is_dir() => Ok(()),
                Err(e) => Err(format!("rename into place: {e}")),
            }
        })
        .await
        .map_err(|e| layer_err(format!("unpack task failed: {e}")))?
        .map_err(layer_err)
    }
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn sync_fs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
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
