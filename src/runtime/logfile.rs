//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-11-22T08:30:01.123456789Z"}`, one file per
//! container, rotated by size (`path` → `path.1` → ... → `path.<max_files - 1>`).
//!
//! The writer runs in the shim (single thread, small memory budget): a record is encoded
//! through a fixed 8 KiB stack buffer straight from the bytes `read()` returned, so a write
//! allocates nothing unless a line stays incomplete across reads. Such a line is kept per
//! stream (at most 16 KiB, the size at which Docker flushes a partial record).
//!
//! The reader (`skiff logs`) reads the rotated files oldest first.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Docker's default `max-size` for json-file when skiff rotates (10 MiB).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// Docker's default `max-file` when rotation is on: the current file and two older ones.
pub const DEFAULT_MAX_FILES: u32 = 3;

/// Output without a newline is written as a partial record once it reaches this size
/// (Docker's copier buffer).
const MAX_LINE: usize = 16 * 1024;
/// Size of the stack buffer records are encoded through.
const OUT_BUF: usize = 8 * 1024;
/// A pending-line buffer larger than this is freed once emptied.
const KEEP_PENDING: usize = 4 * 1024;
/// Length of `2026-11-22T08:30:01.123456789Z`.
const TIME_LEN: usize = 30;

const REC_START: &[u8] = b"{\"log\":\"";
const REC_STREAM: &[u8] = b"\",\"stream\":\"";
const REC_TIME: &[u8] = b"\",\"time\":\"";
const REC_END: &[u8] = b"\"}\n";
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Which output of the container a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The name in the `stream` field.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        }
    }
}

/// Writes one container's log file, rotating it by size.
pub struct LogWriter {
    sink: Sink,
    /// Per stream: output received since the last newline (always < MAX_LINE bytes).
    pending: [Vec<u8>; 2],
}

/// The file side of the writer.
struct Sink {
    path: PathBuf,
    file: File,
    /// Bytes in the current file.
    size: u64,
    max_size: u64,
    max_files: u32,
    /// The file may end inside a record (a failed write, or a crash before we opened it):
    /// the next output starts with a newline so that the next record stays readable.
    dirty: bool,
}

