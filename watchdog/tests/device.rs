//! The real `LinuxWatchdog` against a FUSE file that answers the watchdog ioctls
//! (`tests/fixtures/fuse_watchdog.py`, Debian python3-fusepy on libfuse2): this machine has no
//! `/dev/watchdog` and no softdog module. Needs root and /dev/fuse; without them the test
//! fails when CI=true and is skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbxha_watchdog::device::{Kicker, LinuxWatchdog};

const PYTHON: &str = "/usr/bin/python3";

fn prerequisites() -> bool {
    let fusepy =
        Command::new(PYTHON).args(["-c", "import fusepy"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if fusepy && root && Path::new("/dev/fuse").exists() {
        return true;
    }
    let why = "needs root, /dev/fuse and /usr/bin/python3 with fusepy (Debian python3-fusepy)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

/// The mounted double: unmounted, killed (by PID) and reaped on drop, also when a test fails.
struct Double {
    child: Child,
    mount: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Double {
    fn start() -> Double {
        let dir = tempfile::tempdir().unwrap();
        let (mount, log) = (dir.path().join("mnt"), dir.path().join("ops.log"));
        std::fs::create_dir(&mount).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuse_watchdog.py");
        let child = Command::new(PYTHON).arg(fixture).arg(&mount).arg(&log).stdout(Stdio::null()).spawn().unwrap();
        let double = Double { child, mount, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !double.device().exists() {
            assert!(Instant::now() < deadline, "the FUSE watchdog double did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        double
    }

    fn device(&self) -> PathBuf {
        self.mount.join("watchdog")
    }

    fn ops(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The double logs `close` from FUSE's release, which comes after close(2) returns.
    fn wait_ops(&self, last: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ops = self.ops();
            if ops.last().map(String::as_str) == Some(last) || Instant::now() > deadline {
                return ops;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_kicker_sets_the_timeout_kicks_and_closes_with_the_magic_v() {
    if !prerequisites() {
        return;
    }
    let double = Double::start();
    let device = LinuxWatchdog::open(&double.device()).unwrap();
    let mut kicker = Kicker::arm(Box::new(device), Duration::from_secs(12)).unwrap();
    assert_eq!(kicker.interval, Duration::from_secs(4), "a third of what the driver granted");
    kicker.kick().unwrap();
    kicker.kick().unwrap();
    kicker.stop().unwrap();
    let ops = double.wait_ops("close");
    assert_eq!(ops, ["open", "settimeout 12", "keepalive", "keepalive", "keepalive", "write V", "close"]);
}
