//! `pbxha run` with `[watchdog]` against the FUSE watchdog double
//! (watchdog/tests/fixtures/fuse_watchdog.py, real ioctls forwarded by the kernel): the daemon
//! sets the timeout, kicks from its main loop every third of it, and disarms with the magic
//! `V` on a clean stop — but not when it is killed, which is what lets the watchdog reset a
//! node whose daemon died. Needs root, /dev/fuse and python3-fusepy; fails without them when
//! CI=true and is skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pbxha_tests::*;

const PYTHON: &str = "/usr/bin/python3";

/// The mounted double; unmounted and killed (by PID) on drop, also when the test fails.
struct Double {
    process: Guard,
    mount: PathBuf,
    log: PathBuf,
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).stderr(Stdio::null()).status();
        self.process.signal(libc::SIGTERM);
    }
}

impl Double {
    fn ops(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

fn config(dir: &Path, device: &Path) -> PathBuf {
    let [a, _] = write_loopback_pair(dir, "wdt", free_udp_port(), |_| {
        format!("[watchdog]\ndevice = \"{}\"\ntimeout = \"3s\"\n", device.display())
    });
    a
}

fn keepalives(ops: &[String]) -> usize {
    ops.iter().filter(|o| *o == "keepalive").count()
}

#[test]
fn the_daemon_kicks_the_device_and_disarms_it_only_on_a_clean_stop() {
    let fusepy =
        Command::new(PYTHON).args(["-c", "import fusepy"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !require(is_root(), "root (FUSE mount)")
        || !require(Path::new("/dev/fuse").exists(), "/dev/fuse")
        || !require(fusepy, "/usr/bin/python3 with fusepy (Debian python3-fusepy)")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mount, log) = (dir.path().join("mnt"), dir.path().join("ops.log"));
    std::fs::create_dir(&mount).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../watchdog/tests/fixtures/fuse_watchdog.py");
    let process = Guard::spawn("fuse_watchdog.py", Command::new(PYTHON).arg(fixture).arg(&mount).arg(&log));
    let double = Double { process, mount, log };
    let device = double.mount.join("watchdog");
    wait_for(Duration::from_secs(20), "the FUSE double to mount", || device.exists().then_some(()));
    let config = config(dir.path(), &device);
    let run = |name| {
        Guard::spawn(
            name,
            Command::new(pbxha())
                .arg("--config")
                .arg(&config)
                .args(["run", "--node", "a"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };

    // Kicked every second (a third of 3 s) from the main loop, then a clean stop.
    let mut a = run("a");
    wait_for(Duration::from_secs(20), "four kicks", || (keepalives(&double.ops()) >= 4).then_some(()));
    assert_eq!(double.ops()[..2], ["open", "settimeout 3"]);
    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(Duration::from_secs(10)), "a stops on SIGTERM");
    let ops = wait_for(Duration::from_secs(5), "the close", || {
        Some(double.ops()).filter(|o| o.last().is_some_and(|l| l == "close"))
    });
    assert_eq!(ops[ops.len() - 2..], ["write V", "close"], "{ops:?}");

    // Killed: closed by the kernel without the magic V, so a real watchdog would fire.
    // The double keeps its log open, so the second run is read from where the first ended.
    let seen = double.ops().len();
    let since = || double.ops().split_off(seen);
    let mut a = run("a again");
    wait_for(Duration::from_secs(20), "a kick", || (keepalives(&since()) >= 2).then_some(()));
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)));
    let ops = wait_for(Duration::from_secs(5), "the close", || {
        Some(since()).filter(|o| o.last().is_some_and(|l| l == "close"))
    });
    assert!(!ops.iter().any(|o| o == "write V"), "{ops:?}");
}