impl LogWriter {
    /// Opens (or creates, mode 0640) the log file for appending, continuing its size.
    /// `max_size` 0 never rotates; `max_files` counts the current file (0 and 1: the file is
    /// truncated instead of rotated, as Docker does with `max-file=1`).
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        let file = open_log(path)?;
        let size = file.metadata()?.len();
        let mut dirty = false;
        if size > 0 {
            let mut last = [0u8; 1];
            if file.read_at(&mut last, size - 1)? == 1 && last[0] != b'\n' {
                dirty = true;
            }
        }
        Ok(LogWriter {
            sink: Sink {
                path: path.to_path_buf(),
                file,
                size,
                max_size,
                max_files,
                dirty,
            },
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Logs what one `read()` of `stream` returned: complete lines become records at once,
    /// an incomplete last line waits for its newline (or for 16 KiB, or `flush_partial`).
    /// On a write error the bytes of this call are lost and the error is returned; the next
    /// call writes again. A rotation that fails is reported too, after the data went on into
    /// the current file.
    pub fn write(&mut self, stream: LogStream, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let ts = format_time(SystemTime::now());
        let mut out = Out::new(&mut self.sink, &ts);
        let pending = &mut self.pending[stream.index()];
        let mut rest = data;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n');
            let seg_end = nl.unwrap_or(rest.len());
            let seg = out.partials(stream, pending, &rest[..seg_end]);
            match nl {
                Some(i) => {
                    if pending.is_empty() {
                        // `seg` is what is left of rest[..i]: write it from the caller's bytes.
                        out.record(stream, &rest[i - seg.len()..=i]);
                    } else {
                        reserve(pending, seg.len() + 1);
                        pending.extend_from_slice(seg);
                        pending.push(b'\n');
                        out.record(stream, pending);
                        release(pending);
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    reserve(pending, seg.len());
                    pending.extend_from_slice(seg);
                    rest = &[];
                }
            }
        }
        out.finish()
    }

    /// Writes the incomplete lines of both streams as partial records (no newline), as
    /// Docker does when a container exits. Errors are dropped: nothing can be done then.
    pub fn flush_partial(&mut self) {
        if self.pending.iter().all(|p| p.is_empty()) {
            return;
        }
        let ts = format_time(SystemTime::now());
        let mut out = Out::new(&mut self.sink, &ts);
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let pending = &mut self.pending[stream.index()];
            if !pending.is_empty() {
                out.record(stream, pending);
                release(pending);
            }
        }
        let _ = out.finish();
    }
}

/// Grows a pending buffer to hold `more` bytes, never beyond MAX_LINE (the doubling of
/// `Vec` alone could reach 32 KiB).
fn reserve(pending: &mut Vec<u8>, more: usize) {
    let need = pending.len() + more;
    if need > pending.capacity() {
        let target = (pending.capacity() * 2).clamp(256, MAX_LINE).max(need);
        pending.reserve_exact(target - pending.len());
    }
}

/// Empties a pending buffer, freeing it when it grew large.
fn release(pending: &mut Vec<u8>) {
    if pending.capacity() > KEEP_PENDING {
        *pending = Vec::new();
    } else {
        pending.clear();
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    // std opens with O_CLOEXEC; read access is for the last-byte check only.
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// `path.n`
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl Sink {
    /// path.(n-1) → path.n ... path → path.1 (the oldest beyond `max_files` is overwritten),
    /// then a new empty `path`. With fewer than two files the file is truncated.
    /// The size restarts at 0 even on failure, so that a broken rotation is retried once
    /// per `max_size` bytes rather than before every record.
    fn rotate(&mut self) -> io::Result<()> {
        self.size = 0;
        self.dirty = false;
        if self.max_files < 2 {
            return self.file.set_len(0);
        }
        for n in (1..self.max_files - 1).rev() {
            match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_log(&self.path)?;
        Ok(())
    }
}

/// Records on their way to the file, through a stack buffer.
struct Out<'a> {
    sink: &'a mut Sink,
    time: &'a [u8; TIME_LEN],
    buf: [u8; OUT_BUF],
    len: usize,
    /// A write failed: the rest of this call's output is dropped.
    failed: bool,
    err: Option<io::Error>,
}

impl<'a> Out<'a> {
    fn new(sink: &'a mut Sink, time: &'a [u8; TIME_LEN]) -> Out<'a> {
        let mut out = Out {
            sink,
            time,
            buf: [0; OUT_BUF],
            len: 0,
            failed: false,
            err: None,
        };
        if out.sink.dirty {
            out.sink.dirty = false;
            out.put(b"\n");
        }
        out
    }

    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == OUT_BUF {
                self.flush();
            }
            let n = bytes.len().min(OUT_BUF - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }

    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        if !self.failed {
            match self.sink.file.write_all(&self.buf[..self.len]) {
                Ok(()) => self.sink.size += self.len as u64,
                Err(e) => {
                    self.failed = true;
                    self.sink.dirty = true;
                    if let Ok(m) = self.sink.file.metadata() {
                        self.sink.size = m.len();
                    }
                    self.err.get_or_insert(e);
                }
            }
        }
        self.len = 0;
    }

    fn finish(mut self) -> io::Result<()> {
        self.flush();
        match self.err.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes full MAX_LINE runs of `seg` (bytes without a newline, following `pending`) as
    /// partial records; returns the rest, which fits in `pending` below MAX_LINE. A UTF-8
    /// character is not cut in two: the partial record ends before it.
    fn partials<'s>(
        &mut self,
        stream: LogStream,
        pending: &mut Vec<u8>,
        mut seg: &'s [u8],
    ) -> &'s [u8] {
        loop {
            let room = MAX_LINE - pending.len();
            if seg.len() < room {
                return seg;
            }
            if pending.is_empty() {
                let cut = utf8_cut(&seg[..MAX_LINE]);
                self.record(stream, &seg[..cut]);
                seg = &seg[cut..];
            } else {
                reserve(pending, room);
                pending.extend_from_slice(&seg[..room]);
                seg = &seg[room..];
                let cut = utf8_cut(pending);
                self.record(stream, &pending[..cut]);
                pending.drain(..cut);
            }
        }
    }

    /// One record; rotates first when it would take the file past `max_size`.
    fn record(&mut self, stream: LogStream, log: &[u8]) {
        let len = (REC_START.len()
            + escaped_len(log)
            + REC_STREAM.len()
            + stream.as_str().len()
            + REC_TIME.len()
            + TIME_LEN
            + REC_END.len()) as u64;
        let size = self.sink.size + self.len as u64;
        if self.sink.max_size > 0 && size > 0 && size + len > self.sink.max_size {
            self.flush();
            if let Err(e) = self.sink.rotate() {
                self.err.get_or_insert(e);
            }
        }
        self.put(REC_START);
        self.escape(log);
        self.put(REC_STREAM);
        self.put(stream.as_str().as_bytes());
        self.put(REC_TIME);
        let time = self.time;
        self.put(time);
        self.put(REC_END);
    }

