//! The OPTIONS client against the responder and against scripted peers, on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use pbxha_telephony::options::{match_response, Matched, TransactionId};
use pbxha_telephony::responder::{respond, NODE_HEADER};
use pbxha_telephony::{probe, verdict, wire, Error, Policy, Probe, Responder, ResponderConfig, Verdict};
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// Generous: the box is shared with other builds.
const TIMEOUT: Duration = Duration::from_secs(8);

/// A running responder that stops when dropped.
struct Running {
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
    _stop: oneshot::Sender<()>,
}

async fn start_responder(config: ResponderConfig) -> Running {
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let responder = Responder::bind(localhost, Some(localhost), config).await.unwrap();
    let (udp, tcp) = (responder.udp_addr(), responder.tcp_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(responder.run(async move {
        let _ = stopped.await;
    }));
    Running { udp, tcp, _stop: stop }
}

#[tokio::test]
async fn udp_probe_gets_200_and_the_node_name() {
    let r = start_responder(ResponderConfig::new("a")).await;
    let resp = probe(&Probe::udp(r.udp, TIMEOUT)).await.unwrap();
    assert_eq!((resp.status, resp.reason.as_str()), (200, "OK"));
    assert_eq!(resp.header(NODE_HEADER), Some("a"));
    assert_eq!(resp.header("x-pbxha-node"), Some("a"));
    assert!(resp.header("To").is_some_and(|t| t.contains("tag=")), "{:?}", resp.headers);
    assert_eq!(resp.source, r.udp);
    assert!(resp.rtt < TIMEOUT);
    assert_eq!(verdict(&Ok(resp), Policy::default()), Verdict::Alive { status: 200 });
}

#[tokio::test]
async fn tcp_probe_gets_200_and_the_node_name() {
    let r = start_responder(ResponderConfig::new("b")).await;
    let resp = probe(&Probe::tcp(r.tcp.unwrap(), TIMEOUT)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header(NODE_HEADER), Some("b"));
}

#[tokio::test]
async fn a_404_still_proves_the_stack_alive_and_a_503_does_not() {
    let r = start_responder(ResponderConfig { node: "a".into(), options_status: 404 }).await;
    let resp = probe(&Probe::udp(r.udp, TIMEOUT)).await;
    assert_eq!(verdict(&resp, Policy::default()), Verdict::Alive { status: 404 });

    let r = start_responder(ResponderConfig { node: "a".into(), options_status: 503 }).await;
    let resp = probe(&Probe::tcp(r.tcp.unwrap(), TIMEOUT)).await;
    assert!(!verdict(&resp, Policy::default()).is_healthy());
    assert_eq!(verdict(&resp, Policy { overloaded_is_alive: true }), Verdict::Overloaded);
}

#[tokio::test]
async fn a_lost_first_datagram_is_retransmitted() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let (n, _) = peer.recv_from(&mut buf).await.unwrap();
        let first = buf[..n].to_vec();
        // Drop the first; answer the retransmission.
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        let reply = respond(&buf[..n], &ResponderConfig::new("a")).unwrap();
        peer.send_to(&reply, from).await.unwrap();
        (first, buf[..n].to_vec())
    });
    let resp = probe(&Probe::udp(addr, TIMEOUT)).await.unwrap();
    assert_eq!(resp.status, 200);
    // Timer E fires T1 (500 ms) after the first send.
    assert!(resp.rtt >= Duration::from_millis(450), "{:?}", resp.rtt);
    let (first, second) = server.await.unwrap();
    assert_eq!(first, second, "a retransmission is the same request, branch included");
}

#[tokio::test]
async fn a_silent_peer_times_out_after_retransmissions() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    let timeout = Duration::from_millis(1800);
    let started = std::time::Instant::now();
    let err = probe(&Probe::udp(addr, timeout)).await.unwrap_err();
    assert!(started.elapsed() >= timeout);
    assert!(matches!(err, Error::Timeout { target, .. } if target == addr), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    // Sent at 0, 0.5 s and 1.5 s: at least the first two are certainly there.
    let mut buf = vec![0u8; 65_535];
    let mut count = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), peer.recv_from(&mut buf)).await {
        count += 1;
    }
    assert!((2..=3).contains(&count), "{count} datagrams");
}

