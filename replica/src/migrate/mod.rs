//! Moving PBX directories onto the replicated filesystem and back.
//!
//! For each directory S (e.g. `/etc/asterisk`) on the primary: copy it to T = ROOT/S with all
//! metadata ([`copy`]), verify every file by checksum, rename S aside to
//! `PARENT/.pbxha-replica-backup/data/NAME` (same filesystem, so atomic and never a delete)
//! and put a symlink S -> T in its place. On the secondary, S is set aside and the same symlink
//! created (T appears when this node mounts the replica).
//!
//! Every step is recorded in a journal file `PARENT/.pbxha-replica-backup/journal/NAME`
//! (write-temp, fsync, rename) before or after it runs, and every step checks the filesystem
//! first, so a run killed at any point is completed by running the command again; `undo`
//! restores the original layout the same way.

pub mod copy;

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::holders::{describe, holders};
use copy::{shown, tree_usage, Copier, Progress};

/// Which directories a profile moves (the seed recipes' lists for each service).
pub fn profile_dirs(profile: &str) -> Option<&'static [&'static str]> {
    Some(match profile {
        "asterisk" => {
            &["/etc/asterisk", "/var/lib/asterisk", "/var/spool/asterisk", "/var/log/asterisk", "/usr/lib/asterisk"]
        }
        "freeswitch" => &["/etc/freeswitch", "/var/lib/freeswitch", "/var/log/freeswitch", "/usr/share/freeswitch"],
        "mysql" => &["/var/lib/mysql"],
        "web" => &["/var/www/html"],
        _ => return None,
    })
}

/// The profiles [`profile_dirs`] knows.
pub const PROFILES: &[&str] = &["asterisk", "freeswitch", "mysql", "web"];

/// Which node this runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateRole {
    /// Holds the mounted replica: copies the data into it.
    Primary,
    /// Replica not mounted here: only sets its local copy aside and links.
    Secondary,
}

/// What to migrate.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// Absolute directories; directories of profiles that do not exist here are left out by
    /// [`selection`] before they get here.
    pub dirs: Vec<PathBuf>,
    pub replica_root: PathBuf,
    pub role: MigrateRole,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// Resolves `--profile` and `--dir` into directories. Explicit directories must exist
/// (checked by the plan); profile directories absent on this host are skipped and listed.
pub fn selection(profiles: &[String], dirs: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut chosen: Vec<PathBuf> = Vec::new();
    let mut skipped = Vec::new();
    for p in profiles {
        let list = profile_dirs(p).ok_or_else(|| Error::PlanRefused {
            problems: vec![format!("unknown profile `{p}`: one of {}", PROFILES.join(", "))],
        })?;
        for d in list.iter().map(PathBuf::from) {
            let present = std::fs::symlink_metadata(&d).is_ok() || journal_path(&d).is_ok_and(|j| j.exists());
            if present {
                chosen.push(d);
            } else {
                skipped.push(d);
            }
        }
    }
    chosen.extend(dirs.iter().cloned());
    chosen.dedup();
    Ok((chosen, skipped))
}

/// The journal's record of one directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    role: MigrateRole,
    phase: Phase,
    /// T, as bytes (names need not be UTF-8).
    target: Vec<u8>,
    /// Where `undo` puts the replica's copy aside, chosen once.
    undo_aside: Option<Vec<u8>>,
}

/// In the order a migration passes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Copying,
    Copied,
    /// Verified (primary) or nothing to copy (secondary): S may be set aside.
    Ready,
    SetAside,
    Done,
    Undoing,
}

fn parent_and_name(dir: &Path) -> Result<(PathBuf, OsString)> {
    match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_os_string())),
        _ => Err(Error::migrate(dir, "not a directory that can be moved (no parent)")),
    }
}

fn backup_root(dir: &Path) -> Result<PathBuf> {
    Ok(parent_and_name(dir)?.0.join(".pbxha-replica-backup"))
}