    /// JSON string contents; each byte of an invalid UTF-8 sequence becomes U+FFFD (as Go's
    /// decoder, hence Docker, counts them).
    fn escape(&mut self, data: &[u8]) {
        for chunk in data.utf8_chunks() {
            let s = chunk.valid().as_bytes();
            let mut start = 0;
            let mut u = *b"\\u00xx";
            for (i, &b) in s.iter().enumerate() {
                let esc: &[u8] = match b {
                    b'"' => b"\\\"",
                    b'\\' => b"\\\\",
                    b'\n' => b"\\n",
                    b'\r' => b"\\r",
                    b'\t' => b"\\t",
                    0x08 => b"\\b",
                    0x0c => b"\\f",
                    0..=0x1f => {
                        u[4] = HEX[(b >> 4) as usize];
                        u[5] = HEX[(b & 15) as usize];
                        &u
                    }
                    _ => continue,
                };
                self.put(&s[start..i]);
                self.put(esc);
                start = i + 1;
            }
            self.put(&s[start..]);
            for _ in 0..chunk.invalid().len() {
                self.put(REPLACEMENT);
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Length of `escape(data)`'s output.
fn escaped_len(data: &[u8]) -> usize {
    let mut n = 0;
    for chunk in data.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            n += match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..=0x1f => 6,
                _ => 1,
            };
        }
        n += chunk.invalid().len() * REPLACEMENT.len();
    }
    n
}

/// Where to end a partial record so that it does not end inside a UTF-8 character: before
/// a trailing lead byte whose continuation bytes have not all arrived.
fn utf8_cut(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(3) {
        let i = n - back;
        let c = b[i];
        if c & 0xc0 == 0x80 {
            continue;
        }
        let need = match c {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return n,
        };
        return if need > back && i > 0 { i } else { n };
    }
    n
}

// ---- time ----

/// Days since 1970-01-01 of a proleptic Gregorian date. Years are counted from March so
/// that the leap day ends the year; 400-year eras have 146097 days.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (m as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d as i64 - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146097 + doe - 719468
}

/// The inverse of `days_from_civil`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch (negative before) and nanoseconds.
fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs().min(i64::MAX as u64) as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = -(d.as_secs().min(i64::MAX as u64) as i64);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, always nine fraction digits so that the strings
/// sort as the times do; years are clamped to 0000..=9999).
fn format_time(t: SystemTime) -> [u8; TIME_LEN] {
    const MIN: i64 = -62167219200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253402300799; // 9999-12-31T23:59:59Z
    let (secs, nanos) = split_time(t);
    let (secs, nanos) = if secs < MIN {
        (MIN, 0)
    } else if secs > MAX {
        (MAX, 999_999_999)
    } else {
        (secs, nanos)
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let sod = secs.rem_euclid(86400) as u32;
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    let mut digits = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(0, 4, y as u64);
    digits(5, 2, m as u64);
    digits(8, 2, d as u64);
    digits(11, 2, (sod / 3600) as u64);
    digits(14, 2, (sod / 60 % 60) as u64);
    digits(17, 2, (sod % 60) as u64);
    digits(20, 9, nanos as u64);
    b
}

/// Parses an RFC 3339 time as written in the logs (`2026-11-22T08:30:01.123456789Z`); also
/// accepts 0 to 9 fraction digits (more are truncated), a lowercase `t`/`z` and `±hh:mm`
/// offsets.
/// RFC 3339 with nanoseconds, UTC, as in the log records.
pub fn time_string(t: SystemTime) -> String {
    String::from_utf8_lossy(&format_time(t)).into_owned()
}

pub fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = b.get(from..to)?;
        let mut v = 0u32;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Some(v)
    };
    let sep = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)? as i64, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 {
        return None;
    }
    // 60: a leap second, which lands on the next minute.
    if sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset: i64 = match b.get(i)? {
        b'Z' | b'z' if b.len() == i + 1 => 0,
        c @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 3600 + om * 60) as i64;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86400 + (h * 3600 + mi * 60 + sec) as i64 - offset;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(nanos as u64))
    }
}

// ---- reading ----

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// As written (RFC 3339, UTC).
    pub time: String,
    pub stream: LogStream,
    /// The text, with its newline unless it was a partial record.
    pub log: String,
}

#[derive(serde::Deserialize)]
struct RawRecord {
    log: String,
    stream: String,
    time: String,
}

/// Reads a container's records, oldest first across the rotated files (`path.N` ...
/// `path.1`, `path`): only those at or after `since`, then only the last `tail`. Lines that
/// are not records (a torn last line, a bad time, an unknown stream) are skipped.
#[cfg_attr(not(test), allow(dead_code))]
pub fn read_records(
    path: &Path,
    since: Option<SystemTime>,
    tail: Option<usize>,
) -> io::Result<Vec<LogRecord>> {
    read_records_and_follow(path, since, tail).map(|(records, _)| records)
}

