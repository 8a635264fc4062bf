//! `status`, `standby`, `online`, `switchover`: clients of the control socket.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pbxha_appliance::control::{self, Reply, Request};

pub async fn status(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let reply = control::call(&control::socket_for(config), &Request::Status).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply.status)?);
    } else {
        print!("{}", reply.message);
    }
    Ok(ExitCode::SUCCESS)
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

/// How long to follow a switchover: the drain (up to 300 s) plus the move itself.
const FOLLOW_LIMIT: Duration = Duration::from_secs(330);

pub async fn switchover(config: &Path, now: bool) -> anyhow::Result<ExitCode> {
    let socket = control::socket_for(config);
    let reply = control::call(&socket, &Request::Switchover { now }).await?;
    if !reply.ok {
        return Ok(print_reply(&reply));
    }
    println!("{}", reply.message);
    let started = Instant::now();
    let mut last_line = String::new();
    while started.elapsed() < FOLLOW_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(reply) = control::call(&socket, &Request::Status).await else { continue };
        let Some(s) = reply.status else { continue };
        let peer_role = s["peer"]["last"]["role"].as_str().unwrap_or("unknown");
        let peer = s["peer"]["name"].as_str().unwrap_or("peer");
        let line = if s["draining"].as_bool() == Some(true) {
            "draining calls…".to_string()
        } else {
            format!("this node: {}, group {}; {peer}: {peer_role}", s["role"].as_str().unwrap_or("?"), s["group"].as_str().unwrap_or("?"))
        };
        if line != last_line {
            println!("  {:>6} ms  {line}", started.elapsed().as_millis());
            last_line = line;
        }
        if peer_role == "primary" && s["group"] == "stopped" {
            println!("done: {peer} holds the group ({} ms)", started.elapsed().as_millis());
            return Ok(ExitCode::SUCCESS);
        }
    }
    eprintln!("pbxha: the peer did not take the group within {} s; see `pbxha status`", FOLLOW_LIMIT.as_secs());
    Ok(ExitCode::FAILURE)
}
