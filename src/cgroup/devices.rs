//! Device allowlist per container: which device nodes its processes may create (mknod), read
//! and write. Without it a container with CAP_MKNOD (a default capability) could create a node
//! for a host disk and read it.
//!
//! Enforced by the devices controller on v1 (`devices.deny` / `devices.allow`) and on v2 by a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program that skiff assembles from the rules and attaches to
//! the container's cgroup.
//!
//! A rule list has one of two shapes, and only these are accepted:
//! - allow-all (`a *:* rwm`, privileged containers);
//! - deny-all first, then allow rules. A device access is then allowed iff some allow rule
//!   matches its type (char or block), major and minor (`None` = any) and grants every access
//!   requested (read, write, mknod).

// The container runtime applies these when it creates a container's cgroup; until that is
// wired in, only the tests here use them.
#![cfg_attr(not(test), allow(dead_code))]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{write_file, Cgroup, CgroupError, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    /// Every device, char and block (`a`); only in an allow-all or deny-all rule.
    All,
    Char,
    Block,
}

/// One line of a device allowlist, as in the v1 `devices.allow` syntax (`c 1:3 rwm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DevKind,
    /// None = any (`*`).
    pub major: Option<u32>,
    /// None = any (`*`).
    pub minor: Option<u32>,
    pub read: bool,
    pub write: bool,
    pub mknod: bool,
}

// Access bits of `struct bpf_cgroup_dev_ctx` (BPF_DEVCG_ACC_*), also used for matching.
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;
// Device types of `struct bpf_cgroup_dev_ctx` (BPF_DEVCG_DEV_*).
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

impl DeviceRule {
    /// `a *:* rwm` allowed: every device (privileged containers).
    pub fn allow_all() -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: DevKind::All,
            major: None,
            minor: None,
            read: true,
            write: true,
            mknod: true,
        }
    }

    /// `a *:* rwm` denied: the first rule of a restricted list.
    pub fn deny_all() -> DeviceRule {
        DeviceRule {
            allow: false,
            ..DeviceRule::allow_all()
        }
    }

    /// An allow rule; `access` is a subset of "rwm".
    pub fn allow(kind: DevKind, major: Option<u32>, minor: Option<u32>, access: &str) -> Self {
        DeviceRule {
            allow: true,
            kind,
            major,
            minor,
            read: access.contains('r'),
            write: access.contains('w'),
            mknod: access.contains('m'),
        }
    }

    /// The access letters, in the kernel's order: `rwm`, `r`, `m`...
    pub fn access(&self) -> String {
        let mut s = String::new();
        for (on, c) in [(self.read, 'r'), (self.write, 'w'), (self.mknod, 'm')] {
            if on {
                s.push(c);
            }
        }
        s
    }

    /// The rule in the v1 `devices.allow`/`devices.deny` syntax: `c 1:3 rwm`, `c *:* m`,
    /// `b 8:0 r`, `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let kind = match self.kind {
            DevKind::All => 'a',
            DevKind::Char => 'c',
            DevKind::Block => 'b',
        };
        format!(
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access()
        )
    }

    fn access_bits(&self) -> u32 {
        (if self.read { ACC_READ } else { 0 })
            | (if self.write { ACC_WRITE } else { 0 })
            | (if self.mknod { ACC_MKNOD } else { 0 })
    }

    fn is_all(&self) -> bool {
        self.kind == DevKind::All
    }

    /// Whether this rule covers an access of `access` bits to device `kind major:minor`
    /// (`kind` is Char or Block). The program built by [`program`] decides the same way.
    #[cfg(test)]
    fn covers(&self, kind: DevKind, major: u32, minor: u32, access: u32) -> bool {
        (self.kind == DevKind::All || self.kind == kind)
            && self.major.map_or(true, |m| m == major)
            && self.minor.map_or(true, |m| m == minor)
            && access & !self.access_bits() == 0
    }
}