/// Where a reader stopped in the current log file: the open file and the offset after the
/// last complete line, from which [`Follow::next`] goes on.
pub struct Follow {
    path: PathBuf,
    file: File,
    offset: u64,
    since: Option<SystemTime>,
}

/// [`read_records`], and a [`Follow`] positioned right after what it returned.
pub fn read_records_and_follow(
    path: &Path,
    since: Option<SystemTime>,
    tail: Option<usize>,
) -> io::Result<(Vec<LogRecord>, Follow)> {
    // Newest first, so that a rotation while we open makes a file show up twice (caught by
    // its inode) rather than be missed.
    let mut files = vec![File::open(path)?];
    let mut seen = vec![inode(&files[0])?];
    for n in 1.. {
        let f = match File::open(numbered(path, n)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let id = inode(&f)?;
        if !seen.contains(&id) {
            seen.push(id);
            files.push(f);
        }
    }
    let current = files[0].try_clone()?;

    let mut out = VecDeque::new();
    let mut line = Vec::new();
    let mut offset = 0;
    for f in files.into_iter().rev() {
        let mut r = BufReader::new(f);
        offset = 0;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            offset += n as u64;
            let Some(rec) = parse_record(&line, since) else {
                continue;
            };
            if tail == Some(0) {
                continue;
            }
            if tail.is_some_and(|n| out.len() == n) {
                out.pop_front();
            }
            out.push_back(rec);
        }
    }
    Ok((
        out.into(),
        Follow {
            path: path.to_path_buf(),
            file: current,
            offset,
            since,
        },
    ))
}

impl Follow {
    /// The records written since the last call, following a rotation to the new file.
    pub fn next(&mut self) -> io::Result<Vec<LogRecord>> {
        let mut out = self.read_more()?;
        // Rotated: the file we hold was renamed away; what it still had is read above, the
        // rest is in the new file at `path`.
        if let Ok(f) = File::open(&self.path) {
            if inode(&f)? != inode(&self.file)? {
                out.extend(self.read_more()?);
                self.file = f;
                self.offset = 0;
                out.extend(self.read_more()?);
            }
        }
        Ok(out)
    }

    fn read_more(&mut self) -> io::Result<Vec<LogRecord>> {
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.offset))?;
        let mut r = BufReader::new(&self.file);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            self.offset += n as u64;
            if let Some(rec) = parse_record(&line, self.since) {
                out.push(rec);
            }
        }
        Ok(out)
    }
}

/// One line of a log file as a record (None: not a record, or before `since`).
fn parse_record(line: &[u8], since: Option<SystemTime>) -> Option<LogRecord> {
    let raw = serde_json::from_slice::<RawRecord>(line).ok()?;
    let stream = match raw.stream.as_str() {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => return None,
    };
    let t = parse_time(&raw.time)?;
    if since.is_some_and(|s| t < s) {
        return None;
    }
    Some(LogRecord {
        time: raw.time,
        stream,
        log: raw.log,
    })
}

