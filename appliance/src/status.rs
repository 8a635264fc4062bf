//! `pbxha status` as a person reads it: who holds the group, whether the peer and every link
//! are alive, what each resource is doing, and why a node is in fault.

use std::fmt::Write;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::calls::{CallsStatus, DrainStatus, CALL_POLL};
use crate::connectivity::TargetStatus;
use crate::fsm::{NodeStatus, TakeoverEnd};
use crate::journal::Entry;
use crate::membership::{DropCounters, LinksStats};
use crate::mysql_watch::MysqlStatus;
use crate::notify::MailStatus;
use crate::probes::ProbeStatus;
use crate::resources::{MemberState, ResourceStatus};

/// Everything `pbxha status` shows: what the daemon answers on its control socket and
/// publishes for `[http]`, and what the `pbxha` commands read back from that JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub cluster: String,
    pub version: String,
    pub uptime_s: u64,
    #[serde(flatten)]
    pub node: NodeStatus,
    pub resources: Vec<ResourceStatus>,
    pub heartbeat: LinksStats,
    pub ping: Vec<TargetStatus>,
    pub nonlocal_bind: Option<bool>,
    pub journal: bool,
    pub last_failover: Option<LastFailover>,
    /// The running (or last) call drain: calls remaining, for `pbxha switchover` to show.
    pub drain: Option<DrainStatus>,
    /// This node's PBX calls at the last reading, while the group is here or being handed
    /// over (what the heartbeat carries as `calls`).
    pub calls: Option<CallsStatus>,
    /// The outbox, when `[mail]` is configured: what waits and why.
    pub mail: Option<MailStatus>,
    /// Each `[[check]]`'s last state change.
    pub checks: Vec<CheckStatus>,
    /// Each `[[probe]]`: SIP health, last RTT and recent verdicts.
    pub probes: Vec<ProbeStatus>,
    /// Master-master replication health, when `[mysql]` is in that mode.
    pub mysql: Option<MysqlStatus>,
}

impl DaemonStatus {
    /// The status in a control-socket reply, typed; `None` when the reply has none (or it
    /// is another daemon version's that does not read as this one's).
    pub fn from_reply(reply: &crate::control::Reply) -> Option<DaemonStatus> {
        reply.status.as_ref().and_then(|v| DaemonStatus::deserialize(v).ok())
    }
}

/// A check as `pbxha status` shows it; `pbxha checks` has the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    /// `unknown` until the first verdict, then `up` or `down`.
    pub state: String,
    pub since_ms: Option<u64>,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastFailover {
    pub at_ms: u64,
    pub message: String,
    /// How long from decision to a running group; none while in progress or if it failed.
    pub took_ms: Option<u64>,
}

/// What the daemon publishes for the endpoint.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub status: DaemonStatus,
    pub failovers: FailoverCounts,
    /// The first `drbd` resource as last read, when the group has one.
    pub drbd: Option<pbxha_replica::drbd::status::ResourceStatus>,
    /// When the daemon took it: "last heard" ages are counted from here.
    pub taken: Instant,
}

/// The failovers this node took since it started, for `pbxha_failovers_total`, and the
/// switchovers it refused, for `pbxha_switchovers_refused_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailoverCounts {
    pub unplanned: u64,
    pub planned: u64,
    /// Takeovers refused because the VIP answered ARP (the split-brain guard). The fsm
    /// re-probes the VIP every second after one without starting again, so each refusal
    /// here is one takeover, however long the VIP keeps answering.
    pub refused: u64,
    /// `pbxha switchover` requests the daemon refused (peer not ready, a drain running...):
    /// an operator's request, not a failover, so counted apart.
    pub switchovers_refused: u64,
    /// The last failover from its first sign of trouble to its end (the VIP's first SIP
    /// answer when a `vip` probe waits for it), as its journal timeline shows it.
    pub last_outage_ms: Option<u64>,
}

impl FailoverCounts {
    /// A takeover ended as `end`; `entries` is its timeline. A refused one counts as
    /// refused only: the group did not move, so it has no outage of its own either.
    pub fn finished(&mut self, planned: bool, end: TakeoverEnd, entries: &[Entry]) {
        if end == TakeoverEnd::Refused {
            self.refused += 1;
            return;
        }
        *if planned { &mut self.planned } else { &mut self.unplanned } += 1;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            self.last_outage_ms = Some(last.at_ms.saturating_sub(first.at_ms));
        }
    }
}

