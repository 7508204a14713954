//! One layer, streamed: download → sha256 of the compressed bytes → decompress (gzip,
//! zstd or none, sniffed from the magic bytes) → sha256 of the tar stream (diff ID) → apply,
//! with a bounded channel between the network and the blocking unpacker so that memory stays
//! flat whatever the layer's size. Broken downloads resume where they stopped (Range, or by
//! skipping what was already received when the registry ignores Range); transient failures
//! are retried with backoff. Nothing is renamed into place here: the caller does that once
//! both digests held and the file system was synced.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::digest::Digest;
use super::manifest::Descriptor;
use super::reference::Reference;
use super::registry::{root_cause, Registry, RegistryError};
use super::unpack::{apply_layer_tracked, UnpackLimits};

/// Chunks in flight between the download and the unpacker (each up to a network read).
const CHANNEL_CHUNKS: usize = 16;
/// Attempts for one blob before giving up on transient failures.
pub const MAX_ATTEMPTS: u32 = 6;

/// Observes a pull's progress (a terminal's bars, plain lines, or nothing).
pub trait Progress: Send + Sync {
    fn layer_start(&self, _digest: &Digest, _size: u64) {}
    fn layer_bytes(&self, _digest: &Digest, _done: u64) {}
    fn layer_retry(&self, _digest: &Digest, _why: &str) {}
    fn layer_done(&self, _digest: &Digest) {}
    fn layer_present(&self, _digest: &Digest) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("{0}")]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Verify(String),
    #[error("unpack: {0}")]
    Unpack(String),
}

/// Errors worth another attempt: the network, timeouts, 5xx and 429.
pub fn transient(e: &RegistryError) -> bool {
    match e {
        RegistryError::Unreachable { .. } => true,
        RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5_000))
}

/// Feeds the blocking unpacker from the channel.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// Reads the first bytes to tell the compression, then gives them back in front of the rest.
fn decompressor(mut r: ChannelReader) -> std::io::Result<Box<dyn Read>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(r);
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let mut d = zstd::stream::read::Decoder::new(head)?;
        // Bound the decoder's window (128 MiB): a hostile frame cannot demand more.
        d.window_log_max(27)?;
        Box::new(d)
    } else {
        Box::new(head)
    })
}

/// Decompressed blocks in flight between the inflating thread and the applying thread.
const INFLATED_BLOCKS: usize = 8;
const INFLATE_BLOCK: usize = 256 * 1024;

/// Reads the blocks the inflating thread sends.
struct BlockReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The blocking half, on two threads so that inflating overlaps applying: this one applies,
/// a second one decompresses and hashes the tar stream (diff ID) to its very end.
fn unpack_stream(
    rx: mpsc::Receiver<Result<Bytes, String>>,
    dir: &Path,
    diff_id: &Digest,
    limits: UnpackLimits,
) -> Result<Unpacked, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    std::fs::create_dir(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let max_bytes = limits.max_bytes;
    let (btx, brx) = std::sync::mpsc::sync_channel::<Vec<u8>>(INFLATED_BLOCKS);
    let apply_failed = std::sync::Arc::new(AtomicBool::new(false));
    let failed = apply_failed.clone();
    let inflater = std::thread::Builder::new()
        .name("skiff-inflate".into())
        .spawn(move || -> Result<(Digest, u64), String> {
            let reader = ChannelReader {
                rx,
                buf: Bytes::new(),
            };
            let mut inner = decompressor(reader).map_err(|e| format!("decompress: {e}"))?;
            let mut hasher = Sha256::new();
            let mut total: u64 = 0;
            let mut sending = true;
            loop {
                let mut block = vec![0u8; INFLATE_BLOCK];
                let mut n = 0;
                while n < block.len() {
                    match inner.read(&mut block[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("decompress: {e}")),
                    }
                }
                if n == 0 {
                    break;
                }
                block.truncate(n);
                hasher.update(&block);
                total += n as u64;
                // Trailing bytes after the tar end count against the same cap.
                if total > max_bytes {
                    return Err(format!(
                        "the uncompressed layer exceeds max_bytes ({max_bytes})"
                    ));
                }
                if sending && btx.send(block).is_err() {
                    // The applier is done: go on hashing to the end, unless it failed.
                    if failed.load(Ordering::Relaxed) {
                        return Err("stopped".into());
                    }
                    sending = false;
                }
            }
            Ok((Digest::from_hasher(hasher), total))
        })
        .map_err(|e| format!("start the inflating thread: {e}"))?;
    let mut blocks = BlockReader {
        rx: brx,
        buf: Vec::new(),
        pos: 0,
    };
    let applied = apply_layer_tracked(&mut blocks, dir, &limits).map_err(|e| e.to_string());
    if applied.is_err() {
        apply_failed.store(true, Ordering::Relaxed);
    }
    drop(blocks);
    let inflated = inflater
        .join()
        .map_err(|_| "the inflating thread panicked".to_string())?;
    let implicit_dirs = applied?;
    let (got, size) = inflated?;
    if got != *diff_id {
        return Err(format!(
            "diff ID mismatch: got {got}, the config says {diff_id}"
        ));
    }
    Ok(Unpacked {
        size,
        implicit_dirs,
    })
}

/// A layer unpacked into its directory, not yet visible.
pub struct Unpacked {
    /// Uncompressed bytes.
    pub size: u64,
    /// Directories the layer did not name (relative paths): their attributes come from below.
    pub implicit_dirs: Vec<PathBuf>,
}

