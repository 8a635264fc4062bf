//! SIP-aware health: the `[[probe]]` tables, run by telephony's probe engine.
//!
//! - `local-pbx` wraps one group member ([`Probes::wrap`]) so that its monitor also fails
//!   once the PBX has not answered OPTIONS `fall` times in a row. The executor then does what
//!   it does for any failed monitor: local restarts within the `[group]` budget, then
//!   `ResourceFailed`, on which the fsm hands over. The probe runs only while that member
//!   runs here, and every (re)start begins from a clean slate, so a restart gets `fall`
//!   fresh chances.
//! - `vip` runs only while the group is not here (on the secondary): an end-to-end check of
//!   the service the clients see, and a split-brain signal. It alerts, never moves the group.
//! - `trunk` alerts on up/down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use pbxha_telephony::engine::{self, EngineHandle, Sample, TargetSpec, TargetStatus};
use pbxha_telephony::Health;
use pbxha_telephony::{probe, verdict, Policy, Probe, Transport, Verdict};
use tokio::task::JoinHandle;

use crate::config::{Config, ProbeConfig, ProbeRole, ProbeTransport, ResourceKind, DEFAULT_SIP_PORT};
use crate::fsm::{Notice, Severity};
use crate::notify::Notifier;
use crate::resources::{Member, Resource, ResourceState};
use crate::summary::GroupPhase;
use crate::Error;

/// Samples waiting for the alert task; a burst beyond this is dropped by the engine, whose
/// status snapshot stays exact.
const SAMPLE_QUEUE: usize = 1024;

/// The running probes: the engine, which probe is which, and whether the group is here.
pub struct Probes {
    engine: Option<EngineHandle>,
    configs: Vec<ProbeConfig>,
    samples: Option<mpsc::Receiver<Sample>>,
    /// Last group phase seen, so `vip` probes are switched only on a change.
    group_here: Option<bool>,
}

/// One probe as `pbxha status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub role: String,
    pub target: String,
    /// Probed now (a `local-pbx` probe only while its member runs here, a `vip` probe only
    /// on the secondary).
    pub active: bool,
    /// `unknown`, `up` or `down`.
    pub state: String,
    pub last_rtt_ms: Option<f64>,
    pub failures_in_row: u32,
    /// The latest verdicts, oldest first: a status code, `overloaded` or `fail`.
    pub recent: Vec<String>,
    /// Why the latest failed probe failed.
    pub last_error: Option<String>,
}

impl Probes {
    /// Starts the engine for `configs` (nothing at all when there are none). `local-pbx` and
    /// `vip` probes start inactive: the group decides when they run.
    pub async fn start(configs: &[ProbeConfig]) -> Result<Probes, Error> {
        if configs.is_empty() {
            return Ok(Probes { engine: None, configs: Vec::new(), samples: None, group_here: None });
        }
        let specs = configs.iter().map(spec).collect();
        let (tx, rx) = mpsc::channel(SAMPLE_QUEUE);
        let engine = engine::start(specs, tx).await.map_err(|e| Error::Resource {
            resource: "probe".into(),
            message: format!("cannot start the SIP probe engine: {e}"),
        })?;
        Ok(Probes { engine: Some(engine), configs: configs.to_vec(), samples: Some(rx), group_here: None })
    }

    /// Starts the task that turns `vip` and `trunk` state changes into notifications. Once.
    pub fn alert_with(&mut self, notifier: Notifier) {
        let Some(mut rx) = self.samples.take() else {
            return;
        };
        let roles: HashMap<String, ProbeConfig> = self.configs.iter().map(|c| (c.name.clone(), c.clone())).collect();
        tokio::spawn(async move {
            let mut last: HashMap<Arc<str>, Health> = HashMap::new();
            while let Some(sample) = rx.recv().await {
                let before = last.insert(sample.target.clone(), sample.health);
                let Some(config) = roles.get(&*sample.target) else {
                    continue;
                };
                if let Some(notice) = notice_for(config, before, &sample) {
                    notifier.send(&notice);
                }
            }
        });
    }

    /// Wraps each member a `local-pbx` probe names, so its monitor also heeds the probe.
    pub fn wrap(&self, members: Vec<Member>) -> Vec<Member> {
        let Some(engine) = &self.engine else {
            return members;
        };
        members
            .into_iter()
            .map(|mut m| {
                let probe = self
                    .configs
                    .iter()
                    .find(|c| matches!(&c.role, ProbeRole::LocalPbx { resource } if resource == m.resource.name()));
                if let Some(probe) = probe {
                    m.resource =
                        Arc::new(SipChecked { inner: m.resource, probe: probe.name.clone(), engine: engine.clone() });
                }
                m
            })
            .collect()
    }