pub fn render(s: &DaemonStatus) -> String {
    let mut o = String::new();
    let n = &s.node;
    let _ = writeln!(
        o,
        "Cluster {}: node {} is {} (group {})   pbxha {}, up {}",
        s.cluster,
        n.node,
        n.role,
        n.group.as_str(),
        s.version,
        human_secs(s.uptime_s)
    );
    let peer = match (&n.peer.alive, &n.peer.last) {
        (true, Some(p)) => format!(
            "{} is {}, {}{}{}{}",
            n.peer.name,
            p.role,
            if p.healthy { "healthy" } else { "UNHEALTHY" },
            if p.targets > 0 { format!(", ping {}/{}", p.reachable, p.targets) } else { String::new() },
            if p.handover { ", handing over" } else { "" },
            p.calls.map_or(String::new(), |c| format!(", {c} call(s)"))
        ),
        (false, Some(p)) => format!("{} is DEAD (last seen as {})", n.peer.name, p.role),
        _ => format!("{} not heard yet", n.peer.name),
    };
    let _ = writeln!(o, "Peer    {peer}");
    for (i, l) in s.heartbeat.links.iter().enumerate() {
        let up = n.links.get(i).is_some_and(|x| x.up);
        let one_way = n.links.get(i).is_some_and(|x| x.one_way);
        let seen = l.last_seen_ms.map_or("never".to_string(), |ms| format!("{ms} ms ago"));
        let _ = writeln!(
            o,
            "{:<8}{:<10} {:<7} last seen {:<12} accepted {:<8} dropped {}",
            if i == 0 { "Links" } else { "" },
            l.name,
            match (up, one_way) {
                (true, true) => "ONE-WAY",
                (true, false) => "up",
                (false, _) => "DOWN",
            },
            seen,
            l.accepted,
            drops(&l.drops)
        );
    }
    if s.ping.is_empty() {
        let _ = writeln!(o, "Ping    no targets configured (no tie-breaker: a cut-off node cannot tell)");
    }
    for (i, t) in s.ping.iter().enumerate() {
        let state = match t.up {
            Some(true) => "up",
            Some(false) => "DOWN",
            None => "waiting",
        };
        let rtt = t.last_rtt_ms.map_or(String::new(), |r| format!("rtt {r:.1} ms"));
        let err = t.last_error.as_deref().map_or(String::new(), |e| format!("  ({e})"));
        let _ = writeln!(o, "{:<8}{:<22} {:<8} {rtt}{err}", if i == 0 { "Ping" } else { "" }, t.target, state);
    }
    if s.resources.is_empty() {
        let _ = writeln!(o, "Group   no resources configured");
    } else {
        let _ = writeln!(o, "Group   {:<12} {:<8} {:<9} {:<8} LAST ACTION", "RESOURCE", "KIND", "STATE", "RESTARTS");
        for r in &s.resources {
            let last = match (r.last_action, r.last_action_ms) {
                (Some(a), Some(ms)) => format!("{} {ms} ms", a.as_str()),
                _ => String::new(),
            };
            let err = r.last_error.as_deref().map_or(String::new(), |e| format!("  error: {e}"));
            let _ =
                writeln!(o, "        {:<12} {:<8} {:<9} {:<8} {last}{err}", r.name, r.kind, state(r.state), r.restarts);
        }
    }
    if let Some(c) = &s.calls {
        let _ = writeln!(o, "Calls   {}", calls_line(c));
    }
    for (i, p) in s.probes.iter().enumerate() {
        let state = match (p.active, p.state.as_str()) {
            (false, _) => "idle",
            (true, "down") => "DOWN",
            (true, state) => state,
        };
        let rtt = p.last_rtt_ms.map_or(String::new(), |r| format!("rtt {r:.1} ms  "));
        let err = p.last_error.as_deref().filter(|_| p.state == "down").map_or(String::new(), |e| format!("  ({e})"));
        let _ = writeln!(
            o,
            "{:<8}{:<12} {:<9} {:<26} {:<7} {rtt}[{}]{err}",
            if i == 0 { "SIP" } else { "" },
            p.name,
            p.role,
            p.target,
            state,
            p.recent.join(" ")
        );
    }
    let faults = if n.faults.is_empty() { "none".to_string() } else { n.faults.join("; ") };
    let _ = writeln!(o, "Faults  {faults}");
    let mut flags = Vec::new();
    if n.admin_standby {
        flags.push("standby (run `pbxha online` to return)");
    }
    if n.draining {
        flags.push("draining calls before a switchover");
    }
    if n.handover {
        flags.push("handing over to the peer");
    }
    if !s.journal {
        flags.push("JOURNAL DISABLED (see the log)");
    }
    match s.nonlocal_bind {
        Some(true) => flags.push("ip_nonlocal_bind on"),
        Some(false) => flags.push("ip_nonlocal_bind OFF"),
        None => {}
    }
    let _ = writeln!(o, "Notes   {}", flags.join("; "));
    if let Some(m) = &s.mail {
        let err = m.last_error.as_deref().map_or(String::new(), |e| format!("; last error: {e}"));
        let _ = writeln!(o, "Mail    {} waiting in the outbox{err}", m.pending);
    }
    if !s.checks.is_empty() {
        let checks: Vec<String> = s
            .checks
            .iter()
            .map(|c| match c.state.as_str() {
                "down" => format!("{} DOWN ({})", c.name, c.detail),
                state => format!("{} {state}", c.name),
            })
            .collect();
        let _ = writeln!(o, "Checks  {}", checks.join(", "));
    }
    if let Some(m) = &s.mysql {
        let _ = writeln!(o, "MySQL   {m}");
        for a in &m.alerts {
            let _ = writeln!(o, "        ALERT {a}");
        }
    }
    if let Some(f) = &s.last_failover {
        let took = f.took_ms.map_or("not finished".to_string(), |ms| format!("group up in {ms} ms"));
        let _ = writeln!(o, "Last failover  {}  {} ({took})", utc(f.at_ms), f.message);
    }
    o
}

