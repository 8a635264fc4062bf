//! `pbxha release`, systemd's `ExecStopPost=` (issue 10, item 4): in a network namespace of
//! the test's own with a veth pair, it removes the VIP a dead daemon left behind, keeps it
//! while a service that outlived the daemon still runs, and refuses while the daemon runs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use pbxha_tests::*;

const VIP: &str = "198.51.100.100";

/// A namespace with `pub0` (one end of a veth pair) up; deleted on drop, with its
/// interfaces, also when the test fails.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("pbxrel{}", std::process::id());
        let ns = Netns(name);
        ns.ip(&["netns", "add", &ns.0]);
        ns.ip(&["-n", &ns.0, "link", "add", "pub0", "type", "veth", "peer", "name", "pub1"]);
        ns.ip(&["-n", &ns.0, "link", "set", "pub0", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }

    fn add_vip(&self) {
        self.ip(&["-n", &self.0, "addr", "add", &format!("{VIP}/24"), "dev", "pub0"]);
    }

    fn has_vip(&self) -> bool {
        let out =
            Command::new("ip").args(["-n", &self.0, "-o", "addr", "show", "dev", "pub0"]).output().expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/24"))
    }

    fn release(&self, config: &Path) -> (Option<i32>, String) {
        let out: Output = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(pbxha())
            .arg("--config")
            .arg(config)
            .arg("release")
            .output()
            .expect("running pbxha release");
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const VIP_RESOURCE: &str = r#"
[[resource]]
name = "vip"
kind = "vip"
address = "198.51.100.100/24"
interface = "pub0"
guard = false
"#;

#[test]
fn release_removes_a_left_vip_unless_a_survivor_serves_and_refuses_while_the_daemon_runs() {
    if !require(is_root(), "root (network namespaces)") || !require(have("ip"), "`ip` on PATH") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("service-runs");
    let survivor = format!(
        "{VIP_RESOURCE}\n[[resource]]\nname = \"pbx\"\nkind = \"service\"\nstart = [\"true\"]\nstop = [\"true\"]\nstatus = [\"test\", \"-e\", \"{}\"]\n",
        flag.display()
    );
    let [a, _] = write_loopback_pair(dir.path(), "release", 28794, |_| survivor.clone());
    let ns = Netns::new();
    ns.add_vip();

    // A service that outlived its daemon still runs: the VIP stays.
    std::fs::write(&flag, "").unwrap();
    let (code, text) = ns.release(&a);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("keeping the VIPs: resource `pbx` still runs"), "{text}");
    assert!(ns.has_vip());

    // Nothing serves any more: removed, and said so; a second run finds nothing to remove.
    std::fs::remove_file(&flag).unwrap();
    let (code, text) = ns.release(&a);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.trim(), format!("pbxha release: removed VIP {VIP}/24 from pub0"));
    assert!(!ns.has_vip());
    let (_, text) = ns.release(&a);
    assert_eq!(text.trim(), format!("pbxha release: VIP {VIP} was not on pub0"));

    // While the daemon runs it manages the VIPs itself: release refuses.
    let log_path = dir.path().join("a.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut daemon = Guard::spawn(
        "a",
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(pbxha())
            .arg("--config")
            .arg(&a)
            .args(["run", "--node", "a"])
            .stderr(log),
    );
    wait_for(Duration::from_secs(20), "a's control socket", || status_json(&a));
    let (code, text) = ns.release(&a);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("the daemon runs"), "{text}");

    // Its sentinel outlives it only as long as it takes to decide.
    let sentinel: u32 = wait_for(Duration::from_secs(10), "the sentinel's pid in a's log", || {
        let log = std::fs::read_to_string(&log_path).ok()?;
        let line = log.lines().find(|l| l.contains("sentinel started"))?;
        line.rsplit("pid=").next()?.trim().parse().ok()
    });
    daemon.signal(libc::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(5)));
    wait_for(Duration::from_secs(10), "the sentinel to finish", || (!alive(sentinel)).then_some(()));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("sentinel: the pbxha daemon died"), "{log}");
}
