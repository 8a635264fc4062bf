//! The preflight: pure checks of the answers against the gathered [`Facts`], printed as a
//! PASS / WARN / FAIL table. Every row that is not PASS says how to fix it; any FAIL stops
//! the install before a single change.

use std::fmt::Write as _;

use crate::answers::{Answers, Mysql, Storage};
use crate::facts::Facts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do; set on every row that is not PASS.
    pub fix: Option<String>,
}

fn pass(check: &str, detail: impl Into<String>) -> Row {
    Row { check: check.into(), status: Status::Pass, detail: detail.into(), fix: None }
}

fn bad(status: Status, check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Row {
    Row { check: check.into(), status, detail: detail.into(), fix: Some(fix.into()) }
}

/// Every check, in the order an operator would fix them.
pub fn check(a: &Answers, f: &Facts) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.push(match f.euid {
        0 => pass("root", "running as root"),
        uid => bad(Status::Fail, "root", format!("running as uid {uid}"), "run it as root: sudo pbxha install ..."),
    });
    rows.push(match &f.os {
        Some((pretty, id, version)) if supported_os(id, version) => pass("os", pretty.clone()),
        Some((pretty, _, _)) => bad(
            Status::Warn,
            "os",
            format!("{pretty} is not a tested release"),
            "pbxha is tested on Debian 12; other systemd distributions usually work",
        ),
        None => bad(Status::Warn, "os", "no /etc/os-release", "check that this is a systemd Linux distribution"),
    });
    rows.push(if a.node != f.uname {
        bad(
            Status::Fail,
            "hostname",
            format!("node = `{}` but `uname -n` is `{}`", a.node, f.uname),
            format!("answer node = \"{}\", or run `hostnamectl set-hostname {}`", f.uname, a.node),
        )
    } else if a.node == a.peer {
        bad(
            Status::Fail,
            "hostname",
            format!("the peer has this node's name `{}`", a.peer),
            "each node needs its own `uname -n`; rename the peer",
        )
    } else if f.etc_hostname.as_deref().is_some_and(|h| h != a.node) {
        bad(
            Status::Warn,
            "hostname",
            format!("/etc/hostname says `{}`", f.etc_hostname.as_deref().unwrap_or_default()),
            format!("write {} to /etc/hostname so the name survives a reboot", a.node),
        )
    } else {
        pass("hostname", format!("{} (peer {})", a.node, a.peer))
    });
    let mut nics: Vec<&str> = vec![a.public.interface.as_str()];
    nics.extend(a.heartbeat.iter().map(|l| l.interface.as_str()));
    for nic in nics {
        rows.push(match f.interface(nic) {
            None => bad(Status::Fail, "nic", format!("{nic} does not exist"), format!("choose one of: {}", names(f))),
            Some(i) if !i.up => bad(
                Status::Fail,
                "nic",
                format!("{nic} is down or has no carrier"),
                format!("ip link set {nic} up, and check its cable"),
            ),
            Some(i) if i.addresses.is_empty() => {
                bad(Status::Fail, "nic", format!("{nic} has no address"), "give it its permanent address first")
            }
            Some(_) => pass("nic", format!("{nic} is up")),
        });
    }
    let own = a.public.address.or_else(|| f.address_of(&a.public.interface));
    rows.push(match own {
        Some(own) if !own.contains(a.public.vip.addr) => bad(
            Status::Fail,
            "vip-subnet",
            format!("VIP {} is outside {}'s subnet {own}", a.public.vip, a.public.interface),
            "choose a free address in the public subnet, or the interface that has that subnet",
        ),
        Some(own) if own.addr == a.public.vip.addr || a.public.vip.addr == a.public.peer_address => bad(
            Status::Fail,
            "vip-subnet",
            format!("VIP {} is a node's own address", a.public.vip.addr),
            "the VIP must be a third, unused address",
        ),
        Some(own) => pass("vip-subnet", format!("VIP {} inside {own}", a.public.vip)),
        None => bad(
            Status::Fail,
            "vip-subnet",
            format!("no address on {} to compare the VIP with", a.public.interface),
            "give the public interface its address first",
        ),
    });
    rows.push(match &f.vip_answered_by {
        Some(None) => pass("vip-free", format!("nobody answers ARP for {}", a.public.vip.addr)),
        // The first node holds the group while the second joins.
        Some(Some(who)) if a.first_node.is_some() => {
            pass("vip-free", format!("{} is answered by {who}: the first node holds it", a.public.vip.addr))
        }
        Some(Some(who)) => bad(
            Status::Fail,
            "vip-free",
            format!("{} is already answered by {who}", a.public.vip.addr),
            "another host uses this address: choose a free one, or remove it from that host (the old cluster's IPaddr?)",
        ),
        None => bad(Status::Warn, "vip-free", "could not probe the VIP with arping", "apt-get install iputils-arping"),
    });
    for (nic, addr, ok) in &f.peer_answers {
        rows.push(match ok {
            true => pass("peer", format!("{addr} answers on {nic}")),
            false => bad(Status::Fail, "peer", format!("{addr} does not answer ping on {nic}"), format!("boot the peer, check the cable and its address on {nic}; a link the peer is not on cannot carry heartbeats")),
        });
    }
    rows.push(match &f.time_sync {
        Some(daemon) => pass("time-sync", format!("{daemon} running")),
        None => bad(
            Status::Warn,
            "time-sync",
            "no chronyd or systemd-timesyncd running",
            "apt-get install chrony: failover timelines compare both nodes' clocks",
        ),
    });
    if let Storage::Drbd(d) = &a.storage {
        rows.extend(device_rows(d, f));
    }
    rows.push(match f.busy_ports.is_empty() {
        true => pass("ports", format!("UDP {} and TCP {} free", a.port, crate::facts::DRBD_PORT)),
        false => bad(
            Status::Fail,
            "ports",
            format!("in use: {}", f.busy_ports.join("; ")),
            "stop the old heartbeat/DRBD using them (heartbeat listens on 694)",
        ),
    });
    rows.push(match (&a.mysql, &f.mysql_server) {
        (Mysql::None, _) => pass("mysql", "not managed (mysql = none)"),
        (_, Some(version)) => pass("mysql", version.clone()),
        (_, None) => bad(
            Status::Fail,
            "mysql",
            "no mariadbd or mysqld found",
            "apt-get install mariadb-server, or answer mysql mode = \"none\"",
        ),
    });
    rows.push(match f.pbx_found.iter().find(|(p, _)| *p == a.pbx) {
        Some((p, evidence)) => pass("pbx", format!("{} ({evidence})", p.name())),
        None => bad(
            Status::Fail,
            "pbx",
            format!("{} is not installed", a.pbx.name()),
            format!("install {} first, or answer the PBX you run", a.pbx.name()),
        ),
    });
    for conf in &f.other_ha {
        rows.push(bad(
            Status::Warn,
            "other-ha",
            format!("{conf} exists"),
            "stop and disable that cluster stack before starting pbxha; `pbxha install --import-heartbeat /etc/ha.d --dry-run` shows its settings as pbxha.toml",
        ));
    }
    for (key, path, mode) in &f.secrets {
        rows.push(match mode {
            Some(0o600) => pass("secret", format!("{} is 0600", path.display())),
            Some(m) => bad(
                Status::Fail,
                "secret",
                format!("{key}: {} has mode {m:o}", path.display()),
                format!("chmod 600 {}", path.display()),
            ),
            None => bad(
                Status::Fail,
                "secret",
                format!("{key}: {} does not exist", path.display()),
                "write the secret into it, then chmod 600",
            ),
        });
    }
    rows
}

