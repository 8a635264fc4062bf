//! The drill's health rows, each judged from what was read (pure, but for the SIP probe and
//! the outbox read, which are one call each).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pbxha_replica::drbd::status::{disk_name, Connection, DiskState, ResourceStatus};
use pbxha_replica::mysql::status::ServerStatus;

use super::probe::ProbeReport;
use super::Row;
use crate::config::Fingerprint;
use crate::fsm::{LinkStatus, NodeStatus};
use crate::mysql_watch::MysqlStatus;
use crate::summary::Role;

fn row(name: &str, passed: bool, detail: impl Into<String>) -> Row {
    Row { name: name.into(), passed, detail: detail.into(), took_ms: 0 }
}

/// Heartbeats heard on every link, both ways.
pub fn heartbeat(links: &[LinkStatus]) -> Row {
    let detail: Vec<String> = links
        .iter()
        .map(|l| match (l.up, l.one_way, l.last_seen_ms) {
            (true, false, Some(ms)) => format!("{}: heard {ms} ms ago", l.name),
            (true, true, _) => format!("{}: ONE-WAY (the peer does not hear us)", l.name),
            (_, _, Some(ms)) => format!("{}: DOWN (last heard {ms} ms ago)", l.name),
            _ => format!("{}: DOWN (never heard)", l.name),
        })
        .collect();
    let passed = !links.is_empty() && links.iter().all(|l| l.up && !l.one_way);
    row("heartbeats", passed, if links.is_empty() { "no links".into() } else { detail.join("; ") })
}

/// Both nodes could hold the group: no fault, a ping target answering (when any is
/// configured), and settled as primary or secondary. A node that has just started is still
/// waiting for `rise` ping answers, and its peer refuses to switch over to it.
pub fn ready(node: &NodeStatus) -> Row {
    let words = |role: Role, healthy: bool, connected: bool| match (role, healthy, connected) {
        (Role::Primary | Role::Secondary, true, true) => None,
        (_, false, _) => Some(format!("{role}, with a fault")),
        (_, _, false) => Some(format!("{role}, no ping target answers yet")),
        _ => Some(role.to_string()),
    };
    let local = words(node.role, node.faults.is_empty(), node.targets == 0 || node.reachable > 0);
    let peer = match (&node.peer.last, node.peer.alive) {
        (Some(p), true) => words(p.role, p.healthy, p.connected()),
        _ => Some("not heard".into()),
    };
    match (local, peer) {
        (None, None) => row("ready", true, "both nodes could hold the group"),
        (local, peer) => {
            let said: Vec<String> = [(node.node.as_str(), local), (node.peer.name.as_str(), peer)]
                .into_iter()
                .filter_map(|(name, w)| w.map(|w| format!("{name}: {w}")))
                .collect();
            row("ready", false, said.join("; "))
        }
    }
}

/// The peer runs the same config as this node.
pub fn config(peer: &str, local: Result<Fingerprint, String>, theirs: Result<Fingerprint, String>) -> Row {
    let (local, theirs) = match (local, theirs) {
        (Ok(l), Ok(t)) => (l, t),
        (Err(e), _) => return row("config", false, format!("this daemon's fingerprint: {e}")),
        (_, Err(e)) => return row("config", false, format!("{peer} gave no fingerprint: {e}")),
    };
    let differ = local.differences(&theirs);
    if differ.is_empty() {
        row("config", true, format!("identical on {peer} ({} sections)", local.0.len()))
    } else {
        row("config", false, format!("{peer}'s config differs in {}", differ.join(", ")))
    }
}

/// DRBD connected and both disks UpToDate.
pub fn drbd(resource: &str, status: Result<ResourceStatus, String>) -> Row {
    let s = match status {
        Ok(s) => s,
        Err(e) => return row("drbd", false, format!("{resource}: cannot read its status: {e}")),
    };
    let peers_ok = !s.peers.is_empty()
        && s.peers.iter().all(|p| p.connection == Connection::Connected && p.disk == DiskState::UpToDate);
    let passed = s.disk == DiskState::UpToDate && peers_ok;
    let detail = if passed {
        format!("{resource}: Connected, UpToDate/UpToDate")
    } else {
        format!("{resource}: local disk {}; {}", disk_name(&s.disk), s.summary())
    };
    row("drbd", passed, detail)
}

/// MySQL replication running both ways, with each side's lag.
pub fn mysql(status: Option<&MysqlStatus>) -> Row {
    let Some(pair) = status.and_then(|s| s.pair.as_ref()) else {
        return row("mysql replication", false, "the daemon has not checked replication yet");
    };
    let side = |s: &Result<ServerStatus, String>| -> (bool, String) {
        match s {
            Ok(s) => match &s.replica {
                Some(r) if r.healthy() => {
                    (true, format!("{} replicates, {} s behind", s.server, r.seconds_behind.unwrap_or(0)))
                }
                Some(_) => (false, format!("{} replication is stopped or failing", s.server)),
                None => (false, format!("{} does not replicate from the other side", s.server)),
            },
            Err(e) => (false, format!("unreachable: {e}")),
        }
    };
    let (l, p) = (side(&pair.local), side(&pair.peer));
    let alerts = status.map(|s| s.alerts.len()).unwrap_or(0);
    let mut detail = format!("{}; {}", l.1, p.1);
    if alerts > 0 {
        detail += &format!("; {alerts} alert(s)");
    }
    row("mysql replication", l.0 && p.0 && alerts == 0, detail)
}

