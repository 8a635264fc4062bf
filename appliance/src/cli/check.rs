//! `pbxha check-config`: every problem in one run, or a one-screen summary.

use std::path::Path;
use std::process::ExitCode;

use pbxha_appliance::config::{self, Config};

pub fn run(path: &Path, node: Option<&str>) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let (config, problems) = check(&text, node);
    if !problems.is_empty() {
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        for p in &problems {
            eprintln!("  {}: {}", p.key, p.message);
            if let Some(h) = &p.hint {
                eprintln!("      hint: {h}");
            }
        }
        return ExitCode::FAILURE;
    }
    if let Some(c) = config {
        print!("{}", summary(&c, path));
    }
    ExitCode::SUCCESS
}

/// The config and every problem check-config reports for it; `pbxha install` checks the
/// config it writes with this too.
pub fn check(text: &str, node: Option<&str>) -> (Option<Config>, Vec<config::Problem>) {
    match config::parse(text) {
        Ok(c) => {
            let problems = config::local_node(&c, node).err().into_iter().collect();
            (Some(c), problems)
        }
        Err(problems) => (None, problems),
    }
}

fn summary(c: &Config, path: &Path) -> String {
    let hb = &c.heartbeat;
    let mut out = format!("{}: OK\n", path.display());
    out += &format!("cluster   {} (id {}), key {}\n", c.cluster.name, c.cluster.id, c.cluster.auth_key_file.display());
    let nodes: Vec<String> = c.nodes.iter().map(|n| format!("{} (id {})", n.name, n.id)).collect();
    out += &format!("nodes     {}\n", nodes.join(", "));
    out += &format!(
        "heartbeat every {} ms, late after {} ms, dead after {} ms, initdead {} ms\n",
        hb.interval.as_millis(),
        hb.warntime.as_millis(),
        hb.deadtime.as_millis(),
        hb.initdead.as_millis()
    );
    for l in &c.links {
        let addrs: Vec<String> = l.addresses.iter().map(|(n, a)| format!("{n}={a}")).collect();
        out += &format!(
            "link      {} {:?} port {}{} {}\n",
            l.name,
            l.mode,
            l.port,
            l.interface.as_ref().map_or(String::new(), |i| format!(" on {i}")),
            addrs.join(" ")
        );
    }
    let targets: Vec<String> = c.ping.targets.iter().map(ToString::to_string).collect();
    out += &format!(
        "ping      {}\n",
        if targets.is_empty() { "none (no tie-breaker)".into() } else { targets.join(", ") }
    );
    out += &format!(
        "failback  {}{}\n",
        if c.cluster.auto_failback { "automatic" } else { "off (stickiness)" },
        c.cluster.preferred_node.as_ref().map_or(String::new(), |p| format!(", preferred node {p}"))
    );
    out += &format!(
        "group     (max {} restarts per {} s, then hand over)\n",
        c.group.max_restarts,
        c.group.restart_window.as_secs()
    );
    for (i, r) in c.resources.iter().enumerate() {
        let what = r.kind.describe();
        out += &format!("  {}. {:<10} {:<8} {what}\n", i + 1, r.name, r.kind.name());
    }
    out
}
