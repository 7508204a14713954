//! Live OOM notification for one cgroup: an eventfd registered on `memory.oom_control` (v1)
//! or an inotify watch on `memory.events` (v2). Readiness only says "look again": the
//! `oom_kill` counter decides whether the kernel killed something.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Cgroup, Mode};

pub struct OomWatch {
    fd: OwnedFd,
    mode: Mode,
    cgroup: Cgroup,
    seen: u64,
    /// Re-checks left after a notification that came before the kill was counted (v1 notifies
    /// when the OOM starts, before the victim is chosen).
    pending: u8,
}

/// How many times a notification without a counted kill is looked at again.
const RECHECKS: u8 = 40;

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

impl OomWatch {
    /// Starts watching `cg` (whose memory directory must exist).
    pub fn new(cg: &Cgroup) -> Result<OomWatch, String> {
        let dir = cg.memory_dir.as_ref().ok_or("no memory controller")?;
        let fd = match cg.mode {
            Mode::V1 => {
                let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if efd < 0 {
                    return Err(last_os_error("eventfd"));
                }
                let efd = unsafe { OwnedFd::from_raw_fd(efd) };
                let ctl = std::fs::File::open(dir.join("memory.oom_control"))
                    .map_err(|e| format!("open memory.oom_control: {e}"))?;
                let line = format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd());
                std::fs::write(dir.join("cgroup.event_control"), line)
                    .map_err(|e| format!("register OOM eventfd: {e}"))?;
                efd
            }
            Mode::V2 => {
                let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
                if ifd < 0 {
                    return Err(last_os_error("inotify_init1"));
                }
                let ifd = unsafe { OwnedFd::from_raw_fd(ifd) };
                let path = std::ffi::CString::new(
                    dir.join("memory.events").as_os_str().as_encoded_bytes(),
                )
                .map_err(|_| "bad path")?;
                if unsafe {
                    libc::inotify_add_watch(ifd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY)
                } < 0
                {
                    return Err(last_os_error("inotify_add_watch memory.events"));
                }
                ifd
            }
        };
        Ok(OomWatch {
            fd,
            mode: cg.mode,
            cgroup: cg.clone(),
            seen: cg.oom_kills().unwrap_or(0),
            pending: 0,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Consumes the notification and returns the new OOM kill count when it rose.
    pub fn check(&mut self) -> Option<u64> {
        let mut buf = [0u8; 4096];
        let n = match self.mode {
            Mode::V1 => 8,
            Mode::V2 => buf.len(),
        };
        // Drain: an eventfd read resets its counter; inotify delivers queued events.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), n) } > 0 {}
        self.pending = RECHECKS;
        self.recheck()
    }

    /// True while a notification awaits its counted kill: call [`OomWatch::recheck`] soon.
    pub fn pending(&self) -> bool {
        self.pending > 0
    }

    /// Looks at the counter again; the new count when it rose.
    pub fn recheck(&mut self) -> Option<u64> {
        self.pending = self.pending.saturating_sub(1);
        let now = self.cgroup.oom_kills()?;
        if now > self.seen {
            self.seen = now;
            self.pending = 0;
            Some(now)
        } else {
            None
        }
    }
}