/// Docker's default allowlist: everything denied, then mknod of any char or block device
/// (the node is useless without read/write), and read, write, mknod of null 1:3, zero 1:5,
/// full 1:7, random 1:8, urandom 1:9, tty 5:0, console 5:1, ptmx 5:2 and the pseudo-terminals
/// 136:*. Not tun 10:200, which moby no longer allows by default.
pub fn default_rules() -> Vec<DeviceRule> {
    use DevKind::{Block, Char};
    let mut rules = vec![
        DeviceRule::deny_all(),
        DeviceRule::allow(Char, None, None, "m"),
        DeviceRule::allow(Block, None, None, "m"),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules.push(DeviceRule::allow(Char, Some(major), Some(minor), "rwm"));
    }
    rules.push(DeviceRule::allow(Char, Some(136), None, "rwm"));
    rules
}

/// Privileged containers: every device (`a *:* rwm`).
pub fn privileged_rules() -> Vec<DeviceRule> {
    vec![DeviceRule::allow_all()]
}

/// A host device made available in a container: stats `host_path` (following symlinks) and
/// returns the allow rule for its type and major:minor with the access given, its `st_mode`
/// (type and permission bits, as mknod wants them) and its `st_rdev`. Fails, naming the path,
/// when it is missing or not a char or block device.
pub fn host_device_rule(
    host_path: &Path,
    read: bool,
    write: bool,
    mknod: bool,
) -> Result<(DeviceRule, u32, u64), CgroupError> {
    let err = |msg: String| CgroupError::Device {
        path: host_path.to_path_buf(),
        msg,
    };
    let md = std::fs::metadata(host_path).map_err(|e| {
        err(if e.kind() == std::io::ErrorKind::NotFound {
            "no such device on the host".to_string()
        } else {
            format!("stat: {e}")
        })
    })?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        DevKind::Char
    } else if ft.is_block_device() {
        DevKind::Block
    } else {
        return Err(err("not a character or block device".into()));
    };
    if !(read || write || mknod) {
        return Err(err("no access given (read, write or mknod)".into()));
    }
    let rdev = md.rdev();
    let rule = DeviceRule {
        allow: true,
        kind,
        major: Some(libc::major(rdev)),
        minor: Some(libc::minor(rdev)),
        read,
        write,
        mknod,
    };
    Ok((rule, md.mode(), rdev))
}

/// A rule list reduced to what the kernel is given.
#[derive(Debug, PartialEq, Eq)]
enum Shape<'a> {
    AllowAll,
    /// Deny everything but what these allow rules cover.
    Only(Vec<&'a DeviceRule>),
}

fn shape(rules: &[DeviceRule]) -> Result<Shape<'_>, String> {
    for r in rules {
        if r.is_all() && (r.major.is_some() || r.minor.is_some() || r.access_bits() != ACC_ALL) {
            return Err(format!(
                "device rule {:?}: an \"a\" rule covers every device and access",
                r.v1_line()
            ));
        }
        if r.access_bits() == 0 {
            return Err(format!("device rule {:?} grants no access", r.v1_line()));
        }
        // Kept to 31 bits so that a number is one BPF immediate; the kernel's majors have 12
        // bits and minors 20.
        if r.major
            .into_iter()
            .chain(r.minor)
            .any(|n| n > i32::MAX as u32)
        {
            return Err(format!(
                "device rule {:?}: device number out of range",
                r.v1_line()
            ));
        }
    }
    let Some((first, rest)) = rules.split_first() else {
        return Err("empty device rule list: start it with a deny-all or allow-all rule".into());
    };
    if !first.is_all() {
        return Err(format!(
            "device rule list starts with {:?}: it must start with \"a *:* rwm\" (deny-all or allow-all)",
            first.v1_line()
        ));
    }
    if let Some(r) = rest.iter().find(|r| !r.allow) {
        return Err(format!(
            "device rule {:?}: only the first rule may deny",
            r.v1_line()
        ));
    }
    if first.allow || rest.iter().any(|r| r.is_all()) {
        return Ok(Shape::AllowAll);
    }
    Ok(Shape::Only(rest.iter().collect()))
}

impl Cgroup {
    /// Whether this cgroup can restrict devices: v2 always (a BPF program), v1 only when the
    /// host has the devices controller.
    pub fn can_restrict_devices(&self) -> bool {
        self.mode == Mode::V2 || self.devices_dir.is_some()
    }

