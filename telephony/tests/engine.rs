//! The probe engine against the responder and against hostile peers, on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pbxha_telephony::engine::{self, Sample, TargetSpec};
use pbxha_telephony::responder::respond;
use pbxha_telephony::Health;
use pbxha_telephony::{Policy, Responder, ResponderConfig, Transport, Verdict};
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Generous: the box is shared with other builds.
const PATIENCE: Duration = Duration::from_secs(20);

fn spec(name: &str, target: SocketAddr, transport: Transport) -> TargetSpec {
    TargetSpec {
        name: name.into(),
        target,
        transport,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(600),
        rise: 2,
        fall: 2,
        policy: Policy::default(),
        active: true,
    }
}

async fn responder(status: u16) -> (SocketAddr, SocketAddr, oneshot::Sender<()>) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let r =
        Responder::bind(any, Some(any), ResponderConfig { node: "a".into(), options_status: status }).await.unwrap();
    let (udp, tcp) = (r.udp_addr(), r.tcp_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(r.run(async move {
        let _ = stopped.await;
    }));
    (udp, tcp, stop)
}

/// Collects samples until `done` holds for the engine's status, or panics after PATIENCE.
async fn wait_until(
    handle: &engine::EngineHandle,
    rx: &mut mpsc::Receiver<Sample>,
    seen: &mut Vec<Sample>,
    done: impl Fn(&engine::EngineHandle) -> bool,
) {
    let until = Instant::now() + PATIENCE;
    while !done(handle) {
        assert!(Instant::now() < until, "not reached in {PATIENCE:?}: {:#?}", handle.status());
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            seen.push(s);
        }
    }
}

#[tokio::test]
async fn answers_404_and_tcp_are_up_silence_and_503_are_down() {
    let (ok_udp, ok_tcp, _s1) = responder(200).await;
    let (nf_udp, _, _s2) = responder(404).await;
    let (busy_udp, _, _s3) = responder(503).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lenient = spec("busy-ok", busy_udp, Transport::Udp);
    lenient.policy = Policy { overloaded_is_alive: true };
    let targets = vec![
        spec("ok", ok_udp, Transport::Udp),
        spec("tcp", ok_tcp, Transport::Tcp),
        spec("404", nf_udp, Transport::Udp),
        spec("busy", busy_udp, Transport::Udp),
        lenient,
        spec("silent", silent.local_addr().unwrap(), Transport::Udp),
    ];
    let (tx, mut rx) = mpsc::channel(1024);
    let handle = engine::start(targets, tx).await.unwrap();
    let mut seen = Vec::new();
    let expected = [
        ("ok", Health::Up),
        ("tcp", Health::Up),
        ("404", Health::Up),
        ("busy", Health::Down),
        ("busy-ok", Health::Up),
        ("silent", Health::Down),
    ];
    wait_until(&handle, &mut rx, &mut seen, |h| {
        expected.iter().all(|(n, health)| h.target(n).unwrap().health == *health)
    })
    .await;
    let ok = handle.target("ok").unwrap();
    assert!(ok.last_rtt.is_some_and(|r| r < PATIENCE), "{ok:?}");
    assert!(ok.recent.iter().all(|v| *v == Verdict::Alive { status: 200 }), "{ok:?}");
    assert!(handle.target("404").unwrap().recent.contains(&Verdict::Alive { status: 404 }));
    let silent = handle.target("silent").unwrap();
    assert!(silent.last_rtt.is_none() && silent.failures_in_row >= 2, "{silent:?}");
    assert!(
        matches!(&silent.recent[0], Verdict::Failed { reason } if reason.contains("no final SIP response")),
        "{silent:?}"
    );
    // Exactly one change per target into its state, announced on the channel.
    for (name, health) in expected {
        let changes: Vec<_> = seen.iter().filter(|s| &*s.target == name && s.changed).collect();
        assert!(changes.iter().all(|s| s.health == health), "{name}: {changes:?}");
    }
    assert!(seen.iter().any(|s| &*s.target == "ok" && s.rtt.is_some()));
}

