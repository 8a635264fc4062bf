//! The text of every mail pbxha sends, rendered from plain data (pure functions).
//!
//! The switchover report is the one mail per failover or switchover: who held the group,
//! who holds it now, why, and the timeline from the journal with each step's offset from the
//! first entry, so "the VIP answered SIP 1.8 s after the decision" can be read off directly.
//! The appliance converts its journal entries into [`TimelineEntry`] values.

use std::fmt::Write as _;

use crate::outbox::{format_ms, NewMail};

/// One line of a failover timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at_ms: u64,
    /// The node that recorded it.
    pub node: String,
    /// What happened: "suspicion: peer b silent on all links", "start vip", "GARP sent", ...
    pub what: String,
    /// For steps with a duration, such as a resource start.
    pub duration_ms: Option<u64>,
    /// `Some(false)` marks a failed step.
    pub ok: Option<bool>,
}

/// Planned or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    Failover,
    Switchover,
}

/// Everything a switchover mail says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchoverReport {
    pub cluster: String,
    /// The journal's failover id: the dedup key, so a re-render after a restart is one mail.
    pub failover_id: u64,
    pub kind: Move,
    pub old_primary: Option<String>,
    pub new_primary: String,
    pub reason: String,
    pub timeline: Vec<TimelineEntry>,
    /// Calls up on the old primary when the move began, when known.
    pub active_calls: Option<u32>,
    /// One-line states, e.g. "r0: Primary, UpToDate/UpToDate, Connected".
    pub drbd: Option<String>,
    pub mysql: Option<String>,
}

/// Renders the switchover mail.
pub fn switchover_mail(r: &SwitchoverReport) -> NewMail {
    let kind = match r.kind {
        Move::Failover => "failover",
        Move::Switchover => "switchover",
    };
    let old = r.old_primary.as_deref().unwrap_or("(none)");
    let subject = format!("[{}] {kind}: {old} → {} ({})", r.cluster, r.new_primary, r.reason);
    let mut body = String::new();
    let _ = writeln!(body, "Cluster:      {}", r.cluster);
    let _ = writeln!(body, "Event:        {kind} #{}", r.failover_id);
    let _ = writeln!(body, "Old primary:  {old}");
    let _ = writeln!(body, "New primary:  {}", r.new_primary);
    let _ = writeln!(body, "Reason:       {}", r.reason);
    if let (Some(first), Some(last)) = (r.timeline.first(), r.timeline.last()) {
        let _ = writeln!(body, "Began:        {}", format_ms(first.at_ms));
        let _ = writeln!(body, "Took:         {:.3} s", last.at_ms.saturating_sub(first.at_ms) as f64 / 1000.0);
    }
    let calls = r.active_calls.map_or_else(|| "unknown".to_string(), |n| n.to_string());
    let _ = writeln!(body, "Active calls: {calls}");
    body.push_str("\nTimeline (offset from the first entry):\n");
    let start = r.timeline.first().map_or(0, |e| e.at_ms);
    for e in &r.timeline {
        let _ = write!(body, "  +{:>8.3}s  {:<8} {}", e.at_ms.saturating_sub(start) as f64 / 1000.0, e.node, e.what);
        if let Some(d) = e.duration_ms {
            let _ = write!(body, " ({d} ms)");
        }
        if e.ok == Some(false) {
            body.push_str(" FAILED");
        }
        body.push('\n');
    }
    if r.timeline.is_empty() {
        body.push_str("  (no journal entries)\n");
    }
    let _ = writeln!(body, "\nDRBD:  {}", r.drbd.as_deref().unwrap_or("not used"));
    let _ = writeln!(body, "MySQL: {}", r.mysql.as_deref().unwrap_or("not used"));
    NewMail { dedup_key: format!("{kind}:{}", r.failover_id), subject, body }
}

/// The other events that are mailed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alert {
    CheckDown { check: String, detail: String },
    CheckUp { check: String, detail: String },
    SplitBrain { detail: String },
    ReplicationBroken { detail: String },
    ReplicationRestored { detail: String },
    NodeStandby { node: String },
    NodeOnline { node: String },
}

