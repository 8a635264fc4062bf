//! Tree copy that keeps everything a PBX or database cares about: owner, group, mode,
//! timestamps, symlinks, hard links, sparse files, xattrs and POSIX ACLs (which are the xattrs
//! `system.posix_acl_access` / `system.posix_acl_default`), and a checksum verification.
//!
//! Resumable: a regular file's mtime is set last, so a file whose size, owner, mode and mtime
//! already match was completed by an earlier run and is skipped; anything else is rewritten.
//! Names are handled as bytes; symlinks are never followed.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const BUF: usize = 1 << 20;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn ctx(what: &str, p: &Path) -> impl FnOnce(io::Error) -> Error {
    let c = format!("{what} {}", p.display());
    move |e| Error::io(c, e)
}

/// All xattr names and values of `p` (not following symlinks), sorted by name.
pub fn xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: the buffer pointer and length describe `names`.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: as above.
            let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            if n >= 0 {
                value.truncate(n as usize);
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                value.resize(value.len() * 16, 0);
            } else {
                return Err(e);
            }
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Makes `dst`'s xattrs equal to `want`: sets each, removes extras (an inherited default ACL).
fn set_xattrs(dst: &Path, want: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let have = xattrs(dst)?;
    let c = cpath(dst)?;
    for (name, _) in have.iter().filter(|(n, _)| !want.iter().any(|(w, _)| w == n)) {
        let cname = CString::new(name.clone()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
        // SAFETY: valid C strings.
        if unsafe { libc::lremovexattr(c.as_ptr(), cname.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (name, value) in want {
        if have.iter().any(|(n, v)| n == name && v == value) {
            continue;
        }
        let cname = CString::new(name.clone()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name"))?;
        // SAFETY: valid C strings and a buffer of `value.len()` bytes.
        if unsafe { libc::lsetxattr(c.as_ptr(), cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Owner, mode, xattrs, then timestamps (last: the others would change ctime only, but
/// writing must not follow them).
fn apply_metadata(src: &Path, dst: &Path, m: &Metadata) -> Result<()> {
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(ctx("setting owner of", dst))?;
    let symlink = m.file_type().is_symlink();
    if !symlink {
        // After chown, which clears set-user-ID bits.
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(ctx("setting mode of", dst))?;
    }
    let want = xattrs(src).map_err(ctx("reading xattrs of", src))?;
    if !(symlink && want.is_empty()) {
        set_xattrs(dst, &want).map_err(ctx("setting xattrs of", dst))?;
    }
    let times = [
        libc::timespec { tv_sec: m.atime() as libc::time_t, tv_nsec: m.atime_nsec() as _ },
        libc::timespec { tv_sec: m.mtime() as libc::time_t, tv_nsec: m.mtime_nsec() as _ },
    ];
    let c = cpath(dst).map_err(ctx("path", dst))?;
    // SAFETY: a valid C string and a two-element timespec array.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(Error::io(format!("setting times of {}", dst.display()), io::Error::last_os_error()));
    }
    Ok(())
}

/// Running totals, for progress and the benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub bytes: u64,
    pub files: u64,
}

/// Reports progress on stderr at most once a second.
pub struct Progress {
    label: String,
    started: Instant,
    last: Instant,
    enabled: bool,
    pub totals: Totals,
}

impl Progress {
    pub fn new(label: impl Into<String>, enabled: bool) -> Self {
        let now = Instant::now();
        Progress { label: label.into(), started: now, last: now, enabled, totals: Totals::default() }
    }

    fn add(&mut self, bytes: u64, files: u64) {
        self.totals.bytes += bytes;
        self.totals.files += files;
        if self.enabled && self.last.elapsed().as_secs() >= 1 {
            self.last = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// `LABEL: N MiB, N files, N MiB/s, N files/s`.
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mib = self.totals.bytes as f64 / (1 << 20) as f64;
        format!(
            "{}: {mib:.1} MiB, {} files, {:.1} MiB/s, {:.0} files/s",
            self.label,
            self.totals.files,
            mib / secs,
            self.totals.files as f64 / secs
        )
    }

    pub fn finish(&self) {
        if self.enabled {
            eprintln!("{} (done)", self.line());
        }
    }
}

/// Copies trees; remembers hard links and the checksums it computed while copying.
#[derive(Default)]
pub struct Copier {
    /// (dev, inode) of a multiply-linked source file -> its first copy.
    links: HashMap<(u64, u64), PathBuf>,
    /// Checksums of source files computed while copying them in this process.
    hashes: HashMap<PathBuf, [u8; 32]>,
    buf: Vec<u8>,
}

impl Copier {
    pub fn new() -> Self {
        Copier { buf: vec![0; BUF], ..Self::default() }
    }

    /// Copies `src` (a directory) to `dst`, which is created if missing.
    pub fn copy_tree(&mut self, src: &Path, dst: &Path, progress: &mut Progress) -> Result<()> {
        let m = std::fs::symlink_metadata(src).map_err(ctx("reading", src))?;
        self.copy_entry(src, dst, &m, progress, false)
    }

    fn copy_entry(&mut self, src: &Path, dst: &Path, m: &Metadata, progress: &mut Progress, force: bool) -> Result<()> {
        let ft = m.file_type();
        let existing = std::fs::symlink_metadata(dst).ok();
        if ft.is_dir() {
            match &existing {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    remove(dst)?;
                    std::fs::create_dir(dst).map_err(ctx("creating", dst))?;
                }
                None => std::fs::create_dir(dst).map_err(ctx("creating", dst))?,
            }
            let mut entries: Vec<_> = std::fs::read_dir(src)
                .map_err(ctx("listing", src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(ctx("listing", src))?;
            entries.sort();
            for name in entries {
                let (s, d) = (src.join(&name), dst.join(&name));
                let cm = std::fs::symlink_metadata(&s).map_err(ctx("reading", &s))?;
                self.copy_entry(&s, &d, &cm, progress, false)?;
            }
            // Last, so adding children does not move the directory's mtime afterwards.
            apply_metadata(src, dst, m)?;
            progress.add(0, 1);
            return Ok(());
        }
        if m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key) {
                let first_ino = std::fs::symlink_metadata(first).map_err(ctx("reading", first))?.ino();
                if existing.as_ref().is_some_and(|e| e.ino() == first_ino) {
                    return Ok(());
                }
                if existing.is_some() {
                    remove(dst)?;
                }
                std::fs::hard_link(first, dst).map_err(ctx("linking", dst))?;
                progress.add(0, 1);
                return Ok(());
            }
            self.links.insert(key, dst.to_path_buf());
        }
        if ft.is_file() {
            let done = existing.as_ref().is_some_and(|e| {
                e.is_file()
                    && e.len() == m.len()
                    && e.mtime() == m.mtime()
                    && e.mtime_nsec() == m.mtime_nsec()
                    && e.uid() == m.uid()
                    && e.gid() == m.gid()
                    && e.mode() == m.mode()
            });
            if done && !force {
                return Ok(());
            }
            if existing.as_ref().is_some_and(|e| !e.is_file()) {
                remove(dst)?;
            }
            self.copy_file(src, dst, m, progress)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(src).map_err(ctx("reading symlink", src))?;
            let same = existing.as_ref().is_some_and(|e| e.file_type().is_symlink())
                && std::fs::read_link(dst).is_ok_and(|t| t == target);
            if !same {
                if existing.is_some() {
                    remove(dst)?;
                }
                std::os::unix::fs::symlink(&target, dst).map_err(ctx("creating symlink", dst))?;
            }
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
            let same = existing
                .as_ref()
                .is_some_and(|e| e.mode() & libc::S_IFMT == m.mode() & libc::S_IFMT && e.rdev() == m.rdev());
            if !same {
                if existing.is_some() {
                    remove(dst)?;
                }
                let c = cpath(dst).map_err(ctx("path", dst))?;
                // SAFETY: a valid C string; mode and device come from the source's stat.
                if unsafe { libc::mknod(c.as_ptr(), m.mode() as libc::mode_t, m.rdev() as libc::dev_t) } != 0 {
                    return Err(Error::io(format!("creating {}", dst.display()), io::Error::last_os_error()));
                }
            }
        }
        apply_metadata(src, dst, m)?;
        progress.add(0, 1);
        Ok(())
    }

    /// Copies data only where the source has data (SEEK_DATA/SEEK_HOLE), hashing the whole
    /// logical content (holes as zeros) on the way.
    fn copy_file(&mut self, src: &Path, dst: &Path, m: &Metadata, progress: &mut Progress) -> Result<()> {
        let input = open_noatime(src).map_err(ctx("opening", src))?;
        let output = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dst)
            .map_err(ctx("creating", dst))?;
        let len = m.len();
        let mut hasher = Sha256::new();
        let mut off = 0u64;
        while off < len {
            let (data, hole) = match next_data(&input, off, len).map_err(ctx("seeking in", src))? {
                Some(r) => r,
                None => (len, len),
            };
            hash_zeros(&mut hasher, data - off);
            let mut pos = data;
            while pos < hole {
                let want = ((hole - pos) as usize).min(self.buf.len());
                let n = input.read_at(&mut self.buf[..want], pos).map_err(ctx("reading", src))?;
                if n == 0 {
                    return Err(Error::migrate(src, "file shrank while being copied; is a service still writing it?"));
                }
                hasher.update(&self.buf[..n]);
                output.write_all_at(&self.buf[..n], pos).map_err(ctx("writing", dst))?;
                pos += n as u64;
                progress.add(n as u64, 0);
            }
            off = hole;
        }
        output.set_len(len).map_err(ctx("sizing", dst))?;
        self.hashes.insert(src.to_path_buf(), hasher.finalize().into());
        Ok(())
    }

    /// Compares `dst` with `src` entry by entry: type, owner, mode, size, mtime, xattrs,
    /// symlink targets, hard-link structure and every regular file's SHA-256. A file whose
    /// checksum differs is copied again once and checked again.
    pub fn verify_tree(&mut self, src: &Path, dst: &Path, progress: &mut Progress) -> Result<()> {
        let mut problems = Vec::new();
        let mut groups: HashMap<(u64, u64), u64> = HashMap::new();
        self.verify_entry(src, dst, progress, &mut problems, &mut groups)?;
        if problems.is_empty() {
            Ok(())
        } else {
            let n = problems.len();
            problems.truncate(20);
            Err(Error::migrate(dst, format!("{n} difference(s) from {}: {}", src.display(), problems.join("; "))))
        }
    }

    fn verify_entry(
        &mut self,
        src: &Path,
        dst: &Path,
        progress: &mut Progress,
        problems: &mut Vec<String>,
        groups: &mut HashMap<(u64, u64), u64>,
    ) -> Result<()> {
        let sm = std::fs::symlink_metadata(src).map_err(ctx("reading", src))?;
        let Ok(dm) = std::fs::symlink_metadata(dst) else {
            problems.push(format!("{} is missing", dst.display()));
            return Ok(());
        };
        let mut differs = Vec::new();
        if sm.mode() != dm.mode() {
            differs.push(format!("mode {:o} vs {:o}", sm.mode(), dm.mode()));
        }
        if (sm.uid(), sm.gid()) != (dm.uid(), dm.gid()) {
            differs.push("owner".to_string());
        }
        if !sm.is_dir() && (sm.len(), sm.mtime(), sm.mtime_nsec()) != (dm.len(), dm.mtime(), dm.mtime_nsec()) {
            differs.push("size or mtime".to_string());
        }
        if sm.nlink() > 1 && !sm.is_dir() {
            // The n-th distinct source inode must map to one destination inode.
            let next = groups.len() as u64;
            let id = *groups.entry((sm.dev(), sm.ino())).or_insert(next);
            let did = *groups.entry((u64::MAX, dm.ino())).or_insert(id);
            if id != did || dm.nlink() != sm.nlink() {
                differs.push("hard links".to_string());
            }
        }
        if xattrs(src).map_err(ctx("reading xattrs of", src))? != xattrs(dst).map_err(ctx("reading xattrs of", dst))? {
            differs.push("xattrs/ACLs".to_string());
        }
        let ft = sm.file_type();
        if ft.is_symlink() && std::fs::read_link(src).ok() != std::fs::read_link(dst).ok() {
            differs.push("symlink target".to_string());
        }
        if ft.is_file() && dm.is_file() {
            let want = match self.hashes.get(src) {
                Some(h) => *h,
                None => self.hash_file(src, progress)?,
            };
            if self.hash_file(dst, progress)? != want {
                tracing::warn!(path = %dst.display(), "checksum differs; copying again");
                self.copy_file(src, dst, &sm, progress)?;
                apply_metadata(src, dst, &sm)?;
                if self.hash_file(dst, progress)? != self.hash_file(src, progress)? {
                    differs.push("content (SHA-256) even after a second copy".to_string());
                }
            }
        }
        if !differs.is_empty() {
            problems.push(format!("{}: {}", dst.display(), differs.join(", ")));
        }
        progress.add(0, 1);
        if ft.is_dir() && dm.is_dir() {
            let names: Vec<_> = std::fs::read_dir(src)
                .map_err(ctx("listing", src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(ctx("listing", src))?;
            let extra = std::fs::read_dir(dst)
                .map_err(ctx("listing", dst))?
                .flatten()
                .filter(|e| !names.contains(&e.file_name()));
            for e in extra {
                problems.push(format!("{} is not in the source", e.path().display()));
            }
            for name in names {
                self.verify_entry(&src.join(&name), &dst.join(&name), progress, problems, groups)?;
            }
        }
        Ok(())
    }

    fn hash_file(&mut self, p: &Path, progress: &mut Progress) -> Result<[u8; 32]> {
        let f = open_noatime(p).map_err(ctx("opening", p))?;
        let len = f.metadata().map_err(ctx("reading", p))?.len();
        let mut hasher = Sha256::new();
        let mut off = 0u64;
        while off < len {
            let (data, hole) = next_data(&f, off, len).map_err(ctx("seeking in", p))?.unwrap_or((len, len));
            hash_zeros(&mut hasher, data - off);
            let mut pos = data;
            while pos < hole {
                let want = ((hole - pos) as usize).min(self.buf.len());
                let n = f.read_at(&mut self.buf[..want], pos).map_err(ctx("reading", p))?;
                if n == 0 {
                    break;
                }
                hasher.update(&self.buf[..n]);
                pos += n as u64;
                progress.add(n as u64, 0);
            }
            off = hole;
        }
        Ok(hasher.finalize().into())
    }
}

/// Opens for reading without updating the source's access time where allowed (owner or root).
fn open_noatime(p: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(p).or_else(|_| File::open(p))
}

/// The next data region at or after `off`: `(start, end)`, or None when only a hole remains.
fn next_data(f: &File, off: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let fd = f.as_raw_fd();
    // SAFETY: lseek on an open descriptor.
    let data = unsafe { libc::lseek(fd, off as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            // Filesystems without SEEK_DATA: all data.
            Some(libc::EINVAL) => Ok(Some((off, len))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
    if hole < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((data as u64, (hole as u64).min(len))))
}

fn hash_zeros(h: &mut Sha256, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// Removes a non-directory, or an empty directory left by an interrupted run. A non-empty
/// directory in the way is an error, never a recursive delete.
fn remove(p: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(p).map_err(ctx("reading", p))?;
    if m.is_dir() {
        std::fs::remove_dir(p).map_err(ctx("removing (refusing a recursive delete)", p))
    } else {
        std::fs::remove_file(p).map_err(ctx("removing", p))
    }
}

/// Bytes a tree occupies (allocated blocks, so sparse files count as stored) and its entries.
pub fn tree_usage(p: &Path) -> Result<(u64, u64)> {
    let m = std::fs::symlink_metadata(p).map_err(ctx("reading", p))?;
    let mut bytes = m.blocks() * 512;
    let mut entries = 1;
    if m.is_dir() {
        for e in std::fs::read_dir(p).map_err(ctx("listing", p))? {
            let e = e.map_err(ctx("listing", p))?;
            let (b, n) = tree_usage(&e.path())?;
            bytes += b;
            entries += n;
        }
    }
    Ok((bytes, entries))
}

/// The name as text for messages, with invalid UTF-8 shown escaped.
pub fn shown(p: &OsStr) -> String {
    p.as_bytes().escape_ascii().to_string()
}