fn calls_line(c: &CallsStatus) -> String {
    let count = match (c.calls, c.unknown.as_deref()) {
        (Some(n), _) => format!("{n} active"),
        (None, Some(why)) => format!("UNKNOWN ({why})"),
        (None, None) => "UNKNOWN".into(),
    };
    format!("{count} on {} (counted every {} s)", c.resource, CALL_POLL.as_secs())
}

fn state(s: MemberState) -> &'static str {
    match s {
        MemberState::Running => "running",
        MemberState::Stopped => "stopped",
        MemberState::Starting => "starting",
        MemberState::Stopping => "stopping",
        MemberState::Failed => "FAILED",
    }
}

fn drops(d: &DropCounters) -> String {
    let parts: Vec<String> = [
        ("truncated", d.truncated),
        ("oversized", d.oversized),
        ("malformed", d.malformed),
        ("foreign-cluster", d.foreign_cluster),
        ("forged", d.forged),
        ("replayed", d.replayed),
        ("unknown-node", d.unknown_node),
        ("wrong-link", d.wrong_link),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        format!("{} ({})", d.total(), parts.join(", "))
    }
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from unix milliseconds: the journal's timestamp to the second.
pub fn utc(ms: u64) -> String {
    let precise = crate::journal::utc(ms);
    // `YYYY-MM-DD HH:MM:SS` is the first 19 characters, all ASCII.
    format!("{} UTC", &precise[..19])
}

#[cfg(test)]
mod tests {
    use super::FailoverCounts;
    use crate::calls::CallsStatus;
    use crate::fsm::{RecordKind, TakeoverEnd, REFUSED_THE_GROUP};
    use crate::journal::{Entry, Kind};

    #[test]
    fn a_finished_failover_counts_by_kind_and_keeps_its_outage() {
        let mut f = FailoverCounts::default();
        let at = |ms| Entry {
            at_ms: ms,
            node: "b".into(),
            kind: Kind::Record(RecordKind::Suspicion),
            message: String::new(),
        };
        f.finished(false, TakeoverEnd::Failed, &[at(1_000), at(1_600), at(2_250)]);
        f.finished(true, TakeoverEnd::GroupUp, &[at(5_000), at(5_020)]);
        assert_eq!(f, FailoverCounts { unplanned: 1, planned: 1, last_outage_ms: Some(20), ..Default::default() });
    }

    #[test]
    fn a_takeover_the_guard_refused_counts_as_refused_only() {
        let rec = |ms, kind, message: &str| Entry {
            at_ms: ms,
            node: "b".into(),
            kind: Kind::Record(kind),
            message: message.into(),
        };
        let begin = rec(1_000, RecordKind::FailoverBegin, "b takes over: peer a is dead");
        let refused = [
            begin.clone(),
            rec(
                1_120,
                RecordKind::SplitBrain,
                &format!("{REFUSED_THE_GROUP}: 198.51.100.100 answered ARP; probing the VIP every 1000 ms"),
            ),
            rec(1_121, RecordKind::FailoverEnd, crate::fsm::TAKEOVER_FAILED),
        ];
        let mut f = FailoverCounts::default();
        f.finished(false, TakeoverEnd::Refused, &refused);
        assert_eq!(f, FailoverCounts { refused: 1, ..Default::default() });
        // A member that would not start fails the takeover without any refusal: the group
        // moved off the dead peer, so that is an unplanned failover (which failed).
        let failed = [begin, rec(1_300, RecordKind::FailoverEnd, crate::fsm::TAKEOVER_FAILED)];
        f.finished(false, TakeoverEnd::Failed, &failed);
        assert_eq!(f, FailoverCounts { refused: 1, unplanned: 1, last_outage_ms: Some(300), ..Default::default() });
    }

    /// What the daemon answers reads back as the same status: the commands read the JSON
    /// typed, so a field the reader does not know the way the writer wrote it shows here.
    #[test]
    fn status_json_reads_back_as_written() {
        let json = serde_json::json!({
            "cluster": "pbx", "version": "0.1.0", "uptime_s": 42,
            "node": "b", "role": "primary", "group": "running", "faults": ["lost ping targets"],
            "admin_standby": false, "handover": false, "draining": true, "reachable": 1, "targets": 2,
            "peer": {"name": "a", "alive": true, "last": {
                "role": "secondary", "group": "stopped", "healthy": true, "reachable": 2, "targets": 2,
                "handover": true, "calls": 3, "fence_request": false, "fenced": false,
                "drbd": {"role": "secondary", "disk": "up-to-date"}}},
            "links": [{"name": "hb", "up": true, "last_seen_ms": 12, "one_way": false}],
            "resources": [{"name": "vip", "kind": "vip", "state": "running", "restarts": 0, "restarts_total": 1,
                "last_error": null, "last_action": "start", "last_action_ms": 30}],
            "heartbeat": {"links": [{"name": "hb", "last-seen-ms": 12, "accepted": 9, "send-errors": 1,
                "drops": {"truncated": 0, "oversized": 0, "malformed": 0, "foreign-cluster": 2, "forged": 0,
                    "replayed": 0, "unknown-node": 0, "wrong-link": 0}}]},
            "ping": [{"target": "198.51.100.1", "up": true, "last_rtt_ms": 0.25, "consecutive_ok": 3,
                "consecutive_fail": 0, "last_error": null}],
            "nonlocal_bind": true, "journal": true,
            "last_failover": {"at_ms": 1_795_348_800_000_u64, "message": "b takes over: peer a dead", "took_ms": 900},
            "drain": {"resource": "pbx", "calls": 2, "unknown": null, "elapsed_s": 4, "deadline_s": 300, "finished": false},
            "calls": {"resource": "pbx", "calls": null, "unknown": "timeout"},
            "mail": {"pending": 1, "last_error": "connection refused"},
            "checks": [{"name": "disk", "state": "down", "since_ms": 5, "detail": "95% full"}],
            "probes": [{"name": "trunk", "role": "trunk", "target": "udp:198.51.100.5:5060", "active": true,
                "state": "up", "last_rtt_ms": 1.5, "failures_in_row": 0, "recent": ["200"], "last_error": null}],
            "mysql": null,
        });
        let typed: super::DaemonStatus = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), json);
    }

    #[test]
    fn calls_show_the_count_or_why_it_is_unknown() {
        let c = |calls, unknown: Option<&str>| CallsStatus {
            resource: "pbx".into(),
            calls,
            unknown: unknown.map(Into::into),
        };
        assert_eq!(super::calls_line(&c(Some(3), None)), "3 active on pbx (counted every 5 s)");
        assert_eq!(
            super::calls_line(&c(None, Some("Unable to connect to remote asterisk"))),
            "UNKNOWN (Unable to connect to remote asterisk) on pbx (counted every 5 s)"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_795_348_800_000), "2026-11-22 12:00:00 UTC");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