    /// Follows the group: `vip` probes run only while the group is stopped here.
    pub fn follow_group(&mut self, phase: GroupPhase) {
        let here = phase != GroupPhase::Stopped;
        if self.group_here == Some(here) {
            return;
        }
        self.group_here = Some(here);
        let Some(engine) = &self.engine else { return };
        for c in self.configs.iter().filter(|c| c.role == ProbeRole::Vip) {
            if here {
                engine.deactivate(&c.name);
            } else {
                engine.activate(&c.name);
            }
        }
    }

    /// Every probe, in config order.
    pub fn status(&self) -> Vec<ProbeStatus> {
        let Some(engine) = &self.engine else {
            return Vec::new();
        };
        self.configs.iter().zip(engine.status()).map(|(c, t)| status_of(c, &t)).collect()
    }
}

fn spec(c: &ProbeConfig) -> TargetSpec {
    TargetSpec {
        name: c.name.clone(),
        target: c.target,
        transport: match c.transport {
            ProbeTransport::Udp => Transport::Udp,
            ProbeTransport::Tcp => Transport::Tcp,
        },
        interval: c.interval,
        timeout: c.timeout,
        rise: c.rise,
        fall: c.fall,
        policy: Policy { overloaded_is_alive: c.overloaded_is_alive },
        active: c.role == ProbeRole::Trunk,
    }
}

fn status_of(c: &ProbeConfig, t: &TargetStatus) -> ProbeStatus {
    ProbeStatus {
        name: c.name.clone(),
        role: c.role.as_str().into(),
        target: format!("{}:{}", t.transport.as_str().to_lowercase(), t.target),
        active: t.active,
        state: t.health.as_str().into(),
        last_rtt_ms: t.last_rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        failures_in_row: t.failures_in_row,
        recent: t
            .recent
            .iter()
            .map(|v| match v {
                Verdict::Alive { status } => status.to_string(),
                Verdict::Overloaded => "overloaded".into(),
                Verdict::Failed { .. } => "fail".into(),
            })
            .collect(),
        last_error: last_failure(t),
    }
}

/// The notification a `vip` or `trunk` state change deserves: a target that was up and
/// went down (critical), or was down and came back (info). The first verdict after start
/// or activation is not news; `local-pbx` failures reach the journal through the executor.
pub fn notice_for(c: &ProbeConfig, before: Option<Health>, sample: &Sample) -> Option<Notice> {
    if !sample.changed || matches!(c.role, ProbeRole::LocalPbx { .. }) {
        return None;
    }
    let what = match c.role {
        ProbeRole::Vip => format!("the VIP's SIP service ({})", c.target),
        _ => format!("SIP {} `{}` ({})", c.role.as_str(), c.name, c.target),
    };
    match (before, sample.health) {
        (Some(Health::Up), Health::Down) => Some(Notice {
            severity: Severity::Critical,
            subject: format!("{what} stopped answering"),
            body: format!(
                "{} OPTIONS probes in a row failed; the latest: {}",
                c.fall,
                match &sample.verdict {
                    Verdict::Failed { reason } => reason.as_str(),
                    _ => "no answer",
                }
            ),
        }),
        (Some(Health::Down), Health::Up) => Some(Notice {
            severity: Severity::Info,
            subject: format!("{what} answers again"),
            body: format!("{} OPTIONS probes in a row were answered", c.rise),
        }),
        _ => None,
    }
}

