//! `/`: the status page. One self-contained HTML document (inline CSS and SVG, no script:
//! a meta refresh reloads it), so it works on a box without internet and through any proxy.
//!
//! It shows what `pbxha status` shows, and draws the last failovers as timelines from the
//! journal: the first suspicion, the decision, each resource start as a bar as long as it
//! took, the gratuitous ARP, the first SIP answer on the VIP and the calls dropped.

use std::fmt::Write;
use std::time::Instant;

use crate::fsm::RecordKind;
use crate::journal::{Entry, Failover, Kind};
use crate::resources::ResourceAction;
use crate::status::{utc, DaemonStatus, Snapshot};

/// Seconds between reloads: often enough to watch a failover, rare enough to cost nothing.
const REFRESH_S: u32 = 5;

/// Width of the time axis in each timeline, in SVG units; labels go to its right.
const AXIS: f64 = 420.0;
const ROW: f64 = 18.0;

/// The page for `snap`, with `failovers` (oldest first) or why they could not be read.
pub fn render(snap: &Snapshot, failovers: &Result<Vec<Failover>, String>, now: Instant) -> String {
    let s = &snap.status;
    let n = &s.node;
    let mut o = String::new();
    let age = now.saturating_duration_since(snap.taken).as_millis();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>pbxha {cluster}: {node} {role}</title><style>{CSS}</style></head><body>\
         <h1>Cluster {cluster}</h1><p class=\"meta\">node {node}, pbxha {version}, up {up} s; \
         status taken {age} ms ago; this page reloads every {REFRESH_S} s</p>",
        cluster = esc(&s.cluster),
        node = esc(&n.node),
        role = n.role,
        version = s.version,
        up = s.uptime_s,
    );

    let _ = write!(
        o,
        "<p id=\"holder\" class=\"holder\">The group (and the VIP) is held by <b>{}</b></p>",
        esc(&holder(s))
    );

    o.push_str("<h2>Nodes</h2><table id=\"nodes\"><tr><th>node</th><th>role</th><th>health</th></tr>");
    let health = if n.faults.is_empty() { "healthy".to_string() } else { format!("FAULT: {}", n.faults.join("; ")) };
    node_row(&mut o, &n.node, &n.role.to_string(), &health, "this node");
    let peer = &n.peer;
    match (&peer.last, peer.alive) {
        (Some(p), true) => {
            let health = if p.healthy { "healthy" } else { "UNHEALTHY" };
            node_row(&mut o, &peer.name, &p.role.to_string(), health, "peer");
        }
        (Some(p), false) => node_row(&mut o, &peer.name, "dead", &format!("last seen as {}", p.role), "peer"),
        (None, _) => node_row(&mut o, &peer.name, "unknown", "not heard yet", "peer"),
    }
    o.push_str("</table>");

    o.push_str("<h2>Links</h2><table id=\"links\"><tr><th>link</th><th>state</th><th>last heard</th><th>accepted</th><th>dropped</th></tr>");
    for (i, l) in s.heartbeat.links.iter().enumerate() {
        let up = n.links.get(i).is_some_and(|x| x.up);
        let heard = l.last_seen_ms.map_or("never".into(), |ms| format!("{ms} ms ago"));
        let _ = write!(
            o,
            "<tr class=\"link\" data-link=\"{name}\" data-up=\"{up}\"><td>{name}</td><td class=\"{cls}\">{state}</td>\
             <td>{heard}</td><td>{}</td><td>{}</td></tr>",
            l.accepted,
            l.drops.total(),
            name = esc(&l.name),
            cls = if up { "ok" } else { "bad" },
            state = if up { "up" } else { "DOWN" },
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Resources</h2><table id=\"resources\"><tr><th>resource</th><th>kind</th><th>state</th><th>restarts</th><th>last error</th></tr>");
    for r in &s.resources {
        let state = serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let _ = write!(
            o,
            "<tr class=\"resource\" data-resource=\"{name}\" data-state=\"{state}\"><td>{name}</td><td>{}</td>\
             <td class=\"{cls}\">{state}</td><td>{}</td><td>{}</td></tr>",
            r.kind,
            r.restarts,
            esc(r.last_error.as_deref().unwrap_or("")),
            name = esc(&r.name),
            cls = if state == "failed" { "bad" } else { "" },
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Faults</h2><ul id=\"faults\">");
    if n.faults.is_empty() {
        o.push_str("<li>none</li>");
    }
    for f in &n.faults {
        let hint = if operator_clears(f) {
            " <span class=\"hint\">fix the cause, then run <code>pbxha online</code> on this node</span>"
        } else {
            ""
        };
        let _ = write!(o, "<li class=\"bad\">{}{hint}</li>", esc(f));
    }
    if n.admin_standby {
        o.push_str("<li>standby: run <code>pbxha online</code> to return</li>");
    }
    o.push_str("</ul>");

    if !s.checks.is_empty() || !s.probes.is_empty() {
        o.push_str(
            "<h2>Checks and SIP probes</h2><table id=\"checks\"><tr><th>name</th><th>state</th><th>detail</th></tr>",
        );
        for c in &s.checks {
            let since = c.since_ms.map_or(String::new(), |ms| format!(" since {}", utc(ms)));
            let _ = write!(
                o,
                "<tr class=\"check\"><td>{}</td><td>{}{since}</td><td>{}</td></tr>",
                esc(&c.name),
                c.state,
                esc(&c.detail)
            );
        }
        for p in &s.probes {
            let rtt = p.last_rtt_ms.map_or(String::new(), |r| format!("rtt {r:.1} ms "));
            let _ = write!(
                o,
                "<tr class=\"probe\"><td>SIP {} ({})</td><td>{}</td><td>{rtt}{}</td></tr>",
                esc(&p.name),
                esc(&p.target),
                if p.active { p.state.as_str() } else { "idle" },
                esc(&p.recent.join(" ")),
            );
        }
        o.push_str("</table>");
    }
    if let Some(m) = &s.mail {
        let err = m.last_error.as_deref().map_or(String::new(), |e| format!("; last error: {}", esc(e)));
        let _ = write!(o, "<h2>Mail</h2><p id=\"outbox\">{} waiting in the outbox{err}</p>", m.pending);
    }

    o.push_str("<h2>Last failovers</h2><section id=\"failovers\">");
    match failovers {
        Err(why) => {
            let _ = write!(o, "<p class=\"bad\">journal not readable: {}</p>", esc(why));
        }
        Ok(list) if list.is_empty() => o.push_str("<p>no failover recorded</p>"),
        Ok(list) => {
            for f in list.iter().rev() {
                timeline(&mut o, f, s);
            }
        }
    }
    o.push_str("</section></body></html>\n");
    o
}

/// Who holds the group: this node, the peer as it last said, or nobody.
fn holder(s: &DaemonStatus) -> String {
    let n = &s.node;
    if n.role == crate::summary::Role::Primary {
        return n.node.clone();
    }
    match &n.peer.last {
        Some(p) if n.peer.alive && p.role == crate::summary::Role::Primary => n.peer.name.clone(),
        _ => "nobody".into(),
    }
}

fn node_row(o: &mut String, name: &str, role: &str, health: &str, which: &str) {
    let cls = if health == "healthy" { "ok" } else { "bad" };
    let _ = write!(
        o,
        "<tr class=\"node\" data-node=\"{name}\" data-role=\"{role}\"><td>{name} <small>({which})</small></td>\
         <td>{role}</td><td class=\"{cls}\">{}</td></tr>",
        esc(health),
        name = esc(name),
        role = esc(role),
    );
}

/// Faults that stay until an operator says the cause is gone (`pbxha online`); failing
/// checks and lost ping targets clear themselves.
fn operator_clears(fault: &str) -> bool {
    ["resource `", "VIP conflict", "DRBD split brain"].iter().any(|p| fault.starts_with(p))
}

/// What a timeline row shows: its class (for colour, and for tests to find it) and its label.
fn classify(e: &Entry, s: &DaemonStatus) -> (&'static str, String) {
    match &e.kind {
        Kind::Resource { resource, action, duration_ms, ok } => {
            let vip = s.resources.iter().any(|r| &r.name == resource && r.kind == "vip");
            let class = match (action, vip, ok) {
                (_, _, false) => "failed",
                (ResourceAction::Start, true, true) => "garp",
                (ResourceAction::Start, false, true) => "start",
                _ => "resource",
            };
            let garp = if class == "garp" { " + GARP" } else { "" };
            (class, format!("{resource} {}{garp} ({duration_ms} ms)", action.outcome(*ok)))
        }
        Kind::Record(k) => {
            let class = match k {
                RecordKind::Suspicion => "suspicion",
                RecordKind::FailoverBegin => "decision",
                RecordKind::FailoverEnd => "end",
                RecordKind::FirstAnswer => "sip",
                RecordKind::Calls => "calls",
                _ => "record",
            };
            (class, e.message.clone())
        }
    }
}

fn timeline(o: &mut String, f: &Failover, s: &DaemonStatus) {
    let start = f.entries.iter().map(bar_start).min().unwrap_or(0);
    let end = f.entries.iter().map(|e| e.at_ms).max().unwrap_or(start);
    let span = end.saturating_sub(start).max(1) as f64;
    let x = |ms: u64| 8.0 + AXIS * (ms.saturating_sub(start) as f64 / span);
    let took = f.ended_ms.map_or("did not finish".into(), |e| format!("took {} ms", e.saturating_sub(start)));
    let height = ROW * (f.entries.len() as f64 + 2.0);
    let _ = write!(
        o,
        "<figure class=\"failover\" data-id=\"{id}\" data-node=\"{node}\"><figcaption>failover #{id} on {node}, {when}, {took}</figcaption>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"{height}\" viewBox=\"0 0 960 {height}\" role=\"img\">",
        id = f.id,
        node = esc(&f.node),
        when = utc(start),
    );
    let axis_y = height - ROW * 0.5;
    let _ = write!(o, "<line class=\"axis\" x1=\"8\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\"/>", 8.0 + AXIS);
    for frac in [0.0, 0.5, 1.0] {
        let ms = (span * frac) as u64;
        let _ = write!(o, "<text class=\"tick\" x=\"{}\" y=\"{}\">{ms} ms</text>", x(start + ms), axis_y - 3.0);
    }
    for (i, e) in f.entries.iter().enumerate() {
        let (class, label) = classify(e, s);
        let y = ROW * (i as f64 + 0.5);
        let mid = y + ROW / 2.0;
        let _ = write!(
            o,
            "<g class=\"entry {class}\" data-kind=\"{class}\" data-at=\"{}\">",
            e.at_ms.saturating_sub(start)
        );
        if let Kind::Resource { .. } = e.kind {
            let (x0, x1) = (x(bar_start(e)), x(e.at_ms));
            let _ = write!(
                o,
                "<rect x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\"/>",
                y + 3.0,
                (x1 - x0).max(2.0),
                ROW - 6.0
            );
        } else {
            let cx = x(e.at_ms);
            let _ = write!(o, "<circle cx=\"{cx:.1}\" cy=\"{mid}\" r=\"5\"/>");
        }
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{}\">+{} ms  {}</text></g>",
            AXIS + 24.0,
            mid + 4.0,
            e.at_ms.saturating_sub(start),
            esc(&label)
        );
    }
    o.push_str("</svg></figure>");
}