/// The joining node's rows about its peer: the same PBX and MySQL on both, and DRBD devices
/// of the same size (within 1 %: DRBD uses the smaller, a much smaller one wastes the other).
pub fn peer_rows(a: &Answers, own: &Facts, peer: &crate::join::PeerFacts) -> Vec<Row> {
    let mut rows = vec![versions_row("peer-pbx", own.pbx_version.as_deref(), peer.pbx_version.as_deref(), None)];
    if a.mysql != Mysql::None {
        let flavor = |v: &str| v.contains("MariaDB");
        rows.push(versions_row("peer-mysql", own.mysql_server.as_deref(), peer.mysql_server.as_deref(), Some(&flavor)));
    }
    if let Storage::Drbd(d) = &a.storage {
        rows.push(match (own.drbd_bytes, peer.drbd_bytes) {
            (Some(o), Some(p)) if o.abs_diff(p) * 100 <= o.max(p) => {
                pass("drbd-size", format!("{} is {o} bytes, the peer's {p}", d.device))
            }
            (Some(o), Some(p)) => bad(
                Status::Fail,
                "drbd-size",
                format!("{} is {o} bytes, the peer's {p}: more than 1 % apart", d.device),
                "give both nodes backing devices of the same size",
            ),
            _ => bad(
                Status::Fail,
                "drbd-size",
                format!("the size of {} is unknown on one node", d.device),
                "check that the device exists on both (blockdev --getsize64)",
            ),
        });
    }
    rows
}