/// Flushes the file system holding `dir`: the caller does it once for all the layers of a
/// pull, before any of them is renamed into place.
pub fn sync_fs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Downloads `desc` and unpacks it into `dir` (created here). Returns the uncompressed size.
pub async fn fetch_layer<R: Registry>(
    registry: &R,
    r: &Reference,
    desc: &Descriptor,
    diff_id: &Digest,
    dir: PathBuf,
    limits: UnpackLimits,
    progress: &dyn Progress,
) -> Result<Unpacked, LayerError> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(CHANNEL_CHUNKS);
    let diff = diff_id.clone();
    let unpack_dir = dir.clone();
    let unpacker =
        tokio::task::spawn_blocking(move || unpack_stream(rx, &unpack_dir, &diff, limits));
    let downloaded = download(registry, r, desc, &tx, progress).await;
    if let Err(e) = &downloaded {
        // Stop the unpacker; it must not take a partial stream for a whole one.
        let _ = tx.send(Err(e.to_string())).await;
    }
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| LayerError::Unpack(format!("unpack task failed: {e}")))?;
    match (downloaded, unpacked) {
        (Ok(()), Ok(size)) => Ok(size),
        // A download failure explains the unpacker's error.
        (Err(LayerError::Unpack(_)), Err(u)) => Err(LayerError::Unpack(u)),
        (Err(d), _) => Err(d),
        (Ok(()), Err(u)) => Err(LayerError::Unpack(u)),
    }
}

async fn download<R: Registry>(
    registry: &R,
    r: &Reference,
    desc: &Descriptor,
    tx: &mpsc::Sender<Result<Bytes, String>>,
    progress: &dyn Progress,
) -> Result<(), LayerError> {
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut attempt = 0;
    progress.layer_start(&desc.digest, desc.size);
    loop {
        let resp = match registry.blob_from(r, &desc.digest, got).await {
            Ok(resp) => resp,
            Err(e) if transient(&e) && attempt + 1 < MAX_ATTEMPTS => {
                progress.layer_retry(&desc.digest, &e.to_string());
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // A registry that ignores Range sends everything again: skip what we have.
        let mut skip = if got > 0 && resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            got
        } else {
            0
        };
        let mut stream = resp.bytes_stream();
        let mut broken = None;
        while let Some(chunk) = stream.next().await {
            let mut chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    broken = Some(root_cause(&e));
                    break;
                }
            };
            if skip > 0 {
                let k = (skip as usize).min(chunk.len());
                chunk = chunk.slice(k..);
                skip -= k as u64;
            }
            if chunk.is_empty() {
                continue;
            }
            got += chunk.len() as u64;
            if got > desc.size {
                return Err(LayerError::Verify(format!(
                    "the registry sent more than the {} bytes announced",
                    desc.size
                )));
            }
            hasher.update(&chunk);
            if tx.send(Ok(chunk)).await.is_err() {
                // The unpacker stopped: its error is the one to report.
                return Err(LayerError::Unpack("stopped".into()));
            }
            progress.layer_bytes(&desc.digest, got);
        }
        match broken {
            None if got == desc.size => break,
            None => {
                broken = Some(format!(
                    "connection closed after {got} of {} bytes",
                    desc.size
                ))
            }
            Some(_) => {}
        }
        let why = broken.unwrap_or_default();
        if attempt + 1 >= MAX_ATTEMPTS {
            return Err(LayerError::Verify(format!(
                "download failed {MAX_ATTEMPTS} times: {why}"
            )));
        }
        progress.layer_retry(&desc.digest, &why);
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
    let digest = Digest::from_hasher(hasher);
    if digest != desc.digest {
        return Err(LayerError::Verify(format!("digest mismatch: got {digest}")));
    }
    progress.layer_done(&desc.digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_and_backoff() {
        let s = |status| RegistryError::Status {
            what: "x".into(),
            status,
            msg: "m".into(),
        };
        assert!(transient(&s(503)));
        assert!(transient(&s(429)));
        assert!(!transient(&s(404)));
        assert!(transient(&RegistryError::Unreachable {
            host: "h".into(),
            msg: "reset".into()
        }));
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(10), Duration::from_millis(5000));
    }

    fn channel_of(chunks: Vec<&'static [u8]>) -> ChannelReader {
        let (tx, rx) = mpsc::channel(chunks.len() + 1);
        for c in chunks {
            tx.try_send(Ok(Bytes::from_static(c))).unwrap();
        }
        ChannelReader {
            rx,
            buf: Bytes::new(),
        }
    }

    #[test]
    fn sniffs_gzip_zstd_and_plain() {
        use std::io::Write;
        let data = b"hello layer bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz: &'static [u8] = Box::leak(gz.finish().unwrap().into_boxed_slice());
        let zs: &'static [u8] =
            Box::leak(zstd::encode_all(&data[..], 3).unwrap().into_boxed_slice());
        let plain: &'static [u8] = Box::leak(data.clone().into_boxed_slice());
        for (name, bytes) in [("gzip", gz), ("zstd", zs), ("plain", plain)] {
            // Split so that the magic straddles chunks.
            let r = channel_of(vec![&bytes[..1], &bytes[1..3], &bytes[3..]]);
            let mut out = Vec::new();
            decompressor(r).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{name}");
        }
    }
}
