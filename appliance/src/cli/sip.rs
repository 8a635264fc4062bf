//! `pbxha sip-probe`: one SIP OPTIONS, the answer, and what pbxha's health checks would make
//! of it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pbxha_telephony::{probe, verdict, Policy, Probe};

#[derive(Args)]
pub struct SipProbeArgs {
    /// HOST or HOST:PORT (port 5060 when omitted).
    target: String,
    /// Use TCP instead of UDP.
    #[arg(long)]
    tcp: bool,
    /// Give up after this many milliseconds (UDP retransmits from 500 ms, RFC 3261 §17.1.2.2).
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

pub async fn run(args: SipProbeArgs) -> anyhow::Result<ExitCode> {
    let with_port = if args.target.contains(':') { args.target.clone() } else { format!("{}:5060", args.target) };
    let addr: SocketAddr = with_port
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.target))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no address", args.target))?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let p = if args.tcp { Probe::tcp(addr, timeout) } else { Probe::udp(addr, timeout) };
    let result = probe(&p).await;
    let v = verdict(&result, Policy::default());
    match &result {
        Ok(r) => {
            let node = r.header("X-Pbxha-Node").map(|n| format!(", answered by node {n}")).unwrap_or_default();
            println!("{} {} from {} in {:.1} ms{node}", r.status, r.reason, r.source, r.rtt.as_secs_f64() * 1000.0);
        }
        Err(e) => println!("no answer from {addr}: {e}"),
    }
    println!("verdict: {v:?}");
    Ok(if v.is_healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
