//! The filesystem on the replicated device: optional fsck, mount with options; on stop, the
//! processes holding files under the mount point get SIGTERM, then SIGKILL after a grace
//! period, the filesystem is unmounted, and /proc/self/mountinfo must confirm it is gone.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pbxha_runner::{Cmd, Runner};

use crate::error::{Error, Result};
use crate::holders::{describe, holders};

/// How long holders get between SIGTERM and SIGKILL unless configured: systemd's default
/// stop timeout is 90 s, but during a failover a PBX that ignores TERM for 10 s is hung.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// What to mount where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesystemSpec {
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// Passed to `mount -o` as is; empty for the defaults.
    pub options: String,
    /// Run `fsck -p` (repair what is safe without asking) before mounting.
    pub fsck: bool,
    pub kill_grace: Duration,
}

/// One line of /proc/self/mountinfo, the parts used here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, proc(5)).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parses /proc/self/mountinfo (proc(5)): field 5 is the mount point; after the ` - `
/// separator come the filesystem type and the source.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = String::from_utf8_lossy(&unescape(r.next()?)).into_owned();
            Some(MountEntry { mount_point: PathBuf::from(OsStr::from_bytes(&unescape(mount_point))), fstype, source })
        })
        .collect()
}

/// The filesystem resource.
pub struct Filesystem {
    spec: FilesystemSpec,
    runner: Arc<dyn Runner>,
}

impl Filesystem {
    pub fn new(spec: FilesystemSpec, runner: Arc<dyn Runner>) -> Self {
        Filesystem { spec, runner }
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Filesystem { mount_point: self.spec.mount_point.clone(), message: message.into() }
    }