#[tokio::test]
async fn a_closed_tcp_port_fails_fast() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let resp = probe(&Probe::tcp(addr, TIMEOUT)).await;
    assert!(matches!(&resp, Err(Error::Io { context, .. }) if context.contains(&addr.to_string())), "{resp:?}");
    assert!(!verdict(&resp, Policy::default()).is_healthy());
}

/// A compact-form response for `request`, as some PBXs send them.
fn compact_response(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let find = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap();
    format!(
        "SIP/2.0 200 Fine\r\nv: {}\r\nf: {}\r\nt: {};tag=zz\r\ni: {}\r\nCSeq: 1 OPTIONS\r\nX-Pbxha-Node: compact\r\nl: 0\r\n\r\n",
        find("Via:"),
        find("From:"),
        find("To:"),
        find("Call-ID:")
    )
    .into_bytes()
}

#[tokio::test]
async fn garbage_and_strays_are_ignored_and_compact_headers_parse() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        let request = buf[..n].to_vec();
        let good = compact_response(&request);
        let stray = String::from_utf8_lossy(&good).replacen("branch=z9hG4bK", "branch=z9hG4bKstray", 1);
        let other_call = String::from_utf8_lossy(&good).replacen("i: ", "i: other-", 1);
        let noise: [&[u8]; 6] = [
            b"",
            b"\xff\xfe\xfd not sip",
            b"SIP/2.0 200 OK\r\n\r\n",
            stray.as_bytes(),
            other_call.as_bytes(),
            &good[..good.len() / 2],
        ];
        for n in noise {
            peer.send_to(n, from).await.unwrap();
        }
        peer.send_to(&good, from).await.unwrap();
    });
    let resp = probe(&Probe::udp(addr, TIMEOUT)).await.unwrap();
    assert_eq!((resp.status, resp.reason.as_str()), (200, "Fine"));
    assert_eq!(resp.header(NODE_HEADER), Some("compact"));
    assert_eq!(resp.header("Call-ID"), resp.header("i"));
    server.await.unwrap();
}

/// Mutated responses (bit flips, truncations, splices, inserted separators) never panic the
/// matcher, the framer or the responder. Bounded and seeded so a failure reproduces.
#[test]
fn mutated_messages_never_panic() {
    let id = TransactionId::random();
    let probe = Probe::udp("127.0.0.1:5060".parse().unwrap(), TIMEOUT);
    let request = pbxha_telephony::options::build_request(&id, "127.0.0.1:5070".parse().unwrap(), &probe).unwrap();
    let response = compact_response(&request);
    assert!(matches!(match_response(&response, &id), Matched::Final { status: 200, .. }));
    let seeds = [request.clone(), response.clone(), respond(&request, &ResponderConfig::new("a")).unwrap()];
    let tokens: [&[u8]; 8] = [b"\r\n", b":", b";", b",", b"\xff", b"\x00", b" ", b"="];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3261);
    let config = ResponderConfig::new("fuzz");
    for round in 0..20_000 {
        let mut m = seeds[round % seeds.len()].clone();
        for _ in 0..rng.gen_range(1..6) {
            let at = rng.gen_range(0..=m.len());
            match rng.gen_range(0..5) {
                0 if at < m.len() => m[at] ^= 1 << rng.gen_range(0..8),
                1 => m.truncate(at),
                2 => m.splice(at..at, tokens[rng.gen_range(0..tokens.len())].iter().copied()).for_each(drop),
                3 if at < m.len() => {
                    let end = rng.gen_range(at..=m.len());
                    m.drain(at..end);
                }
                _ => m.splice(at..at, std::iter::repeat_n(rng.gen::<u8>(), rng.gen_range(1..40))).for_each(drop),
            }
        }
        let _ = match_response(&m, &id);
        let _ = wire::next_frame(&m);
        let _ = respond(&m, &config);
    }
}