/// One version compared across the pair; `same_kind` tells versions apart that cannot pair.
fn versions_row(check: &str, own: Option<&str>, peer: Option<&str>, same_kind: Option<&dyn Fn(&str) -> bool>) -> Row {
    match (own, peer) {
        (Some(o), Some(p)) if o == p => pass(check, format!("both run {o}")),
        (Some(o), Some(p)) if same_kind.is_some_and(|k| k(o) != k(p)) => bad(
            Status::Fail,
            check,
            format!("this node runs {o}, the peer {p}"),
            "both servers must be MariaDB, or both MySQL",
        ),
        (Some(o), Some(p)) => bad(
            Status::Warn,
            check,
            format!("this node runs {o}, the peer {p}"),
            "upgrade one so both run the same version before a failover has to rely on it",
        ),
        _ => bad(
            Status::Warn,
            check,
            format!(
                "versions not compared: this node {}, the peer {}",
                own.unwrap_or("unknown"),
                peer.unwrap_or("unknown")
            ),
            "check that both run the same version",
        ),
    }
}

fn device_rows(d: &crate::answers::DrbdAnswers, f: &Facts) -> Vec<Row> {
    let mut rows = Vec::new();
    let dev = &d.device;
    rows.push(match &f.device {
        Some(x) if !x.block => bad(
            Status::Fail,
            "disk",
            format!("{dev} is not a block device"),
            "answer storage.device with a partition or LV, e.g. /dev/sdb1",
        ),
        Some(x) if x.mounted_at.is_some() => bad(
            Status::Fail,
            "disk",
            format!("{dev} is mounted on {}", x.mounted_at.as_deref().unwrap_or_default()),
            "DRBD needs the raw device: umount it (and remove it from /etc/fstab), or choose another",
        ),
        Some(x) if !x.holders.is_empty() => bad(
            Status::Fail,
            "disk",
            format!("{dev} is in use by {}", x.holders.join(", ")),
            "it belongs to LVM, md or swap: choose a free device",
        ),
        Some(x) => match (&x.signature, d.wipe) {
            (Some(sig), false) => bad(
                Status::Fail,
                "disk",
                format!("{dev} holds a {sig} signature"),
                "its data would be destroyed: choose an empty device, or answer storage.wipe = true to wipe it",
            ),
            (Some(sig), true) => bad(
                Status::Warn,
                "disk",
                format!("{dev} holds a {sig} signature and will be WIPED"),
                "the plan asks you to type the device name (under --yes, storage.wipe = true is that consent)",
            ),
            (None, _) => pass("disk", format!("{dev} is a free block device")),
        },
        None => bad(Status::Fail, "disk", format!("{dev} was not examined"), "check the path"),
    });
    rows.push(match &f.drbd_utils {
        Some(v) => pass("drbd-utils", format!("drbdadm {v}")),
        None => bad(Status::Fail, "drbd-utils", "drbdadm not found", "apt-get install drbd-utils"),
    });
    rows.push(match f.drbd_module {
        true => pass("drbd-module", "the kernel has DRBD"),
        false => bad(
            Status::Fail,
            "drbd-module",
            "no DRBD kernel module",
            "apt-get install drbd-dkms (or LINBIT's kmod), or answer storage kind = \"none\"",
        ),
    });
    rows
}

fn supported_os(id: &str, version: &str) -> bool {
    let major: u32 = version.split('.').next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (id == "debian" && major >= 11) || (id == "ubuntu" && major >= 22)
}

fn names(f: &Facts) -> String {
    f.interfaces.iter().filter(|i| i.name != "lo").map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// How many rows FAIL.
pub fn failures(rows: &[Row]) -> usize {
    rows.iter().filter(|r| r.status == Status::Fail).count()
}

/// The table as printed: one row per line, the fix indented under its row.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("preflight\n");
    for r in rows {
        let status = match r.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let _ = writeln!(out, "  {status}  {:<12} {}", r.check, r.detail);
        if let Some(fix) = &r.fix {
            let _ = writeln!(out, "        {:<12} fix: {fix}", "");
        }
    }
    out
}

#[cfg(test)]
mod tests;