/// How long after the group started here the daemon waits for the VIP's first SIP answer
/// before closing the takeover's timeline without it. Asterisk answers SIP a few seconds
/// after systemd reports it started; 30 s covers a loaded box and bounds how long the
/// failover mail waits.
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Pause between attempts while the PBX does not answer yet (each attempt has its own
/// timeout, the probe's).
const FIRST_ANSWER_RETRY: Duration = Duration::from_millis(200);

/// What to ask for the first SIP answer on the VIP after a takeover: the `vip` probe, or
/// else — when the group has a `pbx` — the first `vip` resource's address on UDP port 5060.
/// `None` when the group serves no SIP pbxha knows of.
pub fn vip_sip_probe(config: &Config) -> Option<(Probe, Policy)> {
    if let Some(c) = config.probes.iter().find(|c| c.role == ProbeRole::Vip) {
        let p = match c.transport {
            ProbeTransport::Udp => Probe::udp(c.target, c.timeout),
            ProbeTransport::Tcp => Probe::tcp(c.target, c.timeout),
        };
        return Some((p, Policy { overloaded_is_alive: c.overloaded_is_alive }));
    }
    let has_pbx = config.resources.iter().any(|r| matches!(r.kind, ResourceKind::Pbx(_)));
    let vip = config.resources.iter().find_map(|r| match &r.kind {
        ResourceKind::Vip(v) => Some(v.address.addr),
        _ => None,
    })?;
    let target = std::net::SocketAddr::new(vip, DEFAULT_SIP_PORT);
    has_pbx.then(|| (Probe::udp(target, crate::config::DEFAULT_PROBE_TIMEOUT), Policy::default()))
}

/// After a refused takeover, looks at the group's VIPs again: whether any still answers
/// ARP, and if one does, whether SIP answers on it (a node that crashed leaves its address
/// answering ARP with nothing behind it). The fsm gets the answer as `Event::VipProbed`.
pub fn spawn_vip_reprobe(config: &Config, events: mpsc::Sender<crate::fsm::Event>) {
    let vips: Vec<crate::resources::vip::Vip> = config
        .resources
        .iter()
        .filter_map(|r| match &r.kind {
            ResourceKind::Vip(v) => Some(crate::resources::vip::Vip::new(r.name.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let sip = vip_sip_probe(config);
    tokio::spawn(async move {
        let mut answered = false;
        for vip in &vips {
            match vip.answered().await {
                Ok(yes) => answered |= yes,
                // Unknown is not silent: taking over beside a live address is the worse error.
                Err(e) => {
                    tracing::warn!("VIP re-probe: {e}");
                    answered = true;
                }
            }
        }
        let sip = match (&sip, answered) {
            (Some((p, policy)), true) => Some(verdict(&probe(p).await, *policy).is_healthy()),
            _ => None,
        };
        let _ = events.send(crate::fsm::Event::VipProbed { answered, sip }).await;
    });
}

/// The timeline line for the first healthy answer (`Ok(status line)`) or the last failure
/// (`Err(reason)`) at `target`, `after` the takeover decision.
pub fn first_answer_line(target: &str, outcome: Result<&str, &str>, after: Duration) -> String {
    match outcome {
        Ok(status) => {
            format!("first SIP answer on the VIP ({target}: {status}) {} ms after the decision", after.as_millis())
        }
        Err(why) => {
            format!("no SIP answer on the VIP ({target}) within {} ms of the decision; last: {why}", after.as_millis())
        }
    }
}

/// Asks the VIP for SIP OPTIONS in the background until it answers healthily or the wait
/// ends; the daemon reads [`FirstAnswer::answer`] on its next turn. Dropping it stops asking.
pub struct FirstAnswer {
    answer: Arc<Mutex<Option<Answer>>>,
    task: JoinHandle<()>,
}

/// How the wait for the first SIP answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The VIP answered healthily (rather than the wait running out).
    pub answered: bool,
    /// The timeline line ([`first_answer_line`]).
    pub line: String,
}

impl FirstAnswer {
    /// Starts asking now; `decision` is when the takeover was decided (what the line's time
    /// counts from), `wait` how long to keep asking.
    pub fn spawn(p: Probe, policy: Policy, decision: Instant, wait: Duration) -> FirstAnswer {
        let answer = Arc::new(Mutex::new(None));
        let slot = answer.clone();
        let task = tokio::spawn(async move {
            let target = format!("{}:{}", p.transport.as_str().to_lowercase(), p.target);
            let until = tokio::time::Instant::now() + wait;
            let text = loop {
                let outcome = probe(&p).await;
                let v = verdict(&outcome, policy);
                match (&outcome, v.is_healthy()) {
                    (Ok(r), true) => {
                        let status = format!("{} {}", r.status, r.reason);
                        let line = first_answer_line(&target, Ok(&status), decision.elapsed());
                        break Answer { answered: true, line };
                    }
                    _ if tokio::time::Instant::now() >= until => {
                        let why = match v {
                            Verdict::Failed { reason } => reason,
                            other => format!("{other:?}"),
                        };
                        break Answer {
                            answered: false,
                            line: first_answer_line(&target, Err(&why), decision.elapsed()),
                        };
                    }
                    _ => tokio::time::sleep(FIRST_ANSWER_RETRY).await,
                }
            };
            if let Ok(mut s) = slot.lock() {
                *s = Some(text);
            }
        });
        FirstAnswer { answer, task }
    }

    /// The outcome, once the VIP answered or the wait is over.
    pub fn answer(&self) -> Option<Answer> {
        self.answer.lock().ok().and_then(|s| s.clone())
    }
}

impl Drop for FirstAnswer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A group member whose monitor also fails while its `local-pbx` probe is down.
struct SipChecked {
    inner: Arc<dyn Resource>,
    probe: String,
    engine: EngineHandle,
}

#[async_trait]
impl Resource for SipChecked {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn start(&self) -> Result<(), Error> {
        self.inner.start().await?;
        self.engine.activate(&self.probe);
        Ok(())
    }

    async fn start_released(&self) -> Result<(), Error> {
        self.inner.start_released().await?;
        self.engine.activate(&self.probe);
        Ok(())
    }

    async fn stop(&self) -> Result<(), Error> {
        self.engine.deactivate(&self.probe);
        self.inner.stop().await
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        if self.inner.monitor().await? == ResourceState::Stopped {
            return Ok(ResourceState::Stopped);
        }
        match self.engine.target(&self.probe) {
            Some(t) if t.health == Health::Down => Err(Error::Resource {
                resource: self.inner.name().to_string(),
                message: format!(
                    "runs but its SIP stack does not answer: {} OPTIONS to {} failed in a row ({})",
                    t.failures_in_row,
                    t.target,
                    last_failure(&t).unwrap_or_default()
                ),
            }),
            _ => Ok(ResourceState::Running),
        }
    }

    async fn reannounce(&self) -> Result<(), Error> {
        self.inner.reannounce().await
    }
}

/// Why the latest failed probe failed.
fn last_failure(t: &TargetStatus) -> Option<String> {
    t.recent.iter().rev().find_map(|v| match v {
        Verdict::Failed { reason } => Some(reason.clone()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use pbxha_telephony::{Responder, ResponderConfig};

    use super::*;
    use crate::config::ResourceConfig;

    fn probe(name: &str, role: ProbeRole, target: std::net::SocketAddr) -> ProbeConfig {
        ProbeConfig {
            name: name.into(),
            role,
            transport: ProbeTransport::Udp,
            target,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
            rise: 1,
            fall: 2,
            overloaded_is_alive: false,
        }
    }

    fn sample(health: Health, changed: bool) -> Sample {
        Sample {
            target: Arc::from("t"),
            verdict: Verdict::Failed { reason: "no final SIP response".into() },
            rtt: None,
            health,
            changed,
        }
    }

    #[test]
    fn only_real_changes_of_vip_and_trunk_are_notified() {
        let addr = "198.51.100.100:5060".parse().unwrap();
        let vip = probe("vip", ProbeRole::Vip, addr);
        let down = notice_for(&vip, Some(Health::Up), &sample(Health::Down, true)).unwrap();
        assert_eq!(down.severity, Severity::Critical);
        assert!(down.subject.contains("VIP") && down.subject.contains("198.51.100.100:5060"), "{down:?}");
        assert!(down.body.contains("no final SIP response"), "{down:?}");
        let trunk = probe("carrier", ProbeRole::Trunk, addr);
        let up = notice_for(&trunk, Some(Health::Down), &sample(Health::Up, true)).unwrap();
        assert_eq!(up.severity, Severity::Info);
        assert!(up.subject.contains("`carrier`"), "{up:?}");
        // The first verdict, a repeated one, and anything about the local PBX are not news.
        assert!(notice_for(&trunk, Some(Health::Unknown), &sample(Health::Down, true)).is_none());
        assert!(notice_for(&trunk, None, &sample(Health::Up, true)).is_none());
        assert!(notice_for(&trunk, Some(Health::Down), &sample(Health::Down, false)).is_none());
        let local = probe("pbx", ProbeRole::LocalPbx { resource: "sip".into() }, addr);
        assert!(notice_for(&local, Some(Health::Up), &sample(Health::Down, true)).is_none());
    }

    /// A process stand-in that always says it runs.
    struct AlwaysRunning(AtomicBool);

    #[async_trait]
    impl Resource for AlwaysRunning {
        fn name(&self) -> &str {
            "sip"
        }
        async fn start(&self) -> Result<(), Error> {
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
        async fn stop(&self) -> Result<(), Error> {
            self.0.store(false, Ordering::SeqCst);
            Ok(())
        }
        async fn monitor(&self) -> Result<ResourceState, Error> {
            Ok(if self.0.load(Ordering::SeqCst) { ResourceState::Running } else { ResourceState::Stopped })
        }
    }

    async fn monitor_until(m: &Member, want_err: bool) -> Result<ResourceState, Error> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let r = m.resource.monitor().await;
            if r.is_err() == want_err {
                return r;
            }
            assert!(Instant::now() < until, "monitor never turned {}", if want_err { "bad" } else { "good" });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_running_member_whose_sip_is_silent_fails_its_monitor_and_a_restart_starts_afresh() {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let responder = Responder::bind(any, None, ResponderConfig::new("a")).await.unwrap();
        let addr = responder.udp_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(responder.run(async move {
            let _ = stopped.await;
        }));
        let configs = [probe("pbx", ProbeRole::LocalPbx { resource: "sip".into() }, addr)];
        let probes = Probes::start(&configs).await.unwrap();
        let rc = ResourceConfig {
            name: "sip".into(),
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
            monitor_timeout: Duration::from_secs(1),
            monitor_interval: Duration::from_secs(1),
            kind: crate::config::ResourceKind::Service(crate::config::ServiceConfig::Unit("x".into())),
        };
        let members = probes.wrap(vec![Member::new(&rc, Arc::new(AlwaysRunning(AtomicBool::new(false))))]);
        let m = &members[0];
        assert_eq!(m.resource.name(), "sip");
        assert!(!probes.status()[0].active, "probed before the member started");
        m.resource.start().await.unwrap();
        assert!(probes.status()[0].active);
        let until = Instant::now() + Duration::from_secs(20);
        while probes.status()[0].state != "up" {
            assert!(Instant::now() < until, "{:?}", probes.status());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(m.resource.monitor().await.unwrap(), ResourceState::Running);
        assert_eq!(probes.status()[0].recent.last().map(String::as_str), Some("200"));

        // The PBX hangs: the process still runs, SIP is silent.
        drop(stop);
        served.await.unwrap().unwrap();
        let err = monitor_until(m, true).await.unwrap_err().to_string();
        assert!(err.contains("does not answer") && err.contains(&addr.to_string()), "{err}");
        assert_eq!(probes.status()[0].state, "down");

        // A restart (stop + start) gives the probe a clean slate: not down until `fall` new
        // failures.
        m.resource.stop().await.unwrap();
        assert!(!probes.status()[0].active);
        assert_eq!(m.resource.monitor().await.unwrap(), ResourceState::Stopped);
        m.resource.start().await.unwrap();
        assert_eq!(m.resource.monitor().await.unwrap(), ResourceState::Running);
        assert_eq!(probes.status()[0].state, "unknown");
        monitor_until(m, true).await.unwrap_err();
    }

    /// The lab's generated config, with `extra` appended (its key file is written too).
    fn lab_config(extra: &str) -> (tempfile::TempDir, String) {
        use pbxha_lab::plan::{node_config, Member as LabMember, Pbx, Profile, AUTH_KEY_FILE};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(AUTH_KEY_FILE);
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let text = node_config(
            LabMember::A,
            dir.path(),
            Profile::Default,
            Pbx::Kamailio,
            Default::default(),
            false,
            std::path::Path::new("/bin/pbxha"),
        );
        (dir, format!("{text}\n{extra}"))
    }

    #[test]
    fn the_lab_probes_its_pbx_on_the_vip_and_probe_tables_are_checked() {
        let (_dir, text) = lab_config("");
        let config = crate::config::parse(&text).unwrap();
        let pbx = &config.probes[0];
        assert_eq!(pbx.role, ProbeRole::LocalPbx { resource: "sip".into() });
        assert_eq!((pbx.transport, pbx.target.to_string()), (ProbeTransport::Udp, "198.51.100.100:5060".into()));
        assert_eq!((pbx.interval, pbx.fall, pbx.overloaded_is_alive), (Duration::from_secs(1), 3, false));
        assert_eq!(config.probes[1].role, ProbeRole::Vip);

        let (_dir, text) = lab_config(
            "[[probe]]\nname = \"carrier\"\nrole = \"trunk\"\ntarget = \"tcp:203.0.113.5\"\novreloaded-is-alive = true\n\
             [[probe]]\nname = \"pbx\"\nrole = \"local-pbx\"\nresource = \"asterisk\"\ntarget = \"udp:nowhere:5060\"\n\
             [[probe]]\nname = \"x\"\nrole = \"peer\"\ntarget = \"203.0.113.5:5080\"\n",
        );
        let problems = crate::config::parse(&text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in ["probe[2].ovreloaded-is-alive", "probe[3].target", "probe[4].role"] {
            assert!(keys.contains(&key), "{key} missing from {problems:#?}");
        }
        let (_dir, text) = lab_config(
            "[[probe]]\nname = \"carrier\"\nrole = \"trunk\"\ntarget = \"tcp:203.0.113.5\"\n\
             [[probe]]\nname = \"carrier\"\nrole = \"local-pbx\"\nresource = \"asterisk\"\ntarget = \"[2001:db8::1]:5062\"\n",
        );
        let problems = crate::config::parse(&text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["probe[3].name", "probe[3].resource"], "{problems:#?}");
    }

    #[test]
    fn the_first_answer_is_asked_of_the_vip_probe_or_the_pbx_on_the_vip() {
        let (_dir, text) = lab_config("");
        let config = crate::config::parse(&text).unwrap();
        let (p, _) = vip_sip_probe(&config).unwrap();
        assert_eq!(p.target, config.probes[1].target);
        // Without a vip probe: a pbx on the VIP gets UDP 5060 on the vip resource's address.
        let mut config = config;
        config.probes.clear();
        assert!(vip_sip_probe(&config).is_none(), "the lab's PBX is a service, not a pbx");
        config.resources.push(ResourceConfig {
            name: "ast".into(),
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            monitor_timeout: Duration::from_secs(5),
            monitor_interval: Duration::from_secs(5),
            kind: ResourceKind::Pbx(crate::config::PbxConfig {
                pbx: pbxha_telephony::PbxKind::Asterisk,
                unit: "asterisk".into(),
                ami: None,
                event_socket_password_file: None,
            }),
        });
        let (p, _) = vip_sip_probe(&config).unwrap();
        assert_eq!((p.target.to_string(), p.transport), ("198.51.100.100:5060".into(), Transport::Udp));
    }

    #[tokio::test]
    async fn the_first_answer_on_the_vip_is_timed_from_the_decision() {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let responder = Responder::bind(any, None, ResponderConfig::new("b")).await.unwrap();
        let addr = responder.udp_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(responder.run(async move {
            let _ = stopped.await;
        }));
        let decision = Instant::now() - Duration::from_millis(1500);
        let wait = FirstAnswer::spawn(
            Probe::udp(addr, Duration::from_secs(2)),
            Policy::default(),
            decision,
            Duration::from_secs(20),
        );
        let until = Instant::now() + Duration::from_secs(20);
        let line = loop {
            if let Some(answer) = wait.answer() {
                assert!(answer.answered);
                break answer.line;
            }
            assert!(Instant::now() < until, "no answer from {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(line.starts_with(&format!("first SIP answer on the VIP (udp:{addr}: 200 OK) ")), "{line}");
        let ms: u64 = line.split(") ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!(ms >= 1500, "counted from the decision: {line}");
        drop(stop);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_silent_vip_ends_the_wait_with_the_reason() {
        // Nothing listens on a just-closed loopback port: ICMP port unreachable, or silence.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let wait = FirstAnswer::spawn(
            Probe::udp(addr, Duration::from_millis(200)),
            Policy::default(),
            Instant::now(),
            Duration::from_millis(500),
        );
        let until = Instant::now() + Duration::from_secs(20);
        let line = loop {
            if let Some(answer) = wait.answer() {
                assert!(!answer.answered);
                break answer.line;
            }
            assert!(Instant::now() < until, "the wait never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(line.starts_with(&format!("no SIP answer on the VIP (udp:{addr}) within ")), "{line}");
        assert!(line.contains("; last: "), "{line}");
    }

    #[tokio::test]
    async fn vip_probes_run_only_while_the_group_is_elsewhere() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let mut probes =
            Probes::start(&[probe("vip", ProbeRole::Vip, addr), probe("t", ProbeRole::Trunk, addr)]).await.unwrap();
        let active = |p: &Probes| p.status().iter().map(|s| s.active).collect::<Vec<_>>();
        assert_eq!(active(&probes), [false, true]);
        probes.follow_group(GroupPhase::Stopped);
        assert_eq!(active(&probes), [true, true]);
        probes.follow_group(GroupPhase::Starting);
        assert_eq!(active(&probes), [false, true]);
        assert!(Probes::start(&[]).await.unwrap().status().is_empty());
    }
}