/// Renders an alert that happened at `at_ms` on `node`. The dedup key includes the time, so
/// the same check going down twice is two mails, but one event queued twice is one.
pub fn alert_mail(cluster: &str, node: &str, alert: &Alert, at_ms: u64) -> NewMail {
    let (key, subject, detail) = match alert {
        Alert::CheckDown { check, detail } => {
            (format!("check:{check}:down"), format!("check {check} is DOWN"), detail.clone())
        }
        Alert::CheckUp { check, detail } => {
            (format!("check:{check}:up"), format!("check {check} is up again"), detail.clone())
        }
        Alert::SplitBrain { detail } => {
            ("split-brain".into(), "SPLIT BRAIN: both nodes were primary".into(), detail.clone())
        }
        Alert::ReplicationBroken { detail } => {
            ("replication:broken".into(), "MySQL replication is BROKEN".into(), detail.clone())
        }
        Alert::ReplicationRestored { detail } => {
            ("replication:ok".into(), "MySQL replication works again".into(), detail.clone())
        }
        Alert::NodeStandby { node } => (format!("standby:{node}"), format!("node {node} is in standby"), String::new()),
        Alert::NodeOnline { node } => (format!("online:{node}"), format!("node {node} is online"), String::new()),
    };
    let mut body = format!("Cluster: {cluster}\nNode:    {node}\nTime:    {}\n", format_ms(at_ms));
    if !detail.is_empty() {
        let _ = write!(body, "\n{detail}\n");
    }
    NewMail { dedup_key: format!("{key}:{at_ms}"), subject: format!("[{cluster}] {subject}"), body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ms: u64, what: &str, duration_ms: Option<u64>) -> TimelineEntry {
        TimelineEntry { at_ms, node: "b".into(), what: what.into(), duration_ms, ok: Some(true) }
    }

    #[test]
    fn switchover_mail_has_subject_and_timeline() {
        let t0 = 1_712_345_678_000;
        let r = SwitchoverReport {
            cluster: "pbx".into(),
            failover_id: 7,
            kind: Move::Failover,
            old_primary: Some("a".into()),
            new_primary: "b".into(),
            reason: "peer dead".into(),
            timeline: vec![
                entry(t0, "suspicion: peer a silent on all links", None),
                entry(t0 + 1000, "decision: take over", None),
                entry(t0 + 1010, "start vip 198.51.100.100/24", Some(35)),
                TimelineEntry { ok: Some(false), ..entry(t0 + 1100, "start pbx", Some(800)) },
                entry(t0 + 1900, "first SIP answer on the VIP", None),
                entry(t0 + 1950, "GARP sent", None),
            ],
            active_calls: Some(3),
            drbd: Some("r0: Primary UpToDate".into()),
            mysql: None,
        };
        let m = switchover_mail(&r);
        assert_eq!(m.subject, "[pbx] failover: a → b (peer dead)");
        assert_eq!(m.dedup_key, "failover:7");
        assert!(m.body.contains("Active calls: 3"));
        assert!(m.body.contains("Took:         1.950 s"));
        assert!(m.body.contains("+   1.010s  b        start vip 198.51.100.100/24 (35 ms)\n"), "{}", m.body);
        assert!(m.body.contains("start pbx (800 ms) FAILED"));
        assert!(m.body.contains("DRBD:  r0: Primary UpToDate") && m.body.contains("MySQL: not used"));
        let order: Vec<usize> = ["suspicion", "decision", "start vip", "first SIP", "GARP"]
            .iter()
            .map(|w| m.body.find(w).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn alerts_are_keyed_by_event_and_time() {
        let a = alert_mail("pbx", "a", &Alert::CheckDown { check: "uplink".into(), detail: "timeout".into() }, 5);
        assert_eq!((a.subject.as_str(), a.dedup_key.as_str()), ("[pbx] check uplink is DOWN", "check:uplink:down:5"));
        assert!(a.body.contains("timeout"));
        assert_ne!(
            a.dedup_key,
            alert_mail("pbx", "a", &Alert::CheckDown { check: "uplink".into(), detail: "x".into() }, 6).dedup_key
        );
    }
}