    /// Applies a device allowlist (see the module's doc for the accepted shapes) to this
    /// cgroup, which must have no children and should have no processes yet: call it after
    /// [`Cgroup::create`], before the container joins.
    ///
    /// v1: `a` written to `devices.deny`, then each allow rule to `devices.allow`
    /// (allow-all: `a` to `devices.allow`, which the kernel refuses when the parent cgroup is
    /// restricted). v2: a device program attached with BPF_F_ALLOW_MULTI (the programs of
    /// the ancestors keep applying too); allow-all attaches nothing. A restricted list on a
    /// v1 host without the devices controller is an error: nothing could enforce it.
    ///
    /// Call it once per cgroup: on v2 a second call attaches a second program, and an access
    /// must then pass both.
    pub fn apply_devices(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        let place = || {
            self.devices_dir
                .clone()
                .or_else(|| self.dirs.first().cloned())
                .unwrap_or_default()
        };
        let shape = shape(rules).map_err(|msg| CgroupError::Setup { path: place(), msg })?;
        match self.mode {
            Mode::V1 => {
                let Some(dir) = &self.devices_dir else {
                    if shape == Shape::AllowAll {
                        return Ok(());
                    }
                    return Err(CgroupError::Setup {
                        path: place(),
                        msg: "the host has no devices cgroup controller: cannot restrict the container's devices".into(),
                    });
                };
                apply_v1(dir, &shape)
            }
            Mode::V2 => match shape {
                Shape::AllowAll => Ok(()),
                Shape::Only(allows) => attach_program(&place(), &program(&allows)),
            },
        }
    }
}

fn apply_v1(dir: &Path, shape: &Shape) -> Result<(), CgroupError> {
    match shape {
        Shape::AllowAll => write_file(dir, "devices.allow", "a"),
        Shape::Only(allows) => {
            write_file(dir, "devices.deny", "a")?;
            for r in allows {
                write_file(dir, "devices.allow", &r.v1_line())?;
            }
            Ok(())
        }
    }
}

/// One eBPF instruction, laid out as `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Insn {
    code: u8,
    /// dst_reg:4 and src_reg:4, bit fields in the target's order.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes used (class | op | source).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers of the program: r1 the context, r0 the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        #[cfg(target_endian = "little")]
        let regs = dst | (src << 4);
        #[cfg(target_endian = "big")]
        let regs = (dst << 4) | src;
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    #[cfg(test)]
    fn dst(&self) -> usize {
        #[cfg(target_endian = "little")]
        return (self.regs & 0xf) as usize;
        #[cfg(target_endian = "big")]
        return (self.regs >> 4) as usize;
    }

    #[cfg(test)]
    fn src(&self) -> usize {
        #[cfg(target_endian = "little")]
        return (self.regs >> 4) as usize;
        #[cfg(target_endian = "big")]
        return (self.regs & 0xf) as usize;
    }
}