/// The VIP answers SIP OPTIONS now.
pub async fn sip(target: SocketAddr) -> Row {
    let probe = pbxha_telephony::options::Probe::udp(target, Duration::from_secs(2));
    match pbxha_telephony::options::probe(&probe).await {
        Ok(r) if r.status == 200 => {
            row("sip on the vip", true, format!("{target} answered 200 in {} ms", r.rtt.as_millis()))
        }
        Ok(r) => row("sip on the vip", false, format!("{target} answered {} {}", r.status, r.reason)),
        Err(e) => row("sip on the vip", false, format!("{target}: {e}")),
    }
}

/// No mail waits in the outbox (a stuck one is an alert nobody got).
pub fn outbox(db: &Path) -> Row {
    if !has_outbox(db) {
        return row("outbox", true, "empty (no mail was ever queued)");
    }
    match pbxha_watchdog::outbox::Outbox::open_read_only(db).and_then(|o| o.pending()) {
        Ok(p) if p.is_empty() => row("outbox", true, "empty"),
        Ok(p) => row("outbox", false, format!("{} mail(s) not sent; see `pbxha mail list`", p.len())),
        Err(e) => row("outbox", false, format!("cannot read it: {e}")),
    }
}

/// Whether the database has an outbox table (the mailer makes it when `[mail]` is set).
fn has_outbox(db: &Path) -> bool {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(db, flags)
        .is_ok_and(|c| crate::journal::has_table(&c, "outbox").unwrap_or(false))
}

/// What a move's probe saw, in words.
pub fn move_detail(to: &str, r: &ProbeReport, took_ms: u64) -> String {
    let missed = r.probes - r.answered;
    if r.answering {
        format!("outage {} ms as a caller sees it ({missed} of {} probes unanswered); {to} holds the group after {took_ms} ms", r.outage_ms, r.probes)
    } else {
        format!("{to} took the group in {took_ms} ms but its SIP does not answer ({missed} of {} probes unanswered, silent for {} ms)", r.probes, r.outage_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn link(name: &str, up: bool, one_way: bool) -> LinkStatus {
        LinkStatus { name: name.into(), up, last_seen_ms: Some(40), one_way }
    }

    #[test]
    fn heartbeats_pass_only_with_every_link_up_both_ways() {
        assert!(heartbeat(&[link("hb", true, false), link("pub", true, false)]).passed);
        let r = heartbeat(&[link("hb", true, false), link("pub", false, false)]);
        assert!(!r.passed && r.detail.contains("pub: DOWN"), "{r:?}");
        assert!(!heartbeat(&[link("hb", true, true)]).passed);
        assert!(!heartbeat(&[]).passed);
    }

    #[test]
    fn a_differing_config_names_its_sections() {
        let fp = |t: &str| Fingerprint::of(t, "a");
        let same = config("b", Ok(fp("[cluster]\nid = 1\n")), Ok(fp("[cluster]\nid = 1\n")));
        assert!(same.passed, "{same:?}");
        let r = config("b", Ok(fp("[cluster]\nid = 1\n")), Ok(fp("[cluster]\nid = 2\n[ping]\nfall = 3\n")));
        assert_eq!((r.passed, r.detail.as_str()), (false, "b's config differs in cluster, ping"));
        assert!(!config("b", Ok(Fingerprint(BTreeMap::new())), Err("timeout".into())).passed);
    }

    #[test]
    fn drbd_needs_connected_and_uptodate_on_both_sides() {
        let json = |peer_disk: &str, conn: &str| {
            format!(
                r#"[{{"name":"r0","role":"Primary","devices":[{{"volume":0,"disk-state":"UpToDate"}}],
                "connections":[{{"name":"b","connection-state":"{conn}","peer-role":"Secondary",
                "peer_devices":[{{"volume":0,"replication-state":"Established","peer-disk-state":"{peer_disk}"}}]}}]}}]"#
            )
        };
        let read = |j: String| pbxha_replica::drbd::status::parse_status_json(&j).map(|mut v| v.remove(0));
        let ok = drbd("r0", read(json("UpToDate", "Connected")).map_err(|e| e.to_string()));
        assert!(ok.passed, "{ok:?}");
        let bad = drbd("r0", read(json("Outdated", "Connected")).map_err(|e| e.to_string()));
        assert!(!bad.passed, "{bad:?}");
        assert!(!drbd("r0", read(json("UpToDate", "Connecting")).map_err(|e| e.to_string())).passed);
        assert!(!drbd("r0", Err("drbdsetup: not found".into())).passed);
    }

    #[test]
    fn move_detail_says_what_a_caller_saw() {
        let r = ProbeReport { probes: 50, answered: 46, outage_ms: 80, answering: true };
        assert!(move_detail("b", &r, 300).starts_with("outage 80 ms as a caller sees it (4 of 50"));
        let silent = ProbeReport { answering: false, ..r };
        assert!(move_detail("b", &silent, 300).contains("its SIP does not answer"));
    }
}
