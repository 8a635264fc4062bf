//! DRBD configuration for a two-node resource, rendered in DRBD 9 or DRBD 8.4 syntax.
//!
//! The shape follows drbd.conf(5) for 9.x and drbd.conf-8.4(5): protocol C (synchronous:
//! a write completes only when both disks have it), internal metadata, the replication link's
//! addresses, the after-split-brain policies and `fencing resource-only` with pbxha's own
//! `fence-peer` and `split-brain` handlers.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::error::{Error, Result};

/// Which DRBD generation the file is written for; they disagree on where `fencing` lives
/// (`net` in 9, `disk` in 8.4) and 9 needs `node-id` per host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Syntax {
    V9,
    V84,
}

/// The TCP port DRBD's own examples use for the first resource (drbd.conf(5)).
pub const DEFAULT_PORT: u16 = 7789;

/// One of the two hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdHost {
    /// Must equal `uname -n` on that host: drbdadm picks its `on` section by it.
    pub hostname: String,
    /// The host's address on the dedicated replication link.
    pub address: IpAddr,
}

/// What DRBD does on its own after a split brain, per number of primaries at the time.
/// The defaults only ever discard a side that provably has nothing to lose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfterSplitBrain {
    pub zero_primaries: String,
    pub one_primary: String,
    pub two_primaries: String,
}

impl Default for AfterSplitBrain {
    fn default() -> Self {
        AfterSplitBrain {
            zero_primaries: "discard-zero-changes".into(),
            one_primary: "discard-secondary".into(),
            two_primaries: "disconnect".into(),
        }
    }
}

/// Allowed values, from drbd.conf(5) (`after-sb-0pri`, `after-sb-1pri`, `after-sb-2pri`).
/// drbdadm 9 no longer takes 8.4's `discard-node-NAME`; `discard-local`/`discard-remote` replace it.
const AFTER_SB_0PRI: &[&str] = &[
    "disconnect",
    "discard-younger-primary",
    "discard-older-primary",
    "discard-zero-changes",
    "discard-least-changes",
    "discard-local",
    "discard-remote",
];
const AFTER_SB_1PRI: &[&str] =
    &["disconnect", "consensus", "violently-as0p", "discard-secondary", "call-pri-lost-after-sb"];
const AFTER_SB_2PRI: &[&str] = &["disconnect", "violently-as0p", "call-pri-lost-after-sb"];

/// The handlers pbxha installs: DRBD runs them (through `sh -c`) with `DRBD_RESOURCE` etc. set.
pub const DEFAULT_FENCE_PEER: &str = "/usr/sbin/pbxha replica fence-peer";
pub const DEFAULT_SPLIT_BRAIN: &str = "/usr/sbin/pbxha replica split-brain";

/// A two-node DRBD resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdResourceConfig {
    pub resource: String,
    /// The replicated block device, e.g. `/dev/drbd0`.
    pub device: String,
    /// The backing partition or LV, the same path on both hosts.
    pub disk: String,
    pub port: u16,
    pub hosts: [DrbdHost; 2],
    pub after_split_brain: AfterSplitBrain,
    pub fence_peer_handler: String,
    pub split_brain_handler: String,
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn is_path(s: &str) -> bool {
    s.starts_with('/') && s.len() > 1 && s.bytes().all(|b| b.is_ascii_graphic() && !b"\"';{}#\\".contains(&b))
}