/// Where the original of `dir` is kept.
pub fn backup_path(dir: &Path) -> Result<PathBuf> {
    Ok(backup_root(dir)?.join("data").join(parent_and_name(dir)?.1))
}

fn journal_path(dir: &Path) -> Result<PathBuf> {
    Ok(backup_root(dir)?.join("journal").join(parent_and_name(dir)?.1))
}

/// T for S: the same absolute path under the replica root.
pub fn target_path(root: &Path, dir: &Path) -> PathBuf {
    let rel: PathBuf = dir.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    root.join(rel)
}

fn read_journal(dir: &Path) -> Result<Option<Journal>> {
    let p = journal_path(dir)?;
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::migrate(&p, format!("unreadable journal ({e}); inspect it before retrying"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
    }
}

fn fsync_dir(p: &Path) -> Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| Error::io(format!("syncing {}", p.display()), e))
}

fn write_journal(dir: &Path, j: &Journal) -> Result<()> {
    let p = journal_path(dir)?;
    let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    // Named after the directory, not the process: a run killed between create and rename
    // leaves a file the next run's write of the same journal takes over.
    let mut tmp_name = std::ffi::OsString::from(".tmp-");
    tmp_name.push(parent_and_name(dir)?.1);
    let tmp = parent.join(tmp_name);
    let bytes = serde_json::to_vec(j).map_err(|e| Error::migrate(&p, e.to_string()))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::io(format!("renaming into {}", p.display()), e))?;
    fsync_dir(&parent)
}

fn remove_journal(dir: &Path) -> Result<()> {
    let p = journal_path(dir)?;
    match std::fs::remove_file(&p) {
        Ok(()) => fsync_dir(p.parent().unwrap_or(Path::new("/"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", p.display()), e)),
    }
}

/// One line of the plan.
#[derive(Clone, Debug)]
pub struct PlanItem {
    pub dir: PathBuf,
    pub target: PathBuf,
    pub backup: PathBuf,
    /// Allocated bytes and entries (0 when already copied or on the secondary).
    pub bytes: u64,
    pub entries: u64,
    /// What state an earlier run left (None: fresh).
    pub resume: Option<String>,
}

/// The checked plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    pub free_bytes: Option<u64>,
}

impl Plan {
    /// Human-readable lines, for `--dry-run` and the log.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for i in &self.items {
            s += &format!(
                "{} -> {} ({:.1} MiB, {} entries; original kept at {}){}\n",
                i.dir.display(),
                i.target.display(),
                i.bytes as f64 / (1 << 20) as f64,
                i.entries,
                i.backup.display(),
                i.resume.as_ref().map(|r| format!(" [resuming: {r}]")).unwrap_or_default()
            );
        }
        if let Some(free) = self.free_bytes {
            s += &format!("free on the replica: {:.1} MiB\n", free as f64 / (1 << 20) as f64);
        }
        s
    }
}

fn dev_of(p: &Path) -> Result<u64> {
    std::fs::metadata(p).map(|m| m.dev()).map_err(|e| Error::io(format!("reading {}", p.display()), e))
}