fn inode(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "skiff-logfile-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn log(&self) -> PathBuf {
            self.0.join("container.log")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// (stream, log) of every record, in order.
    fn logs(path: &Path) -> Vec<(LogStream, String)> {
        read_records(path, None, None)
            .unwrap()
            .into_iter()
            .map(|r| (r.stream, r.log))
            .collect()
    }

    fn out(s: &str) -> (LogStream, String) {
        (LogStream::Stdout, s.to_string())
    }

    fn err(s: &str) -> (LogStream, String) {
        (LogStream::Stderr, s.to_string())
    }

    fn at(secs: i64, nanos: u32) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(nanos as u64)
        }
    }

    fn fmt(t: SystemTime) -> String {
        String::from_utf8(format_time(t).to_vec()).unwrap()
    }

    #[test]
    fn record_format() {
        let dir = TempDir::new("format");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        let before = SystemTime::now();
        w.write(LogStream::Stdout, b"hello\n").unwrap();
        w.write(LogStream::Stderr, b"oops\n").unwrap();
        let after = SystemTime::now();
        let text = std::fs::read_to_string(dir.log()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let prefix = r#"{"log":"hello\n","stream":"stdout","time":""#;
        assert!(lines[0].starts_with(prefix), "{}", lines[0]);
        assert!(lines[0].ends_with("Z\"}"), "{}", lines[0]);
        let time = &lines[0][prefix.len()..lines[0].len() - 2];
        assert_eq!(time.len(), TIME_LEN);
        let t = parse_time(time).unwrap();
        assert!(before <= t && t <= after);
        assert!(lines[1].starts_with(r#"{"log":"oops\n","stream":"stderr","time":""#));
        let meta = std::fs::metadata(dir.log()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        // 0640, less what the umask takes away.
        assert_eq!(meta.permissions().mode() & 0o7777 & !0o640, 0);
    }

    #[test]
    fn lines_split_across_writes() {
        let dir = TempDir::new("split");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        w.write(LogStream::Stdout, b"one\ntwo\nthr").unwrap();
        assert_eq!(logs(&dir.log()), vec![out("one\n"), out("two\n")]);
        w.write(LogStream::Stderr, b"e1").unwrap();
        w.write(LogStream::Stdout, b"ee").unwrap();
        w.write(LogStream::Stdout, b"\n\nfour\nfi").unwrap();
        w.write(LogStream::Stderr, b"\n").unwrap();
        w.write(LogStream::Stdout, b"ve\n").unwrap();
        assert_eq!(
            logs(&dir.log()),
            vec![
                out("one\n"),
                out("two\n"),
                out("three\n"),
                out("\n"),
                out("four\n"),
                err("e1\n"),
                out("five\n"),
            ]
        );
        assert!(w.pending.iter().all(|p| p.is_empty()));
    }

    #[test]
    fn partial_record_at_16k() {
        let dir = TempDir::new("partial16k");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        // One long line in one write: 16 KiB partial records, the rest waits.
        let long = vec![b'a'; 40000];
        w.write(LogStream::Stdout, &long).unwrap();
        let recs = logs(&dir.log());
        assert_eq!(recs.len(), 2);
        assert!(recs
            .iter()
            .all(|r| r.1.len() == MAX_LINE && !r.1.contains('\n')));
        assert_eq!(w.pending[0].len(), 40000 - 2 * MAX_LINE);
        w.write(LogStream::Stdout, b"b\n").unwrap();
        let recs = logs(&dir.log());
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].1.len(), 40000 - 2 * MAX_LINE + 2);
        assert!(recs[2].1.ends_with("ab\n"));

        // Across writes: the pending part plus new bytes reach 16 KiB.
        let dir = TempDir::new("partial16k-b");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        for _ in 0..5 {
            w.write(LogStream::Stderr, &[b'x'; 4000]).unwrap();
        }
        let recs = logs(&dir.log());
        assert_eq!(recs, vec![err(&"x".repeat(MAX_LINE))]);
        assert_eq!(w.pending[1].len(), 20000 - MAX_LINE);
        assert!(w.pending[1].capacity() <= MAX_LINE);

        // Exactly at the limit: 16383 bytes + newline is one record; 16384 + newline is a
        // partial record and a "\n" record, as Docker writes them.
        let dir = TempDir::new("partial16k-c");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        let mut line = vec![b'y'; MAX_LINE - 1];
        line.push(b'\n');
        w.write(LogStream::Stdout, &line).unwrap();
        let mut line = vec![b'z'; MAX_LINE];
        line.push(b'\n');
        w.write(LogStream::Stdout, &line).unwrap();
        let recs = logs(&dir.log());
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].1, format!("{}\n", "y".repeat(MAX_LINE - 1)));
        assert_eq!(recs[1].1, "z".repeat(MAX_LINE));
        assert_eq!(recs[2].1, "\n");
    }

    #[test]
    fn partial_record_keeps_utf8_characters_whole() {
        let dir = TempDir::new("utf8cut");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        // "é" (2 bytes) straddles the 16 KiB boundary, "€" (3 bytes) the next one.
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.extend_from_slice("é".as_bytes());
        data.extend_from_slice(&vec![b'b'; MAX_LINE - 4]);
        data.extend_from_slice("€".as_bytes());
        data.extend_from_slice(b"c\n");
        // Fed one byte at a time, through the pending buffer.
        for b in &data {
            w.write(LogStream::Stdout, std::slice::from_ref(b)).unwrap();
        }
        let recs = logs(&dir.log());
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].1, "a".repeat(MAX_LINE - 1));
        assert_eq!(recs[1].1, format!("é{}", "b".repeat(MAX_LINE - 4)));
        assert_eq!(recs[2].1, "€c\n");
        // The same in one write, straight from the caller's bytes.
        let dir = TempDir::new("utf8cut-b");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        w.write(LogStream::Stdout, &data).unwrap();
        let again: Vec<String> = logs(&dir.log()).into_iter().map(|r| r.1).collect();
        assert_eq!(again, recs.into_iter().map(|r| r.1).collect::<Vec<_>>());
    }

    #[test]
    fn flush_partial_writes_incomplete_lines() {
        let dir = TempDir::new("flush");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        w.flush_partial();
        assert_eq!(std::fs::metadata(dir.log()).unwrap().len(), 0);
        w.write(LogStream::Stdout, b"done\nprompt> ").unwrap();
        w.write(LogStream::Stderr, b"half").unwrap();
        assert_eq!(logs(&dir.log()), vec![out("done\n")]);
        w.flush_partial();
        assert_eq!(
            logs(&dir.log()),
            vec![out("done\n"), out("prompt> "), err("half")]
        );
        w.flush_partial();
        assert_eq!(logs(&dir.log()).len(), 3);
        assert!(w.pending.iter().all(|p| p.is_empty()));
    }

    #[test]
    fn pending_buffer_is_freed_when_large() {
        let dir = TempDir::new("release");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        w.write(LogStream::Stdout, &[b'q'; 10000]).unwrap();
        assert!(w.pending[0].capacity() <= MAX_LINE);
        w.write(LogStream::Stdout, b"\n").unwrap();
        assert_eq!(w.pending[0].capacity(), 0);
        w.write(LogStream::Stdout, b"ab").unwrap();
        w.write(LogStream::Stdout, b"c\n").unwrap();
        assert!(w.pending[0].is_empty() && w.pending[0].capacity() <= KEEP_PENDING);
        // Complete lines never touch the pending buffer.
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        w.write(LogStream::Stdout, b"a\nb\nc\n").unwrap();
        assert_eq!(w.pending[0].capacity(), 0);
    }

    #[test]
    fn escaping() {
        let dir = TempDir::new("escape");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        let mut data = b"q\"b\\t\tc\x01\x1f\x7f\r\x08\x0c e\xcc\x81 \xe2\x82\xac</>\n".to_vec();
        data.extend_from_slice(b"bad \xff\xfe x\xe2\x82\n");
        data.extend_from_slice(b"surrogate \xed\xa0\x80 overlong \xc0\xaf end\n");
        w.write(LogStream::Stdout, &data).unwrap();
        let text = std::fs::read_to_string(dir.log()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // DEL and non-ASCII characters go as they are.
        let head = concat!(r#"{"log":"q\"b\\t\tc\u0001\u001f"#, "\x7f", r#"\r\b\f e"#);
        assert!(lines[0].starts_with(head), "{}", lines[0]);
        assert_eq!(
            logs(&dir.log()),
            vec![
                out("q\"b\\t\tc\x01\x1f\x7f\r\x08\x0c e\u{301} €</>\n"),
                out("bad \u{fffd}\u{fffd} x\u{fffd}\u{fffd}\n"),
                out("surrogate \u{fffd}\u{fffd}\u{fffd} overlong \u{fffd}\u{fffd} end\n"),
            ]
        );
        // Every record is valid JSON whose escaped length was computed right (checked by
        // the file size).
        let expected: usize = data
            .split_inclusive(|b| *b == b'\n')
            .map(|l| escaped_len(l) + 69)
            .sum();
        assert_eq!(text.len(), expected);
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
    }

    #[test]
    fn escaping_every_byte() {
        let dir = TempDir::new("escape-all");
        let mut w = LogWriter::open(&dir.log(), 0, 1).unwrap();
        let data: Vec<u8> = (0u8..=255).filter(|b| *b != b'\n').collect();
        w.write(LogStream::Stdout, &data).unwrap();
        w.flush_partial();
        let recs = logs(&dir.log());
        assert_eq!(recs.len(), 1);
        let expected: String =
            String::from_utf8_lossy(&data[..127]).into_owned() + &"\u{fffd}".repeat(128);
        assert_eq!(recs[0].1, expected);
        let size = std::fs::metadata(dir.log()).unwrap().len() as usize;
        assert_eq!(size, escaped_len(&data) + 69);
    }

    #[test]
    fn time_format_known_dates() {
        assert_eq!(fmt(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            fmt(at(1795336201, 123456789)),
            "2026-11-22T08:30:01.123456789Z"
        );
        assert_eq!(fmt(at(951782400, 5)), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            fmt(at(951782400 + 86399, 0)),
            "2000-02-29T23:59:59.000000000Z"
        );
        assert_eq!(
            fmt(at(951782400 + 86400, 0)),
            "2000-03-01T00:00:00.000000000Z"
        );
        assert_eq!(fmt(at(4107542400 - 1, 0)), "2100-02-28T23:59:59.000000000Z");
        assert_eq!(fmt(at(4107542400, 0)), "2100-03-01T00:00:00.000000000Z");
        assert_eq!(fmt(at(-2203891200, 0)), "1900-03-01T00:00:00.000000000Z");
        assert_eq!(fmt(at(-1, 500_000_000)), "1969-12-31T23:59:59.500000000Z");
        assert_eq!(fmt(at(1709164800, 0)), "2024-02-29T00:00:00.000000000Z");
        assert_eq!(
            fmt(at(1735689599, 999_999_999)),
            "2024-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn time_round_trip() {
        for (s, n) in [
            (1795336201, 123456789),
            (951782400, 0),
            (951782400, 999_999_999),
            (0, 0),
            (-1, 1),
            (-2203891200, 42),
            (253402300799, 999_999_999),
            (-62167219200, 0),
        ] {
            let t = at(s, n);
            assert_eq!(parse_time(&fmt(t)), Some(t), "{}", fmt(t));
        }
        // Every day of ±800 years, at an odd second of the day.
        let mut day = -292_000i64;
        while day < 292_000 {
            let t = at(day * 86400 + 45_296, 7);
            let s = fmt(t);
            assert_eq!(parse_time(&s), Some(t), "{s}");
            day += 1;
        }
    }

    #[test]
    fn parse_time_variants() {
        let t = at(1795336201, 123456789);
        assert_eq!(parse_time("2026-11-22T08:30:01.123456789Z"), Some(t));
        assert_eq!(parse_time("2026-11-22t08:30:01.123456789z"), Some(t));
        assert_eq!(parse_time("2026-11-22T09:30:01.123456789+01:00"), Some(t));
        assert_eq!(parse_time("2026-11-22T03:00:01.123456789-05:30"), Some(t));
        assert_eq!(parse_time("2026-11-22T08:30:01.1234567891234Z"), Some(t));
        assert_eq!(
            parse_time("2026-11-22T08:30:01.5Z"),
            Some(at(1795336201, 500_000_000))
        );
        assert_eq!(parse_time("2026-11-22T08:30:01Z"), Some(at(1795336201, 0)));
        assert_eq!(
            parse_time("2016-12-31T23:59:60Z"),
            parse_time("2017-01-01T00:00:00Z")
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T08:30:01",
            "2026-11-22T08:30:01.Z",
            "2026-11-22T08:30:01.123",
            "2026-13-22T08:30:01Z",
            "2026-00-22T08:30:01Z",
            "2026-02-29T08:30:01Z",
            "2100-02-29T08:30:01Z",
            "2026-04-31T08:30:01Z",
            "2026-11-22T24:30:01Z",
            "2026-11-22T08:60:01Z",
            "2026-11-22T08:30:61Z",
            "2026-11-22 08:30:01Z",
            "2026-11-22T08:30:01Zx",
            "2026-11-22T08:30:01+0100",
            "+026-11-22T08:30:01Z",
            "2026-11-22T08:30:01.12é",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        assert!(parse_time("2000-02-29T00:00:00Z").is_some());
    }

    fn files(path: &Path) -> Vec<PathBuf> {
        let dir = path.parent().unwrap();
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rotation() {
        let dir = TempDir::new("rotate");
        let path = dir.log();
        // A record of "line NNN\n" is 78 bytes: three per file.
        let mut w = LogWriter::open(&path, 250, 3).unwrap();
        for i in 0..100 {
            w.write(LogStream::Stdout, format!("line {i:03}\n").as_bytes())
                .unwrap();
            let fs = files(&path);
            assert!(fs.len() <= 3, "{fs:?}");
            for f in &fs {
                assert!(std::fs::metadata(f).unwrap().len() <= 250);
            }
            let newest = std::fs::read_to_string(&path).unwrap();
            assert!(newest.contains(&format!("line {i:03}")));
        }
        assert_eq!(
            files(&path),
            vec![path.clone(), numbered(&path, 1), numbered(&path, 2)]
        );
        // 100 records, three per file: the newest file holds 99, the others 96..=98, 93..=95.
        let recs = logs(&path);
        let want: Vec<_> = (93..100).map(|i| out(&format!("line {i:03}\n"))).collect();
        assert_eq!(recs, want);
        let recs = read_records(&path, None, Some(4)).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].log, "line 096\n");
        assert_eq!(recs[3].log, "line 099\n");

        // Reopening continues the size: the next record rotates after two more.
        drop(w);
        let mut w = LogWriter::open(&path, 250, 3).unwrap();
        w.write(LogStream::Stdout, b"line 100\nline 101\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        w.write(LogStream::Stdout, b"line 102\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let recs = logs(&path);
        assert_eq!(recs.first().unwrap().1, "line 096\n");
        assert_eq!(recs.last().unwrap().1, "line 102\n");
        assert_eq!(recs.len(), 7);
    }

    #[test]
    fn rotation_within_one_write() {
        let dir = TempDir::new("rotate-one");
        let path = dir.log();
        let mut w = LogWriter::open(&path, 1000, 5).unwrap();
        let data: String = (0..200).map(|i| format!("l{i:04}\n")).collect();
        w.write(LogStream::Stderr, data.as_bytes()).unwrap();
        let fs = files(&path);
        assert_eq!(fs.len(), 5);
        for f in &fs {
            assert!(std::fs::metadata(f).unwrap().len() <= 1000);
        }
        let recs = logs(&path);
        assert_eq!(recs.last().unwrap().1, "l0199\n");
        let first: usize = recs[0].1[1..5].parse().unwrap();
        let want: Vec<_> = (first..200).map(|i| err(&format!("l{i:04}\n"))).collect();
        assert_eq!(recs, want);
    }

    #[test]
    fn rotation_single_file_truncates() {
        let dir = TempDir::new("rotate-single");
        let path = dir.log();
        let mut w = LogWriter::open(&path, 200, 1).unwrap();
        for i in 0..10 {
            w.write(LogStream::Stdout, format!("line {i:03}\n").as_bytes())
                .unwrap();
            assert_eq!(files(&path), vec![path.clone()]);
            assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        }
        assert_eq!(logs(&path), vec![out("line 008\n"), out("line 009\n")]);
    }

    #[test]
    fn torn_file_is_resumed_on_a_new_line() {
        let dir = TempDir::new("torn");
        let path = dir.log();
        std::fs::write(
            &path,
            "{\"log\":\"old\\n\",\"stream\":\"stdout\",\"time\":\"2020-01-01T00:00:00.000000000Z\"}\n{\"log\":\"to",
        )
        .unwrap();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(LogStream::Stdout, b"new\n").unwrap();
        assert_eq!(logs(&path), vec![out("old\n"), out("new\n")]);
    }

    fn rec(time: &str, stream: &str, log: &str) -> String {
        format!(
            "{}\n",
            serde_json::json!({"log": log, "stream": stream, "time": time})
        )
    }

    #[test]
    fn read_since_and_tail() {
        let dir = TempDir::new("since");
        let path = dir.log();
        let old = rec("2026-11-22T08:00:00.000000000Z", "stdout", "a\n")
            + &rec("2026-11-22T08:00:01.000000000Z", "stderr", "b\n")
            + "not json\n"
            + &rec("bad time", "stdout", "x\n");
        let mid = rec("2026-11-22T08:00:02.000000000Z", "stdout", "c\n")
            + &rec("2026-11-22T08:00:02.500000000Z", "other", "y\n")
            + &rec("2026-11-22T08:00:03.000000000Z", "stdout", "d");
        let new = rec("2026-11-22T08:00:04.000000000Z", "stderr", "e\n") + r#"{"log":"torn","stre"#;
        std::fs::write(numbered(&path, 2), old).unwrap();
        std::fs::write(numbered(&path, 1), mid).unwrap();
        std::fs::write(&path, new).unwrap();
        // path.4 without path.3: not read.
        std::fs::write(
            numbered(&path, 4),
            rec("2026-11-22T07:00:00Z", "stdout", "z\n"),
        )
        .unwrap();

        let all = read_records(&path, None, None).unwrap();
        let logs: Vec<&str> = all.iter().map(|r| r.log.as_str()).collect();
        assert_eq!(logs, ["a\n", "b\n", "c\n", "d", "e\n"]);
        assert_eq!(all[1].stream, LogStream::Stderr);
        assert_eq!(all[0].time, "2026-11-22T08:00:00.000000000Z");

        let since = parse_time("2026-11-22T08:00:02Z");
        let got = read_records(&path, since, None).unwrap();
        let logs: Vec<&str> = got.iter().map(|r| r.log.as_str()).collect();
        assert_eq!(logs, ["c\n", "d", "e\n"]);

        let got = read_records(&path, since, Some(2)).unwrap();
        let logs: Vec<&str> = got.iter().map(|r| r.log.as_str()).collect();
        assert_eq!(logs, ["d", "e\n"]);

        let got = read_records(&path, None, Some(10)).unwrap();
        assert_eq!(got, all);
        assert!(read_records(&path, None, Some(0)).unwrap().is_empty());
        let later = parse_time("2026-11-22T09:00:00Z");
        assert!(read_records(&path, later, None).unwrap().is_empty());

        assert!(read_records(&dir.0.join("missing.log"), None, None).is_err());
    }

    #[test]
    fn since_with_written_records() {
        let dir = TempDir::new("since-live");
        let path = dir.log();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(LogStream::Stdout, b"before\n").unwrap();
        let mid = SystemTime::now();
        w.write(LogStream::Stdout, b"after\n").unwrap();
        let got = read_records(&path, Some(mid), None).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].log, "after\n");
    }
}