impl DrbdResourceConfig {
    /// Every problem, so one run of `check-config` shows them all.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !is_word(&self.resource) {
            p.push(format!("resource name `{}` must be letters, digits, `-`, `_` or `.`", self.resource));
        }
        for (key, value) in [("device", &self.device), ("disk", &self.disk)] {
            if !is_path(value) {
                p.push(format!("{key} `{value}` must be an absolute path without spaces or quotes"));
            }
        }
        if self.port == 0 {
            p.push("port 0 is not a port".into());
        }
        for h in &self.hosts {
            if !is_word(&h.hostname) {
                p.push(format!("host name `{}` must be a plain host name (as `uname -n` prints it)", h.hostname));
            }
        }
        if self.hosts[0].hostname == self.hosts[1].hostname {
            p.push(format!("both hosts are named `{}`", self.hosts[0].hostname));
        }
        if self.hosts[0].address == self.hosts[1].address {
            p.push(format!("both hosts have the address {}", self.hosts[0].address));
        }
        if self.hosts[0].address.is_ipv4() != self.hosts[1].address.is_ipv4() {
            p.push("one host has an IPv4 and the other an IPv6 address".into());
        }
        let sb = &self.after_split_brain;
        if !AFTER_SB_0PRI.contains(&sb.zero_primaries.as_str()) {
            p.push(format!("after-sb-0pri `{}`: one of {}", sb.zero_primaries, AFTER_SB_0PRI.join(", ")));
        }
        if !AFTER_SB_1PRI.contains(&sb.one_primary.as_str()) {
            p.push(format!("after-sb-1pri `{}`: one of {}", sb.one_primary, AFTER_SB_1PRI.join(", ")));
        }
        if !AFTER_SB_2PRI.contains(&sb.two_primaries.as_str()) {
            p.push(format!("after-sb-2pri `{}`: one of {}", sb.two_primaries, AFTER_SB_2PRI.join(", ")));
        }
        for (key, value) in [("fence-peer", &self.fence_peer_handler), ("split-brain", &self.split_brain_handler)] {
            // The handler is written inside double quotes and run by `sh -c`.
            if value.trim().is_empty() || value.contains(['"', '\\', '\n']) {
                p.push(format!("{key} handler `{value}` must be a non-empty command without quotes or backslashes"));
            }
        }
        p
    }

    /// The resource file in the given syntax.
    pub fn render(&self, syntax: Syntax) -> Result<String> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(Error::DrbdConfig { resource: self.resource.clone(), message: problems.join("; ") });
        }
        let sb = &self.after_split_brain;
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(s, "# Written by pbxha; changes are overwritten.\nresource {} {{", self.resource);
        if syntax == Syntax::V84 {
            let _ = writeln!(s, "  disk {{\n    fencing resource-only;\n  }}");
        }
        let _ = writeln!(s, "  net {{\n    protocol C;");
        if syntax == Syntax::V9 {
            let _ = writeln!(s, "    fencing resource-only;");
        }
        let _ = writeln!(
            s,
            "    after-sb-0pri {};\n    after-sb-1pri {};\n    after-sb-2pri {};\n  }}",
            sb.zero_primaries, sb.one_primary, sb.two_primaries
        );
        let _ = writeln!(
            s,
            "  handlers {{\n    fence-peer \"{}\";\n    split-brain \"{}\";\n  }}",
            self.fence_peer_handler, self.split_brain_handler
        );
        for (node_id, host) in self.hosts.iter().enumerate() {
            let _ = writeln!(s, "  on {} {{", host.hostname);
            if syntax == Syntax::V9 {
                let _ = writeln!(s, "    node-id {node_id};");
            }
            let address = match host.address {
                IpAddr::V4(a) => format!("{a}:{}", self.port),
                IpAddr::V6(a) => format!("ipv6 [{a}]:{}", self.port),
            };
            let _ = writeln!(
                s,
                "    device {};\n    disk {};\n    address {address};\n    meta-disk internal;\n  }}",
                self.device, self.disk
            );
        }
        s.push_str("}\n");
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn config() -> DrbdResourceConfig {
        DrbdResourceConfig {
            resource: "r0".into(),
            device: "/dev/drbd0".into(),
            disk: "/dev/vdb1".into(),
            port: DEFAULT_PORT,
            hosts: [
                DrbdHost { hostname: "alice".into(), address: "198.51.100.1".parse().unwrap() },
                DrbdHost { hostname: "bob".into(), address: "198.51.100.2".parse().unwrap() },
            ],
            after_split_brain: AfterSplitBrain::default(),
            fence_peer_handler: DEFAULT_FENCE_PEER.into(),
            split_brain_handler: DEFAULT_SPLIT_BRAIN.into(),
        }
    }

    /// The drbdadm that parses a syntax: drbd-utils 9 ships the 8.4 parser separately.
    fn drbdadm(syntax: Syntax) -> &'static str {
        match syntax {
            Syntax::V9 => "drbdadm",
            Syntax::V84 => "/usr/lib/drbd/drbdadm-84",
        }
    }

    fn tools_present() -> bool {
        let ok = Command::new("drbdadm").arg("--version").output().is_ok()
            && std::path::Path::new("/usr/lib/drbd/drbdadm-84").exists()
            && Command::new("unshare").arg("--version").output().is_ok();
        if !ok {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "drbd-utils and unshare are required under CI=true");
            eprintln!("skipping: drbd-utils (drbdadm, /usr/lib/drbd/drbdadm-84) or unshare missing");
        }
        ok
    }

    /// Runs `drbdadm ARGS` as `host` (a private UTS namespace sets `uname -n`), returning the
    /// exit status and everything it printed.
    fn drbdadm_as(host: &str, syntax: Syntax, file: &std::path::Path, args: &str) -> (bool, String) {
        let script = format!("hostname {host} && exec {} -c \"$0\" {args}", drbdadm(syntax));
        let out = Command::new("unshare").args(["-u", "sh", "-c", &script]).arg(file).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn validate_with_drbdadm(cfg: &DrbdResourceConfig, syntax: Syntax) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{}.res", cfg.resource));
        std::fs::write(&file, cfg.render(syntax).unwrap()).unwrap();
        for host in &cfg.hosts {
            let (ok, text) = drbdadm_as(&host.hostname, syntax, &file, &format!("dump {}", cfg.resource));
            assert!(ok, "{syntax:?} dump as {}: {text}", host.hostname);
            let (ok, text) = drbdadm_as(&host.hostname, syntax, &file, &format!("-d up {}", cfg.resource));
            assert!(ok, "{syntax:?} up as {}: {text}", host.hostname);
            // The dry run shows what drbdsetup would be told: the policy must reach the kernel.
            for expected in [
                "--protocol=C",
                "--fencing=resource-only",
                &format!("--after-sb-0pri={}", cfg.after_split_brain.zero_primaries),
                &format!("--after-sb-1pri={}", cfg.after_split_brain.one_primary),
                &format!("--after-sb-2pri={}", cfg.after_split_brain.two_primaries),
                &format!("{} internal", cfg.disk),
            ] {
                assert!(text.contains(expected), "{syntax:?} up as {} lacks `{expected}`:\n{text}", host.hostname);
            }
            let peer = cfg.hosts.iter().find(|h| h.hostname != host.hostname).unwrap();
            assert!(text.contains(&format!("{}:{}", peer.address, cfg.port)), "{text}");
        }
        // A host that is not in the resource is refused: the `on` sections matter.
        let (ok, _) = drbdadm_as("carol", syntax, &file, &format!("-d up {}", cfg.resource));
        assert!(!ok, "{syntax:?}: a foreign host must not match");
    }

    #[test]
    fn drbd9_config_passes_real_drbdadm_for_both_hosts() {
        if tools_present() {
            validate_with_drbdadm(&config(), Syntax::V9);
        }
    }

    #[test]
    fn drbd84_config_passes_real_drbdadm_for_both_hosts() {
        if tools_present() {
            validate_with_drbdadm(&config(), Syntax::V84);
        }
    }

    #[test]
    fn configured_split_brain_policy_and_handlers_reach_drbdadm() {
        if !tools_present() {
            return;
        }
        let mut cfg = config();
        cfg.after_split_brain = AfterSplitBrain {
            zero_primaries: "discard-least-changes".into(),
            one_primary: "consensus".into(),
            two_primaries: "call-pri-lost-after-sb".into(),
        };
        cfg.fence_peer_handler = "/opt/pbxha/bin/pbxha replica fence-peer".into();
        for syntax in [Syntax::V9, Syntax::V84] {
            validate_with_drbdadm(&cfg, syntax);
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("r0.res");
            std::fs::write(&file, cfg.render(syntax).unwrap()).unwrap();
            let (ok, dump) = drbdadm_as("alice", syntax, &file, "dump r0");
            assert!(ok, "{dump}");
            assert!(dump.contains("/opt/pbxha/bin/pbxha replica fence-peer"), "{dump}");
            assert!(dump.contains(DEFAULT_SPLIT_BRAIN), "{dump}");
        }
    }

    #[test]
    fn ipv6_link_renders_drbd_address_family() {
        if !tools_present() {
            return;
        }
        let mut cfg = config();
        cfg.hosts[0].address = "2001:db8::1".parse().unwrap();
        cfg.hosts[1].address = "2001:db8::2".parse().unwrap();
        assert!(cfg.render(Syntax::V9).unwrap().contains("address ipv6 [2001:db8::1]:7789;"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r0.res");
        std::fs::write(&file, cfg.render(Syntax::V9).unwrap()).unwrap();
        let (ok, text) = drbdadm_as("alice", Syntax::V9, &file, "-d up r0");
        // drbdadm's dry run shell-escapes the brackets.
        assert!(ok && text.contains(r"ipv6:\[2001:db8::2\]:7789"), "{text}");
    }

    #[test]
    fn each_syntax_is_rejected_by_the_other_generation() {
        // Guards the test above against a drbdadm that accepts anything.
        if !tools_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r0.res");
        std::fs::write(&file, config().render(Syntax::V84).unwrap()).unwrap();
        assert!(!drbdadm_as("alice", Syntax::V9, &file, "dump r0").0);
        std::fs::write(&file, config().render(Syntax::V9).unwrap()).unwrap();
        assert!(!drbdadm_as("alice", Syntax::V84, &file, "dump r0").0);
    }

    #[test]
    fn bad_values_are_all_reported() {
        let mut cfg = config();
        cfg.resource = "r 0".into();
        cfg.disk = "vdb1".into();
        cfg.hosts[1].hostname = "alice".into();
        cfg.after_split_brain.one_primary = "discard-everything".into();
        cfg.after_split_brain.zero_primaries = "discard-node-bob".into();
        cfg.split_brain_handler = "x\"; rm -rf /".into();
        let p = cfg.problems();
        assert_eq!(p.len(), 6, "{p:#?}");
        let err = cfg.render(Syntax::V9).unwrap_err().to_string();
        assert!(err.contains("after-sb-1pri `discard-everything`") && err.contains("disk `vdb1`"), "{err}");
    }
}
