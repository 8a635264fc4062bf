//! `status`, `standby`, `online`, `switchover`: clients of the control socket.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pbxha_appliance::calls::DrainStatus;
use pbxha_appliance::control::{self, Reply, Request};
use pbxha_appliance::status::DaemonStatus;
use pbxha_appliance::summary::{GroupPhase, Role};

pub async fn status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let reply = control::call(&control::socket_for(config), &Request::Status).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply.status)?);
    } else {
        print!("{}", reply.message);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pbxha status --watch`: redraws in place (cursor home, each line cleared to its end, the
/// rest of the screen cleared), so the table does not flicker; a daemon that stops answering
/// is shown as such and watched on.
pub async fn watch(config: &Path, every: Duration) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let socket = control::socket_for(config);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let text = match control::call(&socket, &Request::Status).await {
            Ok(reply) => reply.message,
            Err(e) => format!("pbxha: {e:#}\n"),
        };
        let mut frame = String::from("\x1b[H");
        for line in text.lines() {
            frame.push_str(line);
            frame.push_str("\x1b[K\n");
        }
        frame.push_str(&format!("\nevery {} s, Ctrl-C to stop\x1b[K\n\x1b[J", every.as_secs()));
        let mut out = std::io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()?;
    }
}

pub async fn simple(config: &Path, request: Request) -> anyhow::Result<ExitCode> {
    let reply = control::call(&control::socket_for(config), &request).await?;
    Ok(print_reply(&reply))
}

fn print_reply(reply: &Reply) -> ExitCode {
    if reply.ok {
        println!("{}", reply.message);
        ExitCode::SUCCESS
    } else {
        eprintln!("pbxha: {}", reply.message);
        ExitCode::FAILURE
    }
}

/// How long to follow the move itself, after any drain.
const MOVE_LIMIT: Duration = Duration::from_secs(30);
/// The drain's deadline until the daemon's status shows the configured one (the default
/// `drain-timeout`).
const DRAIN_LIMIT: Duration = pbxha_appliance::config::DEFAULT_DRAIN_TIMEOUT;

pub async fn switchover(config: &Path, now: bool) -> anyhow::Result<ExitCode> {
    let socket = control::socket_for(config);
    let reply = control::call(&socket, &Request::Switchover { now }).await?;
    if !reply.ok {
        return Ok(print_reply(&reply));
    }
    println!("{}", reply.message);
    let started = Instant::now();
    let mut last_line = String::new();
    let mut limit = DRAIN_LIMIT + MOVE_LIMIT;
    let mut unanswered = 0;
    let mut released = false;
    let mut drained = false;
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = match control::call(&socket, &Request::Status).await {
            Ok(reply) => match DaemonStatus::from_reply(&reply) {
                Some(s) => {
                    unanswered = 0;
                    s
                }
                None => continue,
            },
            Err(e) => {
                unanswered += 1;
                // Say so after about a second of silence, then every ten seconds.
                if unanswered % 100 == 10 {
                    eprintln!("  {:>6} ms  the daemon does not answer: {e}", started.elapsed().as_millis());
                }
                continue;
            }
        };
        let (n, peer) = (&s.node, &s.node.peer.name);
        let peer_role = n.peer.last.map(|p| p.role);
        let peer_role_name = peer_role.map_or("unknown".to_string(), |r| r.to_string());
        if let Some(drain) = &s.drain {
            limit = limit.max(Duration::from_secs(drain.deadline_s) + MOVE_LIMIT);
        }
        let line = if n.draining {
            drain_line(s.drain.as_ref())
        } else {
            format!("this node: {}, group {}; {peer}: {peer_role_name}", n.role, n.group.as_str())
        };
        if line != last_line {
            println!("  {:>6} ms  {line}", started.elapsed().as_millis());
            last_line = line;
        }
        if peer_role == Some(Role::Primary) && n.group == GroupPhase::Stopped {
            println!("done: {peer} holds the group ({} ms)", started.elapsed().as_millis());
            return Ok(ExitCode::SUCCESS);
        }
        // The daemon ends a drain either by stopping the group or, when the peer can no
        // longer take over, by cancelling it and keeping the group: say so instead of
        // waiting out the limit for a move that is off.
        drained |= n.draining;
        if drained && !n.draining && n.group == GroupPhase::Running && !released {
            let why = if n.peer.alive { format!("{peer} is {peer_role_name}") } else { format!("{peer} is not heard") };
            eprintln!("pbxha: switchover cancelled during the call drain: {why}, so it cannot take over; this node keeps the group and takes new calls again (see `pbxha history`)");
            return Ok(ExitCode::FAILURE);
        }
        // The group left this node and came back: the peer could not take it.
        released |= n.group == GroupPhase::Stopped;
        if released && n.group == GroupPhase::Running {
            eprintln!(
                "pbxha: {peer} did not take the group ({peer_role_name}); it is running here again; see `pbxha status`"
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    eprintln!("pbxha: the peer did not take the group within {} s; see `pbxha status`", limit.as_secs());
    Ok(ExitCode::FAILURE)
}

/// The progress of a running drain from the status's `drain` field. A finished one is the
/// previous switchover's, shown by the daemon until this drain's first count.
fn drain_line(drain: Option<&DrainStatus>) -> String {
    let Some(drain) = drain.filter(|d| !d.finished) else {
        return "draining calls…".into();
    };
    let calls = match drain.calls {
        Some(n) => format!("{n} call(s) remaining"),
        None => format!("call count unknown ({})", drain.unknown.as_deref().unwrap_or("no reading")),
    };
    format!("draining: {calls} ({}s of {}s)", drain.elapsed_s, drain.deadline_s)
}

#[cfg(test)]
mod tests {
    use pbxha_appliance::calls::DrainStatus;
    use serde_json::json;

    /// A drain as the daemon's JSON has it, read as the command reads it.
    fn drain(v: serde_json::Value) -> DrainStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn drain_progress_shows_calls_remaining_against_the_deadline() {
        let running = drain(
            json!({"resource": "pbx", "calls": 3, "unknown": null, "elapsed_s": 12, "deadline_s": 300, "finished": false}),
        );
        assert_eq!(super::drain_line(Some(&running)), "draining: 3 call(s) remaining (12s of 300s)");
        let unknown = drain(
            json!({"resource": "pbx", "calls": null, "unknown": "timeout", "elapsed_s": 1, "deadline_s": 60, "finished": false}),
        );
        assert_eq!(super::drain_line(Some(&unknown)), "draining: call count unknown (timeout) (1s of 60s)");
        let previous = drain(
            json!({"resource": "pbx", "calls": 0, "unknown": null, "elapsed_s": 40, "deadline_s": 300, "finished": true}),
        );
        assert_eq!(super::drain_line(Some(&previous)), "draining calls…");
        assert_eq!(super::drain_line(None), "draining calls…");
    }
}