#[tokio::test]
async fn inactive_targets_are_not_probed_until_activated_and_activation_resets() {
    let (udp, _, _stop) = responder(200).await;
    let mut t = spec("pbx", udp, Transport::Udp);
    t.active = false;
    // Activated after the deactivation as a barrier: commands are handled in order, so once
    // its first sample arrives every sample of `pbx` from before the deactivation has too.
    let mut marker = spec("marker", udp, Transport::Udp);
    marker.active = false;
    let (tx, mut rx) = mpsc::channel(1024);
    let handle = engine::start(vec![t, marker], tx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(rx.try_recv().is_err(), "an inactive target was probed");
    assert!(!handle.activate("nope"));
    assert!(handle.activate("pbx"));
    let mut seen = Vec::new();
    wait_until(&handle, &mut rx, &mut seen, |h| h.target("pbx").unwrap().health == Health::Up).await;
    assert!(handle.deactivate("pbx"));
    assert!(handle.activate("marker"));
    let barrier = tokio::time::timeout(PATIENCE, async {
        while let Some(sample) = rx.recv().await {
            if &*sample.target == "marker" {
                return;
            }
        }
    });
    barrier.await.expect("the marker target's first sample");
    // Several of pbx's probe intervals: none may bring a sample of it.
    let late = tokio::time::timeout(Duration::from_millis(400), async {
        loop {
            match rx.recv().await {
                Some(sample) if &*sample.target == "pbx" => return sample,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    });
    assert!(late.await.is_err(), "a deactivated target was probed");
    assert!(handle.activate("pbx"));
    let st = handle.target("pbx").unwrap();
    assert_eq!((st.health, st.samples, st.active), (Health::Unknown, 0, true));
}

/// Builds the answers a hostile peer sends before (or instead of) the real one: garbage,
/// truncation, an oversized datagram, non-UTF-8 bytes, a stray branch, the right branch with
/// a wrong Call-ID, and random mutations of the real answer.
fn noise(good: &[u8], rng: &mut rand::rngs::StdRng) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(good).into_owned();
    let mut out = vec![
        Vec::new(),
        b"\xff\xfe\xfd\x00 not sip at all".to_vec(),
        good[..good.len() / 2].to_vec(),
        vec![0xc3; 60_000],
        text.replacen("Call-ID: ", "Call-ID: wrong-", 1).into_bytes(),
        text.replacen("branch=z9hG4bK", "branch=z9hG4bKstray", 1).into_bytes(),
        [b"SIP/2.0 200 \xc3\x28".as_slice(), &good[b"SIP/2.0 200 OK".len()..]].concat(),
        text.replacen("1 OPTIONS", "1 INVITE", 1).into_bytes(),
    ];
    for _ in 0..4 {
        let mut m = good.to_vec();
        for _ in 0..rng.gen_range(1..5) {
            let at = rng.gen_range(0..m.len());
            match rng.gen_range(0..3) {
                0 => m[at] ^= 1 << rng.gen_range(0..8),
                1 => m.truncate(at.max(1)),
                _ => m.insert(at, rng.gen()),
            }
        }
        // A mutation may still be a valid 200 for us; only the clearly broken ones count
        // as noise, so the verdict stays decidable.
        if !m.starts_with(b"SIP/2.0 200") {
            out.push(m);
        }
    }
    out
}

/// A peer that answers every OPTIONS with noise first and then, when `answer` is set, the
/// real response. Runs until the socket's owner task is aborted.
async fn hostile_peer(answer: bool, seed: u64) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut buf = vec![0u8; 65_535];
        let config = ResponderConfig::new("hostile");
        while let Ok((n, from)) = peer.recv_from(&mut buf).await {
            let Some(good) = respond(&buf[..n], &config) else {
                continue;
            };
            for m in noise(&good, &mut rng) {
                let _ = peer.send_to(&m, from).await;
            }
            if answer {
                let _ = peer.send_to(&good, from).await;
            }
        }
    });
    (addr, task)
}

/// Bounded in time (a few seconds) and seeded: garbage never crashes the engine, never
/// counts as an answer, and never hides the real answer behind it.
#[tokio::test]
async fn garbage_interleaved_with_answers_never_confuses_the_engine() {
    let (honest, t1) = hostile_peer(true, 3261).await;
    let (mute, t2) = hostile_peer(false, 3581).await;
    let (tx, mut rx) = mpsc::channel(4096);
    let mut a = spec("noisy-but-answering", honest, Transport::Udp);
    a.interval = Duration::from_millis(50);
    let mut b = spec("noise-only", mute, Transport::Udp);
    b.timeout = Duration::from_millis(300);
    let handle = engine::start(vec![a, b], tx).await.unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let mut samples = Vec::new();
    while Instant::now() < until {
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            samples.push(s);
        }
    }
    let answered: Vec<_> = samples.iter().filter(|s| &*s.target == "noisy-but-answering").collect();
    assert!(answered.len() >= 5, "only {} samples: {:#?}", answered.len(), handle.status());
    assert!(answered.iter().all(|s| s.verdict == Verdict::Alive { status: 200 }), "{answered:#?}");
    let mute_samples: Vec<_> = samples.iter().filter(|s| &*s.target == "noise-only").collect();
    assert!(!mute_samples.is_empty());
    assert!(mute_samples.iter().all(|s| !s.verdict.is_healthy()), "{mute_samples:#?}");
    assert_eq!(handle.target("noise-only").unwrap().health, Health::Down);
    assert_eq!(handle.target("noisy-but-answering").unwrap().health, Health::Up);
    t1.abort();
    t2.abort();
}

#[tokio::test]
async fn duplicate_names_are_refused() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let err =
        engine::start(vec![spec("x", addr, Transport::Udp), spec("x", addr, Transport::Udp)], tx).await.err().unwrap();
    assert!(err.to_string().contains("`x`"), "{err}");
}
