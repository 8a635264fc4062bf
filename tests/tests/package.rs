//! The Debian package `scripts/package` builds (scripts/test-all builds it once, from the
//! debug build, before the tests; a release is the same packaging around an optimised
//! binary): its file list and fields, lintian, and a real `dpkg -i` and `dpkg -r` on this
//! machine that must leave the operator's /etc/pbxha alone.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pbxha_tests::*;

/// The newest `pbxha_*.deb` in the target directory's `debian/`.
fn find_deb() -> Option<PathBuf> {
    let dir = pbxha().parent()?.parent()?.join("debian");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("pbxha_") && n.ends_with(".deb"))
        })
        .collect();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// dpkg itself, retried while another installer holds the dpkg lock (other work on this
/// machine runs apt), for at most a minute.
fn dpkg(args: &[&str]) -> Output {
    let mut last = None;
    for _ in 0..60 {
        let out = run(Command::new("dpkg").args(args));
        let locked = !out.status.success() && text(&out).contains("lock");
        if !locked {
            return out;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("dpkg {args:?}: the dpkg lock stayed taken: {}", last.map(|o| text(&o)).unwrap_or_default())
}

/// Removes the package again if the test fails half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "pbxha"]).output();
    }
}

#[test]
fn the_deb_installs_runs_and_removes_cleanly() {
    let deb = find_deb();
    if !require(deb.is_some(), "target/debian/pbxha_*.deb (run scripts/package; scripts/test-all does)")
        || !require(is_root(), "root, for dpkg -i")
        || !require(have("lintian"), "lintian")
    {
        return;
    }
    let deb = deb.unwrap();
    let deb_s = deb.to_str().unwrap();

    let listing = text(&run(Command::new("dpkg-deb").args(["-c", deb_s])));
    for file in [
        "./usr/sbin/pbxha",
        "/systemd/system/pbxha.service",
        "./usr/share/man/man8/pbxha.8.gz",
        "./usr/share/man/man5/pbxha.toml.5.gz",
        "./usr/share/bash-completion/completions/pbxha",
        "./usr/share/zsh/vendor-completions/_pbxha",
        "./usr/share/fish/vendor_completions.d/pbxha.fish",
        "./usr/share/doc/pbxha/examples/pbxha.toml",
        "./usr/share/doc/pbxha/copyright",
    ] {
        assert!(listing.contains(file), "{file} is not in the package:\n{listing}");
    }
    let field = |name: &str| text(&run(Command::new("dpkg-deb").args(["-f", deb_s, name]))).trim().to_string();
    let depends = field("Depends");
    assert!(depends.contains("iproute2") && depends.contains("libc6"), "Depends: {depends}");
    let recommends = field("Recommends");
    assert!(recommends.contains("drbd-utils") && recommends.contains("mariadb-client"), "Recommends: {recommends}");

    let lint = text(&run(Command::new("lintian").args(["--tag-display-limit", "0", deb_s])));
    let errors: Vec<&str> = lint.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{lint}");
    eprintln!("lintian says:\n{lint}");

    let out = dpkg(&["-i", deb_s]);
    let _installed = Installed;
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    let version = text(&run(Command::new("/usr/sbin/pbxha").arg("--version")));
    assert_eq!(version.trim(), format!("pbxha {}", env!("CARGO_PKG_VERSION")));
    let page = text(&run(Command::new("man").args(["-w", "pbxha"])));
    assert_eq!(page.trim(), "/usr/share/man/man8/pbxha.8.gz");
    let page = text(&run(Command::new("man").args(["-w", "5", "pbxha.toml"])));
    assert_eq!(page.trim(), "/usr/share/man/man5/pbxha.toml.5.gz");
    let etc = std::fs::metadata("/etc/pbxha").expect("/etc/pbxha made by the package");
    assert_eq!(etc.permissions().mode() & 0o777, 0o700, "/etc/pbxha is root-only");
    // Installed, not enabled: the setup wizard enables it.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/pbxha.service").exists());

    // What an operator put in /etc/pbxha survives removal of the package.
    let marker = PathBuf::from(format!("/etc/pbxha/test-{}.toml", std::process::id()));
    std::fs::write(&marker, "# written by the package test\n").unwrap();
    let out = dpkg(&["-r", "pbxha"]);
    assert!(out.status.success(), "dpkg -r: {}", text(&out));
    assert!(!Path::new("/usr/sbin/pbxha").exists(), "the binary is removed");
    let kept = std::fs::read_to_string(&marker);
    let _ = std::fs::remove_file(&marker);
    assert_eq!(kept.ok().as_deref(), Some("# written by the package test\n"), "/etc/pbxha contents were touched");
    // Purge removes the directory only when nothing is left in it.
    let out = dpkg(&["--purge", "pbxha"]);
    assert!(out.status.success(), "dpkg --purge: {}", text(&out));
}
