//! `/metrics`: a status snapshot in the Prometheus text format.
//!
//! Names are prefixed `pbxha_`; a state is a label on a gauge that is 1 for the state the
//! thing is in, as ClusterLabs' ha_cluster_exporter does (`ha_cluster_pacemaker_nodes
//! {status="online"} 1`), so a query reads `pbxha_node_role{role="primary"} == 1`. A series
//! for something not known yet (a link never heard, a probe without a verdict) is left out
//! rather than given a made-up value.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::Snapshot;

/// The classic Prometheus text format, which every scraper and `promtool check metrics`
/// read; prometheus-client writes OpenMetrics, converted by [`classic`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// One registry per scrape: the snapshot is the state, so nothing is kept between scrapes.
struct Out(Registry);

impl Out {
    fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let family = Family::default();
        self.0.register(name, help, family.clone());
        family
    }

    fn seconds(&mut self, name: &str, help: &str) -> Family<Labels, Gauge<f64, AtomicU64>> {
        let family = Family::default();
        self.0.register(name, help, family.clone());
        family
    }

    /// Registered without `_total`: the encoder appends it to counters.
    fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let family = Family::default();
        self.0.register(name, help, family.clone());
        family
    }
}

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

/// The snapshot as Prometheus text, at `now` (ages count from when it was taken).
pub fn render(snap: &Snapshot, now: Instant) -> String {
    let s = &snap.status;
    let mut out = Out(Registry::with_prefix("pbxha"));

    out.gauge("up", "1 while the daemon serves this endpoint").get_or_create(&vec![]).set(1);
    // Everything below is as of the snapshot; a loop that stopped publishing shows here.
    let age = out.seconds("status_age_seconds", "Age of the status snapshot the daemon loop published (every second)");
    age.get_or_create(&vec![]).set(now.saturating_duration_since(snap.taken).as_secs_f64());
    let role = out.gauge("node_role", "1 for the role each node is in (the peer as it last said, `dead` once it is)");
    role.get_or_create(&vec![("node", s.node.node.clone()), ("role", s.node.role.to_string())]).set(1);
    let peer = &s.node.peer;
    let peer_role = match (&peer.last, peer.alive) {
        (Some(last), true) => last.role.to_string(),
        (_, false) => "dead".into(),
        (None, true) => "unknown".into(),
    };
    role.get_or_create(&vec![("node", peer.name.clone()), ("role", peer_role)]).set(1);
    out.gauge("peer_alive", "1 while the peer is heard on at least one link")
        .get_or_create(&vec![])
        .set(i64::from(peer.alive));

    let heard = out.seconds("link_last_heard_seconds", "Seconds since the last accepted heartbeat on each link");
    let received = out.counter("heartbeats_received", "Heartbeats accepted, per link");
    let dropped = out.counter("heartbeats_dropped", "Heartbeats dropped, per reason, over all links");
    for l in &s.heartbeat.links {
        if let Some(ms) = l.last_seen_ms {
            heard.get_or_create(&label("link", &l.name)).set(ms as f64 / 1000.0);
        }
        received.get_or_create(&label("link", &l.name)).inc_by(l.accepted);
        // The counters' own field names are the reasons, so a new reason shows up here too.
        if let Ok(serde_json::Value::Object(reasons)) = serde_json::to_value(l.drops) {
            for (reason, n) in reasons {
                dropped.get_or_create(&label("reason", reason)).inc_by(n.as_u64().unwrap_or(0));
            }
        }
    }

    let failovers = out.counter("failovers", "Failovers this node took since it started, by kind");
    let f = &snap.failovers;
    for (kind, n) in [("unplanned", f.unplanned), ("planned", f.planned), ("refused", f.refused)] {
        failovers.get_or_create(&label("kind", kind)).inc_by(n);
    }
    out.counter("switchovers_refused", "`pbxha switchover` requests this node refused since it started")
        .get_or_create(&vec![])
        .inc_by(f.switchovers_refused);
    if let Some(ms) = f.last_outage_ms {
        let outage =
            out.seconds("last_failover_outage_seconds", "The last failover from its first sign of trouble to its end");
        outage.get_or_create(&vec![]).set(ms as f64 / 1000.0);
    }

    let state = out.gauge("resource_state", "1 for the state each resource of the group is in");
    let restarts = out.counter("resource_restarts", "Local restarts of each resource since the group was built");
    for r in &s.resources {
        let as_text =
            serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        state.get_or_create(&vec![("resource", r.name.clone()), ("state", as_text)]).set(1);
        restarts.get_or_create(&label("resource", &r.name)).inc_by(r.restarts_total);
    }

    let rtt = out.seconds("sip_probe_rtt_seconds", "Round trip of each SIP probe's last answered OPTIONS");
    let probe_up = out.gauge("sip_probe_up", "1 while a SIP probe is up, 0 while down");
    for p in &s.probes {
        if let Some(ms) = p.last_rtt_ms {
            rtt.get_or_create(&label("probe", &p.name)).set(ms / 1000.0);
        }
        if let Some(up) = verdict(&p.state) {
            probe_up.get_or_create(&label("probe", &p.name)).set(i64::from(up));
        }
    }
    if let Some(calls) = s.calls.as_ref().and_then(|c| c.calls) {
        out.gauge("calls_active", "Active calls on this node's PBX").get_or_create(&vec![]).set(i64::from(calls));
    }
    if let Some(mail) = &s.mail {
        let pending = i64::try_from(mail.pending).unwrap_or(i64::MAX);
        out.gauge("mail_outbox_pending", "Mails in the outbox not yet accepted by the server")
            .get_or_create(&vec![])
            .set(pending);
    }
    let check = out.gauge("check_up", "1 while a check is up, 0 while down");
    for c in &s.checks {
        if let Some(up) = verdict(&c.state) {
            check.get_or_create(&label("check", &c.name)).set(i64::from(up));
        }
    }
    if let Some(d) = &snap.drbd {
        let disk = out.gauge("drbd_disk_state", "1 for the disk state of this node's DRBD resource");
        let name = pbxha_replica::drbd::status::disk_name(&d.disk);
        disk.get_or_create(&vec![("resource", d.name.clone()), ("state", name)]).set(1);
    }
    if let Some(pair) = s.mysql.as_ref().and_then(|m| m.pair.as_ref()) {
        let lag = out.seconds("mysql_replication_lag_seconds", "Seconds_Behind_Master of each side's replication");
        for (side, server) in [("local", &pair.local), ("peer", &pair.peer)] {
            let behind = server.as_ref().ok().and_then(|s| s.replica.as_ref()).and_then(|r| r.seconds_behind);
            if let Some(behind) = behind {
                lag.get_or_create(&label("side", side)).set(behind as f64);
            }
        }
    }

    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &out.0);
    classic(&text)
}

/// OpenMetrics text to the classic format: a counter's HELP and TYPE name its `_total`
/// samples, and there is no `# EOF`.
fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines().filter(|l| *l != "# EOF") {
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) if counters.iter().any(|c| rest.split(' ').next() == Some(c)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `up`/`down` as 1/0; `unknown` (no verdict yet) as nothing.
fn verdict(state: &str) -> Option<bool> {
    match state {
        "up" => Some(true),
        "down" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_classic_ones() {
        let om = "# HELP pbxha_up Up.\n# TYPE pbxha_up gauge\npbxha_up 1\n\
                  # HELP pbxha_failovers Failovers.\n# TYPE pbxha_failovers counter\npbxha_failovers_total{kind=\"planned\"} 2\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP pbxha_up Up.\n# TYPE pbxha_up gauge\npbxha_up 1\n\
             # HELP pbxha_failovers_total Failovers.\n# TYPE pbxha_failovers_total counter\npbxha_failovers_total{kind=\"planned\"} 2\n"
        );
    }
}