/// A resource entry is written when its action ends; its bar starts `duration_ms` earlier.
fn bar_start(e: &Entry) -> u64 {
    match e.kind {
        Kind::Resource { duration_ms, .. } => e.at_ms.saturating_sub(duration_ms),
        Kind::Record(_) => e.at_ms,
    }
}

/// Text and attribute escaping: every name and message on the page comes from config or
/// from the peer's packets.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
.ok{color:#176b2c}.bad{color:#b00020;font-weight:bold}.hint{color:#555;font-weight:normal}.meta{color:#666}\
.holder{font-size:1.2em}figure{margin:0 0 1.5em 0}figcaption{font-weight:bold;margin-bottom:4px}\
svg text{font:12px monospace;fill:#222}.axis{stroke:#888}.tick{fill:#666}\
.entry circle{fill:#888}.entry rect{fill:#4a7bd0}.suspicion circle{fill:#e0a000}.decision circle{fill:#b00020}\
.garp rect{fill:#1d9a6c}.sip circle{fill:#176b2c}.calls circle{fill:#7a3db8}.end circle{fill:#222}.failed rect{fill:#b00020}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Fault;

    #[test]
    fn the_online_hint_goes_to_faults_an_operator_clears() {
        let clears = |f: Fault| operator_clears(&f.to_string());
        assert!(clears(Fault::Resource("pbx".into())));
        assert!(clears(Fault::StopFailed("pbx".into())));
        assert!(clears(Fault::VipConflict("198.51.100.100 answered".into())));
        assert!(clears(Fault::SplitBrain("r0".into())));
        assert!(!clears(Fault::Check("disk".into())));
        assert!(!clears(Fault::NoConnectivity));
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
