//! The `[http]` endpoint as its clients see it: `/metrics` read as Prometheus samples and
//! checked by the real `promtool`, and the status page loaded in real headless Chromium.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{pbxha, wait_for};

/// How long one Chromium run may take; a cold start on the loaded 2-core box takes a few
/// seconds.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(90);

/// The value of one sample, `series` written as in the text (`name{label="v"}`).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` as `fetch` gets it, once `until` reads its value (up to 20 s), checked by
/// promtool, with each of `expect` at its value.
pub fn metrics_when(mut fetch: impl FnMut() -> Option<String>, until: (&str, f64), expect: &[(&str, f64)]) -> String {
    let metrics = wait_for(Duration::from_secs(20), &format!("{} = {} in /metrics", until.0, until.1), || {
        fetch().filter(|m| sample(m, until.0) == Some(until.1))
    });
    promtool_check(&metrics);
    for (series, value) in expect {
        assert_eq!(sample(&metrics, series), Some(*value), "{series} in\n{metrics}");
    }
    metrics
}

/// `promtool check metrics` must accept the text without a word (it also prints lint
/// warnings, such as a counter without `_total`).
pub fn promtool_check(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child.stdin.take().expect("promtool's stdin").write_all(metrics.as_bytes()).expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{metrics}");
}

/// Headless Chromium inside the network namespace `netns` (never on the host's network)
/// loads `url`, saves a screenshot to `png` and returns the DOM after load. Each run gets a
/// fresh profile and its own process group, killed afterwards, so none of Chromium's helper
/// processes outlive it.
pub fn chromium(netns: &str, url: &str, png: &Path) -> String {
    let run = |extra: &str| {
        let profile = tempfile::tempdir().expect("creating Chromium's profile directory");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "chromium"])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1100,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(extra)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().expect("starting chromium");
        let pgid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = rx.recv_timeout(CHROMIUM_LIMIT);
        // SAFETY: kill(2) on the process group this function created.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let out = out.expect("chromium finished within 90 s").expect("chromium ran");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&format!("--screenshot={}", png.display()));
    let bytes = std::fs::read(png).unwrap_or_default();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "no screenshot of {url} at {}", png.display());
    run("--dump-dom")
}

/// Where a screenshot goes: beside the build (target/debug/screenshots/), where it outlives
/// the test's temporary directory and stays out of the repository.
pub fn screenshot_path(name: &str) -> PathBuf {
    let exe = pbxha();
    let dir = exe.parent().expect("the pbxha binary has a directory").join("screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir.join(name)
}