    /// What is mounted on the mount point now (the topmost mount if stacked).
    pub fn mounted(&self) -> Result<Option<MountEntry>> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
        Ok(parse_mountinfo(&text).into_iter().rev().find(|m| m.mount_point == self.spec.mount_point))
    }

    fn is_our_device(&self, source: &str) -> bool {
        let dev = &self.spec.device;
        Path::new(source) == dev || std::fs::canonicalize(dev).is_ok_and(|c| c == Path::new(source))
    }

    /// Mounts the device; succeeds at once when it is already mounted there.
    pub async fn start(&self) -> Result<()> {
        if let Some(m) = self.mounted()? {
            if self.is_our_device(&m.source) {
                return Ok(());
            }
            return Err(self.err(format!("{} is mounted there, not {}", m.source, self.spec.device.display())));
        }
        let device = self.spec.device.to_string_lossy().into_owned();
        let mount_point = self.spec.mount_point.to_string_lossy().into_owned();
        if self.spec.fsck {
            let cmd =
                Cmd::new(["fsck", "-T", "-t", &self.spec.fstype, "-p", &device]).timeout(Duration::from_secs(600));
            let out = self.runner.run(&cmd).await?;
            // fsck(8): 0 clean, 1 errors corrected; anything else needs a human.
            if out.code > 1 {
                return Err(self.err(format!("`{cmd}` exited with {}: {}", out.code, out.stderr.trim())));
            }
        }
        let mut argv = vec!["mount".to_string(), "-t".into(), self.spec.fstype.clone()];
        if !self.spec.options.is_empty() {
            argv.extend(["-o".to_string(), self.spec.options.clone()]);
        }
        argv.extend([device, mount_point]);
        self.runner.run_ok(&Cmd::new(argv).timeout(Duration::from_secs(120))).await?;
        Ok(())
    }

    /// Stops every holder, unmounts and checks that the mount is gone. Never lazy: a
    /// detached-but-busy filesystem would keep the DRBD device open and block the demotion.
    pub async fn stop(&self) -> Result<()> {
        const ROUNDS: usize = 3;
        let mp = self.spec.mount_point.clone();
        for round in 1..=ROUNDS {
            if self.mounted()?.is_none() {
                return Ok(());
            }
            self.kill_holders().await?;
            let cmd = Cmd::new(["umount", &*mp.to_string_lossy()]).timeout(Duration::from_secs(60));
            let out = self.runner.run(&cmd).await?;
            if out.success() && self.mounted()?.is_none() {
                return Ok(());
            }
            tracing::warn!(mount_point = %mp.display(), round, stderr = %out.stderr.trim(), "unmount did not take; retrying");
        }
        let left = holders(&mp).map(|h| describe(&h)).unwrap_or_default();
        Err(self.err(format!("still mounted after {ROUNDS} attempts; {left}")))
    }

    async fn kill_holders(&self) -> Result<()> {
        let mp = &self.spec.mount_point;
        let scan = || holders(mp).map_err(|e| Error::io("scanning /proc for processes holding files", e));
        let first = scan()?;
        if first.is_empty() {
            return Ok(());
        }
        tracing::info!(mount_point = %mp.display(), holders = %describe(&first), "sending SIGTERM");
        for h in &first {
            let _ = kill(Pid::from_raw(h.pid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + self.spec.kill_grace;
        let mut left = scan()?;
        while !left.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = scan()?;
        }
        // Bounded: new holders may keep appearing (a supervisor restarting a service).
        for _ in 0..50 {
            if left.is_empty() {
                return Ok(());
            }
            tracing::warn!(mount_point = %mp.display(), holders = %describe(&left), "grace period over; sending SIGKILL");
            for h in &left {
                let _ = kill(Pid::from_raw(h.pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = scan()?;
        }
        Err(self.err(format!("processes keep holding files: {}", describe(&left))))
    }

    /// Mounted with our device: running.
    pub fn is_running(&self) -> Result<bool> {
        Ok(self.mounted()?.is_some_and(|m| self.is_our_device(&m.source)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner, SystemRunner};

    #[test]
    fn mountinfo_with_escapes() {
        // Format from proc(5); the second line has a space in the mount point.
        let text = "36 35 98:0 /mnt1 /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    37 36 7:3 / /srv/my\\040replica rw,relatime shared:2 - ext4 /dev/loop3 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, Path::new("/srv/my replica"));
        assert_eq!((m[1].fstype.as_str(), m[1].source.as_str()), ("ext4", "/dev/loop3"));
    }

    fn spec(mp: &Path) -> FilesystemSpec {
        FilesystemSpec {
            device: "/dev/drbd0".into(),
            mount_point: mp.to_path_buf(),
            fstype: "ext4".into(),
            options: "noatime,nodiratime".into(),
            fsck: true,
            kill_grace: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn start_runs_fsck_then_mount_with_options() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["fsck"], Output { code: 1, ..Output::default() });
        r.on(["mount"], Output::ok(""));
        let dir = tempfile::tempdir().unwrap();
        Filesystem::new(spec(dir.path()), r.clone()).start().await.unwrap();
        let mp = dir.path().display();
        assert_eq!(
            r.argvs(),
            [
                "fsck -T -t ext4 -p /dev/drbd0".to_string(),
                format!("mount -t ext4 -o noatime,nodiratime /dev/drbd0 {mp}")
            ]
        );
    }

    #[tokio::test]
    async fn fsck_that_needs_a_human_stops_the_start() {
        let r = Arc::new(ScriptedRunner::new());
        r.on(["fsck"], Output::failed(4, "UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY."));
        let dir = tempfile::tempdir().unwrap();
        let err = Filesystem::new(spec(dir.path()), r.clone()).start().await.unwrap_err().to_string();
        assert!(err.contains("exited with 4") && err.contains("MANUALLY"), "{err}");
        assert_eq!(r.argvs().len(), 1, "no mount after a failed fsck");
    }

    /// Runs this test binary's test `name` again inside a private mount namespace, so mounts
    /// never reach the host. Returns false (after printing why) when that is impossible here.
    pub(crate) fn run_in_private_mount_ns(name: &str) -> bool {
        let ok = nix::unistd::Uid::effective().is_root()
            && std::process::Command::new("unshare").arg("--version").output().is_ok()
            && std::process::Command::new("mkfs.ext4").arg("-V").output().is_ok()
            && std::process::Command::new("losetup").arg("--version").output().is_ok();
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "root, unshare, losetup and mkfs.ext4 are required under CI=true"
            );
            eprintln!("skipping: needs root, unshare, losetup and mkfs.ext4");
            return false;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(exe)
            .args(["--exact", name, "--include-ignored", "--nocapture", "--test-threads=1"])
            .env("PBXHA_REPLICA_IN_PRIVATE_NS", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{name} in a private mount namespace:\n{text}");
        true
    }

    /// Asserts the caller runs inside the namespace created by [`run_in_private_mount_ns`].
    pub(crate) fn assert_in_private_ns() {
        assert_eq!(
            std::env::var("PBXHA_REPLICA_IN_PRIVATE_NS").as_deref(),
            Ok("1"),
            "this test mounts filesystems; it runs only through its wrapper test"
        );
    }

    /// A loop device over a file, detached on drop.
    pub(crate) struct Loop {
        pub dev: String,
    }

    impl Loop {
        pub fn new(image: &Path, size_mb: u64) -> Loop {
            let f = std::fs::File::create(image).unwrap();
            f.set_len(size_mb << 20).unwrap();
            let out = std::process::Command::new("losetup").args(["-f", "--show"]).arg(image).output().unwrap();
            assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
            Loop { dev: String::from_utf8(out.stdout).unwrap().trim().to_string() }
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.dev).stderr(std::process::Stdio::null()).status();
            let _ = std::process::Command::new("losetup").args(["-d", &self.dev]).status();
        }
    }

    #[test]
    fn ext4_on_loop_stop_kills_holders_and_unmounts() {
        run_in_private_mount_ns("filesystem::tests::ext4_on_loop_inner");
    }

    #[tokio::test]
    #[ignore = "runs inside a private mount namespace through ext4_on_loop_stop_kills_holders_and_unmounts"]
    async fn ext4_on_loop_inner() {
        assert_in_private_ns();
        let dir = tempfile::tempdir().unwrap();
        let lo = Loop::new(&dir.path().join("img"), 32);
        let mkfs = std::process::Command::new("mkfs.ext4").args(["-q", "-F", &lo.dev]).output().unwrap();
        assert!(mkfs.status.success(), "{}", String::from_utf8_lossy(&mkfs.stderr));
        let mp = dir.path().join("replica mnt");
        std::fs::create_dir(&mp).unwrap();
        let mut s = spec(&mp);
        s.device = lo.dev.clone().into();
        s.options = "noatime".into();
        let fs = Filesystem::new(s, Arc::new(SystemRunner));
        fs.start().await.unwrap();
        fs.start().await.unwrap();
        assert!(fs.is_running().unwrap());
        assert_eq!(fs.mounted().unwrap().unwrap().fstype, "ext4");
        std::fs::write(mp.join("held"), b"data").unwrap();

        // One holder leaves on SIGTERM, one ignores it and needs SIGKILL.
        let polite = std::process::Command::new("sleep")
            .arg("600")
            .stdin(std::fs::File::open(mp.join("held")).unwrap())
            .spawn()
            .unwrap();
        let stubborn = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.2; done"])
            .current_dir(&mp)
            .spawn()
            .unwrap();
        // The stubborn one must have run its `trap` before the stop's SIGTERM, or it dies
        // of it: wait (bounded) until the kernel shows SIGTERM ignored (SigIgn bit 15).
        let ignores_term = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("SigIgn:").map(|m| m.trim().to_string())))
                .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ignores_term(stubborn.id()) {
            assert!(std::time::Instant::now() < deadline, "the stubborn holder never ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut children = [polite, stubborn];
        assert!(holders(&mp).unwrap().len() >= 2);

        let started = std::time::Instant::now();
        fs.stop().await.unwrap();
        assert!(fs.mounted().unwrap().is_none(), "no stale mount");
        assert!(!fs.is_running().unwrap());
        use std::os::unix::process::ExitStatusExt;
        let sigs: Vec<_> = children.iter_mut().map(|c| c.wait().unwrap().signal()).collect();
        assert_eq!(sigs, [Some(libc::SIGTERM), Some(libc::SIGKILL)]);
        assert!(started.elapsed() >= Duration::from_secs(1), "the stubborn holder got its grace period");
        fs.stop().await.unwrap();

        // The data survived: mount again and read it.
        fs.start().await.unwrap();
        assert_eq!(std::fs::read(mp.join("held")).unwrap(), b"data");
        fs.stop().await.unwrap();
    }
}