/// Checks everything before touching anything; every problem is reported at once.
pub fn plan(opts: &MigrateOptions) -> Result<Plan> {
    let mut problems = Vec::new();
    let mut items = Vec::new();
    if opts.dirs.is_empty() {
        problems.push("nothing to migrate: give --profile or --dir".to_string());
    }
    let root = &opts.replica_root;
    let mut root_dev = None;
    let mut free_bytes = None;
    if opts.role == MigrateRole::Primary {
        match (std::fs::metadata(root), root.parent().map(std::fs::metadata)) {
            (Ok(m), Some(Ok(pm))) if m.is_dir() => {
                if m.dev() == pm.dev() {
                    problems.push(format!(
                        "{}: not a mount point; mount the replicated filesystem there first",
                        root.display()
                    ));
                }
                root_dev = Some(m.dev());
                free_bytes = nix::sys::statvfs::statvfs(root).ok().map(|s| s.blocks_available() * s.fragment_size());
            }
            (Ok(_), _) => problems.push(format!("{}: replica root is not a directory with a parent", root.display())),
            (Err(e), _) => problems.push(format!("{}: replica root: {e}", root.display())),
        }
    }
    let mut needed = 0u64;
    for (i, dir) in opts.dirs.iter().enumerate() {
        let name = shown(dir.as_os_str());
        if !dir.is_absolute() || dir.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            problems.push(format!("{name}: give an absolute path without `.` or `..`"));
            continue;
        }
        for other in &opts.dirs[i + 1..] {
            if dir.starts_with(other) || other.starts_with(dir) {
                problems.push(format!(
                    "{name} and {}: one contains the other; give only the outer one",
                    shown(other.as_os_str())
                ));
            }
        }
        if dir.starts_with(root) || root.starts_with(dir) {
            problems.push(format!("{name}: overlaps the replica root {}", root.display()));
            continue;
        }
        let target = target_path(root, dir);
        let (backup, journal) = match (backup_path(dir), read_journal(dir)) {
            (Ok(b), Ok(j)) => (b, j),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if let Some(j) = &journal {
            if j.role != opts.role {
                problems.push(format!("{name}: an earlier run as {:?} is unfinished; finish or undo it first", j.role));
            }
            if j.phase == Phase::Undoing {
                problems.push(format!("{name}: an undo is unfinished; run `pbxha replica undo` again first"));
            }
            if j.target != target.as_os_str().as_bytes() {
                problems.push(format!(
                    "{name}: an earlier run used the replica root of {}",
                    shown(OsString::from_vec(j.target.clone()).as_os_str())
                ));
            }
            if j.phase < Phase::SetAside && opts.role == MigrateRole::Primary {
                check_holders(dir, &name, &mut problems);
            }
            items.push(PlanItem {
                dir: dir.clone(),
                target,
                backup,
                bytes: 0,
                entries: 0,
                resume: Some(format!("{:?}", j.phase)),
            });
            continue;
        }
        let meta = match std::fs::symlink_metadata(dir) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        if meta.file_type().is_symlink() {
            let to = std::fs::read_link(dir).map(|t| shown(t.as_os_str())).unwrap_or_default();
            problems.push(format!("{name}: already a symlink (to {to}) and not from an earlier run; leaving it alone"));
            continue;
        }
        if !meta.is_dir() {
            problems.push(format!("{name}: not a directory"));
            continue;
        }
        if let Some(parent) = dir.parent() {
            if dev_of(parent).is_ok_and(|d| d != meta.dev()) {
                problems.push(format!("{name}: is itself a mount point; it cannot be set aside by renaming"));
                continue;
            }
        }
        if std::fs::symlink_metadata(&backup).is_ok() {
            problems.push(format!("{name}: {} already exists; move it away first", backup.display()));
        }
        let mut bytes = 0;
        let mut entries = 0;
        if opts.role == MigrateRole::Primary {
            if root_dev == Some(meta.dev()) {
                problems.push(format!(
                    "{name}: on the same filesystem as {}; the replica must be its own filesystem",
                    root.display()
                ));
            }
            if std::fs::symlink_metadata(&target).is_ok() {
                problems.push(format!(
                    "{name}: {} already exists and no earlier run of this command made it",
                    target.display()
                ));
            }
            match tree_usage(dir) {
                Ok((b, n)) => {
                    bytes = b;
                    entries = n;
                    needed += b;
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        check_holders(dir, &name, &mut problems);
        items.push(PlanItem { dir: dir.clone(), target, backup, bytes, entries, resume: None });
    }
    if let Some(free) = free_bytes {
        // Metadata overhead of the copy is small; 2% plus 16 MiB covers it.
        let want = needed + needed / 50 + (16 << 20);
        if needed > 0 && want > free {
            problems.push(format!(
                "{}: {:.1} MiB free, {:.1} MiB needed",
                root.display(),
                free as f64 / (1 << 20) as f64,
                want as f64 / (1 << 20) as f64
            ));
        }
    }
    if problems.is_empty() {
        Ok(Plan { items, free_bytes })
    } else {
        Err(Error::PlanRefused { problems })
    }
}

fn check_holders(dir: &Path, name: &str, problems: &mut Vec<String>) {
    match holders(dir) {
        Ok(h) if !h.is_empty() => {
            problems.push(format!("{name}: still in use, stop these services first: {}", describe(&h)));
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("{name}: cannot scan /proc for processes using it: {e}")),
    }
}

/// Plans, then migrates each directory, resuming whatever an earlier run left. Returns the plan.
pub fn migrate(opts: &MigrateOptions) -> Result<Plan> {
    let plan = plan(opts)?;
    for item in &plan.items {
        migrate_one(item, opts)?;
    }
    Ok(plan)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(format!("renaming {} to {}", from.display(), to.display()), e))?;
    fsync_dir(from.parent().unwrap_or(Path::new("/")))?;
    fsync_dir(to.parent().unwrap_or(Path::new("/")))
}

fn is_symlink_to(link: &Path, target: &Path) -> bool {
    std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink())
        && std::fs::read_link(link).is_ok_and(|t| t == target)
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn migrate_one(item: &PlanItem, opts: &MigrateOptions) -> Result<()> {
    let (dir, target, backup) = (&item.dir, &item.target, &item.backup);
    let mut j = match read_journal(dir)? {
        Some(j) => j,
        None => {
            let phase = if opts.role == MigrateRole::Primary { Phase::Copying } else { Phase::Ready };
            let j =
                Journal { role: opts.role, phase, target: target.as_os_str().as_bytes().to_vec(), undo_aside: None };
            write_journal(dir, &j)?;
            j
        }
    };
    let step = |j: &mut Journal, phase: Phase| -> Result<()> {
        j.phase = phase;
        write_journal(dir, j)
    };
    if j.phase == Phase::Copying {
        let parent = target.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        let mut copier = Copier::new();
        let mut progress = Progress::new(format!("copy {}", dir.display()), opts.progress);
        copier.copy_tree(dir, target, &mut progress)?;
        progress.finish();
        // The data must be on disk before the original is set aside.
        let f = std::fs::File::open(target).map_err(|e| Error::io(format!("opening {}", target.display()), e))?;
        f.sync_all().map_err(|e| Error::io(format!("syncing {}", target.display()), e))?;
        // SAFETY: syncfs on an open descriptor.
        unsafe { libc::syncfs(std::os::unix::io::AsRawFd::as_raw_fd(&f)) };
        step(&mut j, Phase::Copied)?;
        let mut progress = Progress::new(format!("verify {}", dir.display()), opts.progress);
        copier.verify_tree(dir, target, &mut progress)?;
        progress.finish();
        step(&mut j, Phase::Ready)?;
    }
    if j.phase == Phase::Copied {
        let mut progress = Progress::new(format!("verify {}", dir.display()), opts.progress);
        Copier::new().verify_tree(dir, target, &mut progress)?;
        progress.finish();
        step(&mut j, Phase::Ready)?;
    }
    if j.phase == Phase::Ready {
        let bparent = backup.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(bparent).map_err(|e| Error::io(format!("creating {}", bparent.display()), e))?;
        let dir_is_real = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
        if dir_is_real && !exists(backup) {
            rename(dir, backup)?;
        } else if !(exists(backup) && (!exists(dir) || is_symlink_to(dir, target))) {
            return Err(Error::migrate(
                dir,
                format!("unexpected state: neither it nor {} is where a run leaves them", backup.display()),
            ));
        }
        step(&mut j, Phase::SetAside)?;
    }
    if j.phase == Phase::SetAside {
        if !is_symlink_to(dir, target) {
            if exists(dir) {
                return Err(Error::migrate(
                    dir,
                    "reappeared after being set aside; is a package or service recreating it?",
                ));
            }
            std::os::unix::fs::symlink(target, dir)
                .map_err(|e| Error::io(format!("creating symlink {}", dir.display()), e))?;
            fsync_dir(dir.parent().unwrap_or(Path::new("/")))?;
        }
        step(&mut j, Phase::Done)?;
    }
    if !is_symlink_to(dir, target) {
        return Err(Error::migrate(dir, format!("recorded as migrated but is not a symlink to {}", target.display())));
    }
    Ok(())
}

/// What `undo` did for one directory.
#[derive(Clone, Debug)]
pub struct Undone {
    pub dir: PathBuf,
    /// Where the replica's copy was moved (primary only): it may hold newer data.
    pub replica_copy_kept_at: Option<PathBuf>,
}

/// Restores the original layout for every directory in `dirs` that has a journal; others are
/// left alone. Never deletes: the replica's copy is renamed aside.
pub fn undo(dirs: &[PathBuf]) -> Result<Vec<Undone>> {
    let mut out = Vec::new();
    for dir in dirs {
        let Some(mut j) = read_journal(dir)? else {
            // An undo killed after its journal went may have left the bookkeeping behind.
            remove_bookkeeping(dir)?;
            continue;
        };
        let target = PathBuf::from(OsString::from_vec(j.target.clone()));
        let backup = backup_path(dir)?;
        if j.undo_aside.is_none() {
            let mut name = target.as_os_str().to_os_string();
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            name.push(format!(".pbxha-undone-{stamp}"));
            j.undo_aside = Some(name.into_vec());
        }
        let aside = PathBuf::from(OsString::from_vec(j.undo_aside.clone().unwrap_or_default()));
        let had_copy = j.role == MigrateRole::Primary;
        j.phase = Phase::Undoing;
        write_journal(dir, &j)?;
        if is_symlink_to(dir, &target) {
            std::fs::remove_file(dir).map_err(|e| Error::io(format!("removing symlink {}", dir.display()), e))?;
            fsync_dir(dir.parent().unwrap_or(Path::new("/")))?;
        }
        if exists(&backup) {
            if exists(dir) {
                return Err(Error::migrate(
                    dir,
                    format!("exists while its original is still at {}; resolve by hand", backup.display()),
                ));
            }
            rename(&backup, dir)?;
        }
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Err(Error::migrate(
                dir,
                format!("cannot restore: neither it nor {} is a directory", backup.display()),
            ));
        }
        let mut kept = None;
        if had_copy {
            if exists(&target) {
                rename(&target, &aside)?;
            }
            kept = exists(&aside).then_some(aside);
        }
        remove_journal(dir)?;
        remove_bookkeeping(dir)?;
        out.push(Undone { dir: dir.clone(), replica_copy_kept_at: kept });
    }
    Ok(out)
}

/// Removes the bookkeeping next to `dir` that nothing needs any more: the temporary file of
/// a journal write that was killed before its rename, then the directories if empty.
/// Non-empty ones (other directories' migrations) stay, as remove_dir only removes empty ones.
fn remove_bookkeeping(dir: &Path) -> Result<()> {
    let root = backup_root(dir)?;
    if let Ok(entries) = std::fs::read_dir(root.join("journal")) {
        for e in entries.flatten() {
            if e.file_name().as_bytes().starts_with(b".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for d in [root.join("data"), root.join("journal"), root] {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

/// Directories `undo` looks at when none are named: every profile's.
pub fn all_profile_dirs() -> Vec<PathBuf> {
    PROFILES.iter().filter_map(|p| profile_dirs(p)).flat_map(|d| d.iter().map(PathBuf::from)).collect()
}

#[cfg(test)]
mod tests;