/// Assembles the device program for a deny-all list with these allow rules:
///
/// ```text
///   r2 = ctx->access_type & 0xffff      device type
///   r3 = ctx->access_type >> 16         access requested
///   r4 = ctx->major; r5 = ctx->minor
///   per rule:  if r2 != type goto next            (unless any type)
///              if r3 & ~rule_access goto next     (unless rwm)
///              if r4 != major goto next           (unless *)
///              if r5 != minor goto next           (unless *)
///              return 1
///   return 0
/// ```
fn program(allows: &[&DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(LDX_MEM_W, R_TYPE, R1, 0, 0),
        Insn::new(ALU64_AND_K, R_TYPE, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, R_ACCESS, R1, 0, 0),
        Insn::new(ALU64_RSH_K, R_ACCESS, 0, 0, 16),
        Insn::new(LDX_MEM_W, R_MAJOR, R1, 4, 0),
        Insn::new(LDX_MEM_W, R_MINOR, R1, 8, 0),
    ];
    for r in allows {
        // (opcode, register, immediate) of each test that skips to the next rule.
        let mut tests: Vec<(u8, u8, i32)> = Vec::new();
        match r.kind {
            DevKind::All => {}
            DevKind::Char => tests.push((JMP_JNE_K, R_TYPE, DEV_CHAR as i32)),
            DevKind::Block => tests.push((JMP_JNE_K, R_TYPE, DEV_BLOCK as i32)),
        }
        let denied = ACC_ALL & !r.access_bits();
        if denied != 0 {
            tests.push((JMP_JSET_K, R_ACCESS, denied as i32));
        }
        if let Some(m) = r.major {
            tests.push((JMP_JNE_K, R_MAJOR, m as i32));
        }
        if let Some(m) = r.minor {
            tests.push((JMP_JNE_K, R_MINOR, m as i32));
        }
        let n = tests.len();
        for (i, (code, reg, imm)) in tests.into_iter().enumerate() {
            // Past the remaining tests and the two instructions of "return 1".
            let off = (n - i - 1 + 2) as i16;
            p.push(Insn::new(code, reg, 0, off, imm));
        }
        p.push(Insn::new(ALU64_MOV_K, R0, 0, 0, 1));
        p.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(Insn::new(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// No helper is called, so nothing needs a GPL-compatible license.
const LICENSE: &[u8] = b"Apache-2.0\0";
const PROG_NAME: &[u8] = b"skiff_devices";

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `expected_attach_type` (4.17; older
/// kernels accept the longer attribute as its tail is zero). No padding.
#[repr(C, align(8))]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_PROG_ATTACH part of `union bpf_attr`, up to `expected_revision` (6.6), with no
/// padding: every byte the kernel reads is one we zeroed (stray bytes in `relative_fd` make
/// newer kernels refuse the attach with EINVAL).
#[repr(C, align(8))]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

// The kernel reads these byte for byte.
const _: () = assert!(std::mem::size_of::<Insn>() == 8);
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);
const _: () = assert!(std::mem::size_of::<ProgAttachAttr>() == 32);

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is the `union bpf_attr` member for `cmd`, zero-padded, and every pointer
    // in it points to memory that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Why loading failed, with the verifier's log when it gave one.
#[derive(Debug)]
struct LoadError {
    source: std::io::Error,
    log: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loading the device program (bpf BPF_PROG_LOAD): ")?;
        match self.source.raw_os_error() {
            Some(libc::EPERM) => write!(f, "{} (needs CAP_SYS_ADMIN or CAP_BPF)", self.source)?,
            Some(libc::ENOSYS) => write!(f, "{} (kernel without bpf())", self.source)?,
            _ => write!(f, "{}", self.source)?,
        }
        if !self.log.trim().is_empty() {
            write!(f, "; verifier log:\n{}", self.log.trim_end())?;
        }
        Ok(())
    }
}

/// Loads a device program; the fd keeps it alive until attached.
fn load_program(insns: &[Insn]) -> Result<OwnedFd, LoadError> {
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            ..Default::default()
        };
        attr.prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        // SAFETY: a successful BPF_PROG_LOAD returns a new fd that nothing else owns.
        bpf(BPF_PROG_LOAD, &mut attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    // Without a log first: with a log, a long one fails the load with ENOSPC on some kernels.
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(source) => {
            let mut buf = vec![0u8; 1 << 20];
            let (source, log) = match attempt(Some(&mut buf)) {
                // Loaded this time (should not happen): use it.
                Ok(fd) => return Ok(fd),
                Err(again) if again.raw_os_error() == Some(libc::ENOSPC) => (source, buf),
                Err(again) => (again, buf),
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(LoadError {
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// Loads the program and attaches it to the cgroup directory `dir`; the program's fd is then
/// closed: the attachment keeps it alive, and it goes away with the cgroup.
fn attach_program(dir: &Path, insns: &[Insn]) -> Result<(), CgroupError> {
    let setup = |msg: String| CgroupError::Setup {
        path: dir.to_path_buf(),
        msg,
    };
    let prog = load_program(insns).map_err(|e| setup(e.to_string()))?;
    let cg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|source| CgroupError::Io {
            path: PathBuf::from(dir),
            op: "open",
            source,
        })?;
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        setup(format!(
            "attaching the device program (bpf BPF_PROG_ATTACH): {e}"
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    use DevKind::{All, Block, Char};

    /// The reference semantics of a deny-all list.
    fn allows(rules: &[DeviceRule], kind: DevKind, major: u32, minor: u32, access: u32) -> bool {
        match shape(rules).unwrap() {
            Shape::AllowAll => true,
            Shape::Only(a) => a.iter().any(|r| r.covers(kind, major, minor, access)),
        }
    }

    /// Runs a program of the instructions `program` emits, on one context.
    fn run(p: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "runaway program");
            let i = p[pc];
            pc += 1;
            let (d, imm) = (i.dst(), i.imm as i64 as u64);
            let jump = |taken: bool, pc: &mut usize| {
                if taken {
                    *pc = (*pc as i64 + i.off as i64) as usize;
                }
            };
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(i.src(), 1, "loads from the context only");
                    r[d] = match i.off {
                        0 => access_type,
                        4 => major,
                        8 => minor,
                        o => panic!("context offset {o}"),
                    } as u64;
                }
                ALU64_AND_K => r[d] &= imm,
                ALU64_RSH_K => r[d] >>= imm,
                ALU64_MOV_K => r[d] = imm,
                JMP_JNE_K => jump(r[d] != imm, &mut pc),
                JMP_JSET_K => jump(r[d] & imm != 0, &mut pc),
                JMP_EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn v1_lines() {
        assert_eq!(
            DeviceRule::allow(Char, Some(1), Some(3), "rwm").v1_line(),
            "c 1:3 rwm"
        );
        assert_eq!(
            DeviceRule::allow(Char, None, None, "m").v1_line(),
            "c *:* m"
        );
        assert_eq!(
            DeviceRule::allow(Block, Some(8), Some(0), "r").v1_line(),
            "b 8:0 r"
        );
        assert_eq!(
            DeviceRule::allow(Char, Some(136), None, "wr").v1_line(),
            "c 136:* rw"
        );
        assert_eq!(DeviceRule::deny_all().v1_line(), "a *:* rwm");
        assert_eq!(DeviceRule::allow_all().v1_line(), "a *:* rwm");
        assert_eq!(privileged_rules(), vec![DeviceRule::allow_all()]);
    }

    #[test]
    fn default_rules_are_dockers() {
        let r = default_rules();
        assert_eq!(r[0], DeviceRule::deny_all());
        let lines: Vec<String> = r[1..].iter().map(|r| r.v1_line()).collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ]
        );
        assert!(r[1..].iter().all(|r| r.allow));
        let rw = ACC_READ | ACC_WRITE;
        assert!(allows(&r, Char, 1, 3, rw));
        assert!(allows(&r, Char, 136, 42, rw | ACC_MKNOD));
        assert!(allows(&r, Block, 8, 0, ACC_MKNOD), "mknod of anything");
        assert!(!allows(&r, Block, 8, 0, ACC_READ), "a host disk");
        assert!(!allows(&r, Char, 10, 200, ACC_READ), "no tun");
        assert!(!allows(&r, Char, 1, 1, rw), "no /dev/mem");
    }

    #[test]
    fn shapes_accepted_and_refused() {
        assert_eq!(shape(&privileged_rules()), Ok(Shape::AllowAll));
        let mut r = default_rules();
        r.push(DeviceRule::allow_all());
        assert_eq!(
            shape(&r),
            Ok(Shape::AllowAll),
            "an allow-all opens everything"
        );
        assert!(shape(&[]).is_err());
        assert!(shape(&default_rules()[1..]).is_err(), "no leading deny-all");
        let mut r = default_rules();
        r.push(DeviceRule {
            allow: false,
            ..DeviceRule::allow(Char, Some(1), Some(3), "w")
        });
        assert!(shape(&r)
            .unwrap_err()
            .contains("only the first rule may deny"));
        let mut r = default_rules();
        r.push(DeviceRule::allow(Char, Some(1), Some(3), ""));
        assert!(shape(&r).unwrap_err().contains("no access"));
        let mut r = default_rules();
        r.push(DeviceRule::allow(All, None, None, "m"));
        assert!(shape(&r).is_err(), "\"a\" with partial access");
        let mut r = default_rules();
        r.push(DeviceRule::allow(Block, Some(u32::MAX), None, "r"));
        assert!(shape(&r).unwrap_err().contains("out of range"));
    }

    #[test]
    fn host_device_rule_for_dev_null_and_errors() {
        let (rule, mode, rdev) = host_device_rule(Path::new("/dev/null"), true, true, false)
            .expect("/dev/null is a char device");
        assert_eq!(
            rule,
            DeviceRule::allow(Char, Some(1), Some(3), "rw"),
            "{}",
            rule.v1_line()
        );
        assert_eq!(mode & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(rdev, libc::makedev(1, 3));

        let e = host_device_rule(Path::new("/etc/passwd"), true, false, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/passwd") && msg.contains("not a character or block device"),
            "{msg}"
        );
        let e = host_device_rule(Path::new("/dev/skiff-no-such-device"), true, false, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/dev/skiff-no-such-device") && e.contains("no such device"),
            "{e}"
        );
        // A symlink to a device is followed.
        let dir = scratch_dir("symlink");
        let link = dir.path.join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let (rule, _, _) = host_device_rule(&link, true, false, false).unwrap();
        assert_eq!(rule.v1_line(), "c 1:3 r");
    }

    #[test]
    fn program_decides_like_the_rules() {
        let mut rules = default_rules();
        rules.push(DeviceRule::allow(Block, Some(8), Some(0), "r"));
        rules.push(DeviceRule::allow(Block, Some(7), None, "rw"));
        rules.push(DeviceRule::allow(Char, None, Some(77), "w"));
        let Shape::Only(allows_) = shape(&rules).unwrap() else {
            unreachable!()
        };
        let p = program(&allows_);
        let mut checked = 0;
        for (kind, t) in [(Char, DEV_CHAR), (Block, DEV_BLOCK)] {
            for major in [0, 1, 5, 7, 8, 10, 136, 4095] {
                for minor in [0, 1, 2, 3, 5, 7, 8, 9, 77, 200, 1 << 19] {
                    for access in 1..=ACC_ALL {
                        let want = allows(&rules, kind, major, minor, access);
                        let got = run(&p, (access << 16) | t, major, minor);
                        assert_eq!(
                            got, want as u64,
                            "{kind:?} {major}:{minor} access {access:#b}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
        let defaults = default_rules();
        let Shape::Only(d) = shape(&defaults).unwrap() else {
            unreachable!()
        };
        let n = program(&d).len();
        println!("default device program: {n} instructions");
        assert_eq!(n, 60);
    }

    /// Skips (returns true) when the kernel refuses bpf() itself rather than the program.
    fn bpf_unavailable(e: &LoadError) -> bool {
        if matches!(e.source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
            println!("skipped: bpf() unavailable here: {e}");
            return true;
        }
        false
    }

    #[test]
    fn kernel_loads_the_programs() {
        let mut more = default_rules();
        more.push(DeviceRule::allow(Block, Some(8), None, "r"));
        more.push(DeviceRule::allow(Block, None, Some(16), "rw"));
        more.push(DeviceRule::allow(Char, Some(10), Some(200), "rwm"));
        for rules in [default_rules(), more, vec![DeviceRule::deny_all()]] {
            let Shape::Only(a) = shape(&rules).unwrap() else {
                unreachable!()
            };
            match load_program(&program(&a)) {
                Ok(fd) => assert!(fd.as_raw_fd() > 2),
                Err(e) if bpf_unavailable(&e) => return,
                Err(e) => panic!("{e}"),
            }
        }
        // A program the verifier rejects (r0 never set): the error carries its log.
        let bad = [Insn::new(JMP_EXIT, 0, 0, 0, 0)];
        match load_program(&bad) {
            Ok(_) => panic!("the verifier accepted a program that sets no verdict"),
            Err(e) if bpf_unavailable(&e) => {}
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("verifier log") && msg.contains("R0"), "{msg}");
            }
        }
    }

    struct ScratchDir {
        path: PathBuf,
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn scratch_dir(what: &str) -> ScratchDir {
        let path =
            std::env::temp_dir().join(format!("skiff-devtest-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        ScratchDir { path }
    }

    /// A scratch cgroup that this test created; removed on drop, even after a failed assert.
    struct ScratchCgroup(Cgroup);

    impl Drop for ScratchCgroup {
        fn drop(&mut self) {
            let left = self.0.remove();
            assert!(left.is_empty() || std::thread::panicking(), "left {left:?}");
        }
    }

    /// What the child saw: the step that went wrong and its errno.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Ok,
        Failed { step: u8, errno: i32 },
    }

    /// Forks a child that joins the cgroup through `procs`, opens /dev/null read-write,
    /// creates block device 7:0 at `node` and opens it, which must fail with EPERM.
    fn child_in_cgroup(procs: &Path, node: &Path) -> Seen {
        let procs = CString::new(procs.to_str().unwrap()).unwrap();
        let node = CString::new(node.to_str().unwrap()).unwrap();
        let null = c"/dev/null";
        let mut pipe = [0i32; 2];
        // SAFETY: plain syscalls; the child only makes async-signal-safe calls and _exits.
        unsafe {
            assert_eq!(libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let fail = |step: u8| -> ! {
                    let errno = *libc::__errno_location();
                    let mut msg = [0u8; 5];
                    msg[0] = step;
                    msg[1..].copy_from_slice(&errno.to_ne_bytes());
                    libc::write(pipe[1], msg.as_ptr().cast(), msg.len());
                    libc::_exit(1)
                };
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(1);
                }
                libc::close(fd);
                let fd = libc::open(null.as_ptr(), libc::O_RDWR);
                if fd < 0 {
                    fail(2);
                }
                libc::close(fd);
                if libc::mknod(node.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) != 0 {
                    fail(3);
                }
                let fd = libc::open(node.as_ptr(), libc::O_RDONLY);
                if fd >= 0 {
                    *libc::__errno_location() = 0;
                    fail(4);
                }
                if *libc::__errno_location() != libc::EPERM {
                    fail(4);
                }
                libc::_exit(0);
            }
            libc::close(pipe[1]);
            let mut msg = [0u8; 5];
            let n = libc::read(pipe[0], msg.as_mut_ptr().cast(), msg.len());
            libc::close(pipe[0]);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            if n == 5 {
                return Seen::Failed {
                    step: msg[0],
                    errno: i32::from_ne_bytes(msg[1..].try_into().unwrap()),
                };
            }
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
            Seen::Ok
        }
    }

    /// Creates block device 7:0 at `node` and opens it from this (unrestricted) process, so
    /// that a later EPERM is the cgroup's doing; None (skip) when the check cannot be made.
    fn control_node(node: &Path) -> Option<()> {
        let c = CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: plain syscalls on a path we own.
        unsafe {
            if libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) != 0 {
                let e = std::io::Error::last_os_error();
                println!(
                    "skipped: cannot create a device node in {}: {e}",
                    node.display()
                );
                return None;
            }
            let fd = libc::open(c.as_ptr(), libc::O_RDONLY);
            let e = std::io::Error::last_os_error();
            libc::unlink(c.as_ptr());
            if fd >= 0 {
                libc::close(fd);
            } else if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                println!("skipped: this process itself may not open block device 7:0: {e}");
                return None;
            }
        }
        Some(())
    }

    #[test]
    fn v1_devices_cgroup_enforces_default_rules() {
        if !Path::new("/sys/fs/cgroup/devices/devices.allow").exists() {
            println!("skipped: no v1 devices hierarchy at /sys/fs/cgroup/devices");
            return;
        }
        let h = super::super::Hierarchy::detect(&super::super::Placement {
            parent: "skiff".into(),
            root: None,
        })
        .expect("cgroup detection");
        let Some(own) = h.own.devices_dir.clone().filter(|_| h.mode == Mode::V1) else {
            println!("skipped: skiff would not use the v1 devices hierarchy here");
            return;
        };
        let dir = own.join(format!("skiff-devtest-{}", std::process::id()));
        let cg = ScratchCgroup(Cgroup {
            mode: Mode::V1,
            dirs: vec![dir.clone()],
            memory_dir: None,
            devices_dir: Some(dir.clone()),
        });
        cg.0.create(&Default::default()).unwrap();
        assert!(cg.0.can_restrict_devices());
        cg.0.apply_devices(&default_rules()).unwrap();
        let list = std::fs::read_to_string(dir.join("devices.list")).unwrap();
        let listed: Vec<&str> = list.lines().collect();
        for r in &default_rules()[1..] {
            assert!(listed.contains(&r.v1_line().as_str()), "{list}");
        }
        assert!(!listed.contains(&"a *:* rwm"), "{list}");

        let tmp = scratch_dir("v1");
        let node = tmp.path.join("loop0");
        if control_node(&node).is_none() {
            return;
        }
        assert_eq!(
            child_in_cgroup(&dir.join("cgroup.procs"), &node),
            Seen::Ok,
            "steps: 1 join, 2 open /dev/null, 3 mknod b 7:0, 4 open it (EPERM wanted)"
        );
    }

    #[test]
    fn v1_task_and_container_cgroups_get_a_devices_dir_and_lose_it() {
        let placement = super::super::Placement {
            parent: format!("skiff-devtest-h-{}", std::process::id()),
            root: None,
        };
        let h = super::super::Hierarchy::detect(&placement).expect("cgroup detection");
        if h.mode != Mode::V1 || h.parent.devices_dir.is_none() {
            // (On v2, preparing the parent may move this process: not in a unit test.)
            println!("skipped: no v1 devices hierarchy here");
            return;
        }
        // Removed even when an assert fails, children first (removing twice is harmless).
        struct Release<'a>(&'a super::super::Hierarchy);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let _release = Release(&h);
        let task = h.create_task("t", &Default::default()).unwrap();
        let _cleanup = ScratchCgroup(task.clone());
        let web = task.child("web");
        let _cleanup_web = ScratchCgroup(web.clone());
        web.create(&Default::default()).unwrap();
        let dev = web.devices_dir.clone().unwrap();
        assert!(web.dirs.contains(&dev) && dev.join("devices.list").exists());
        web.apply_devices(&default_rules()).unwrap();
        let list = std::fs::read_to_string(dev.join("devices.list")).unwrap();
        assert!(list.lines().any(|l| l == "c 1:3 rwm"), "{list}");
        let task_list =
            std::fs::read_to_string(task.devices_dir.as_ref().unwrap().join("devices.list"))
                .unwrap();
        assert_eq!(
            task_list.trim(),
            "a *:* rwm",
            "the task cgroup is not restricted"
        );
        assert!(web.remove().is_empty());
        assert!(task.remove().is_empty());
        h.release();
        for d in &h.parent.dirs {
            assert!(!d.exists(), "{} left", d.display());
        }
    }

    #[test]
    fn v2_device_program_enforces_default_rules() {
        // On this hybrid host the unified tree has no controllers, but device programs attach
        // to any cgroup2 cgroup and run besides the v1 controller.
        let Some(own) = super::super::detect::own_unified_dir() else {
            println!("skipped: no cgroup2 hierarchy mounted");
            return;
        };
        let dir = own.join(format!("skiff-devtest-v2-{}", std::process::id()));
        let cg = ScratchCgroup(Cgroup {
            mode: Mode::V2,
            dirs: vec![dir.clone()],
            memory_dir: None,
            devices_dir: Some(dir.clone()),
        });
        if let Err(e) = std::fs::create_dir(&dir) {
            println!("skipped: cannot create {}: {e}", dir.display());
            std::mem::forget(cg);
            return;
        }
        match cg.0.apply_devices(&default_rules()) {
            Ok(()) => {}
            Err(CgroupError::Setup { msg, .. })
                if msg.contains("needs CAP_SYS_ADMIN") || msg.contains("without bpf()") =>
            {
                println!("skipped: {msg}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        // Privileged: nothing to attach.
        cg.0.apply_devices(&privileged_rules()).unwrap();

        let tmp = scratch_dir("v2");
        let node = tmp.path.join("loop0");
        if control_node(&node).is_none() {
            return;
        }
        assert_eq!(
            child_in_cgroup(&dir.join("cgroup.procs"), &node),
            Seen::Ok,
            "steps: 1 join, 2 open /dev/null, 3 mknod b 7:0, 4 open it (EPERM wanted)"
        );
    }
}
