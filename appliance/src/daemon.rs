//! `pbxha run`: the I/O loop around the pure fsm.
//!
//! Heartbeats, ping results, resource results, control requests, timers and signals all
//! become [`Event`]s on one channel (or one `select!`); the fsm answers with [`Action`]s and
//! this loop carries them out. Nothing here decides anything about failover.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use pbxha_runner::{Runner, SystemRunner};
use pbxha_telephony::Health;
use pbxha_watchdog::checks::{run_checks, Transition};
use pbxha_watchdog::config::CheckKind;
use pbxha_watchdog::device::{Kicker, LinuxWatchdog};
use pbxha_watchdog::mailer::{Delivery, MailHandle};
use pbxha_watchdog::report::Alert;

use crate::calls::{CallCounter, GroupPbx};
use crate::config::{self, Config};
use crate::connectivity::PingMonitor;
use crate::control::{self, Pending, Reply, Request};
use crate::failover::{switchover_report, Ended, FailoverContext, FailoverReport, Timeline};
use crate::fsm::{Action, Admin, Event, GroupEvent, Node, Params, RecordKind};
use crate::journal::{Entry, Journal, Kind};
use crate::membership::ask::{Answer, Ask};
use crate::membership::{AuthKey, IncomingAsk, LinkSetup, Links};
use crate::net::nonlocal;
use crate::notify::{check_alert, MailStatus, Notifier};
use crate::resources::{build_members, spawn_group, GroupHandle, ResourceReport};
use crate::status::{CheckStatus, DaemonStatus};
use crate::summary::{GroupPhase, NodeSummary};
use crate::Error;

pub struct Options {
    pub config: PathBuf,
    pub node: Option<String>,
}

/// Fsm parameters from the config.
pub fn params(config: &Config, local: &str) -> Params {
    let me = config.node(local).cloned().unwrap_or_else(|| config.nodes[0].clone());
    let peer = config.peer_of(local).cloned().unwrap_or_else(|| config.nodes[1].clone());
    Params {
        node_id: me.id,
        node_name: me.name.clone(),
        peer_id: peer.id,
        peer_name: peer.name.clone(),
        link_names: config.links.iter().map(|l| l.name.clone()).collect(),
        interval: config.heartbeat.interval,
        deadtime: config.heartbeat.deadtime,
        warntime: config.heartbeat.warntime,
        initdead: config.heartbeat.initdead,
        ping_targets: u8::try_from(config.ping.targets.len()).unwrap_or(u8::MAX),
        auto_failback: config.cluster.auto_failback,
        preferred: config.cluster.preferred_node.as_ref().map(|p| *p == me.name),
        failure_timeout: config.group.failure_timeout,
        drain_timeout: config.group.drain_timeout,
        ping_dampen: config.ping.fall_window(),
        ping_interval: config.ping.interval,
        ping_timeout: config.ping.timeout,
        on_isolation: config.ping.on_isolation,
    }
}

struct Daemon {
    /// Outbox delivery, when `[mail]` is configured; a reload replaces it.
    mailer: Option<Mailer>,
    config: Config,
    config_path: PathBuf,
    local: String,
    fsm: Node,
    links: Links,
    group: GroupHandle,
    /// Resource definitions from a reload, applied when the group is next stopped.
    pending_resources: Option<Config>,
    ping: PingMonitor,
    /// Ends the running ping monitor, which a reload replaces.
    ping_stop: watch::Sender<bool>,
    /// Set as the daemon exits; every task it starts ends on it.
    stop: watch::Receiver<bool>,
    journal: Arc<Journal>,
    notifier: Notifier,
    runner: Arc<dyn Runner>,
    events: mpsc::Sender<Event>,
    started: Instant,
    drain: crate::calls::DrainTracker,
    /// The running call drain, for cancelling it when the peer can no longer take over.
    drain_task: Option<crate::calls::DrainTask>,
    /// The group's PBX, for counting and draining its calls.
    pbx: GroupPbx,
    /// The group PBX's calls, polled while the group runs here.
    calls: CallCounter,
    /// The running and the last takeover: timeline, report, counts.
    failover: FailoverReport,
    checks: BTreeMap<String, CheckStatus>,
    /// SIP OPTIONS probes; `local-pbx` ones are inside the group's members too.
    probes: crate::probes::Probes,
    mysql: Option<crate::mysql_watch::MysqlWatch>,
    /// DRBD fencing with the peer, and the peer knowledge the `drbd` resources promote by.
    fencing: crate::fence::Fencing,
    /// The first `drbd` resource as last read here, for the heartbeat and split-brain alerts.
    drbd: crate::fence::LocalDrbd,
    /// The fsm's answer to the fence-peer poll being handled, for its reply.
    fence_answer: Option<(crate::fence::FenceVerdict, String, bool)>,
    /// The config file's fingerprint as this daemon loaded it, for the peer's drill.
    fingerprint: config::Fingerprint,
    /// The SIP probe a drill on the peer asked for while the group moves here.
    drill_probe: Option<crate::drill::probe::Prober>,
}

/// An ask to the peer is sent this many times on every link, this far apart, before the
/// control client is told the peer did not answer (well within its 10 s).
const ASK_TRIES: u32 = 5;
const ASK_WAIT: Duration = Duration::from_millis(400);

/// The checks with each drill's command line completed: this very program and config.
fn with_drill_program(
    checks: &[pbxha_watchdog::config::CheckConfig],
    config: &std::path::Path,
) -> Vec<pbxha_watchdog::config::CheckConfig> {
    let program = std::env::current_exe().map_or_else(|_| "pbxha".to_string(), |p| p.to_string_lossy().into_owned());
    checks
        .iter()
        .cloned()
        .map(|mut c| {
            if let CheckKind::Drill { argv } = &c.kind {
                c.kind = CheckKind::Drill { argv: CheckKind::drill_argv(argv, &program, &config.to_string_lossy()) };
            }
            c
        })
        .collect()
}

/// The fingerprint of the config file at `path` as the node `local` reads it.
fn fingerprint(path: &std::path::Path, local: &str) -> config::Fingerprint {
    std::fs::read_to_string(path).map(|text| config::Fingerprint::of(&text, local)).unwrap_or_default()
}

/// How often the loop publishes a status snapshot for `[http]`: a scrape interval's worth of
/// freshness, at the cost of one `status()` a second.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

pub async fn run(opts: Options) -> Result<(), Error> {
    let config = config::load(&opts.config)?;
    let local = config::local_node(&config, opts.node.as_deref())
        .map_err(|p| Error::ConfigFile { path: opts.config.clone(), message: p.to_string() })?
        .clone();
    let peer = config
        .peer_of(&local.name)
        .cloned()
        .ok_or_else(|| Error::ConfigFile { path: opts.config.clone(), message: "no peer node configured".into() })?;
    let key = AuthKey::load(&config.cluster.auth_key_file)?;
    let journal = Arc::new(Journal::open(&config.paths.state_db).unwrap_or_else(|e| {
        tracing::error!("{e}; running without a journal");
        Journal::disabled()
    }));
    match nonlocal::enable_ip_nonlocal_bind() {
        Ok(()) => tracing::info!("net.ipv4.ip_nonlocal_bind = 1"),
        Err(e) => tracing::warn!("{e}; the PBX cannot bind the VIP on the secondary"),
    }
    // First, so a second daemon started by mistake stops here, before it touches the
    // resources the running one holds.
    let listener = control::bind(&config.paths.control_socket).await?;
    // Right after the socket, so an old sentinel still deciding sees this daemon up.
    let sentinel = crate::sentinel::Sentinel::spawn(&opts.config)
        .map_err(|e| {
            tracing::error!(
                "{e}; running without a sentinel: if this daemon dies, only systemd's ExecStopPost releases the VIPs"
            )
        })
        .ok();
    let http = match &config.http {
        Some(h) => Some((crate::http::bind(h).await?, h.allow.clone())),
        None => None,
    };
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(1024);
    let runner: Arc<dyn Runner> = Arc::new(SystemRunner);
    let failover = FailoverReport::new(&local.name, journal.clone());
    let mut probes = crate::probes::Probes::start(&config.probes).await?;
    let fencing = crate::fence::Fencing::default();
    let wiring = GroupWiring {
        runner: &runner,
        journal: &journal,
        timeline: failover.timeline(),
        events: &events_tx,
        probes: &probes,
        drbd_view: fencing.view(),
    };
    let (group, pbx) = new_group(&config, &local.name, wiring)?;
    // Like Pacemaker's start-up probe: a daemon that crashed may have left the VIP or the PBX
    // running. Stop everything before joining, or the peer and this node would both hold it.
    let leftover = clean_start(&group, &mut events_rx, shutdown_budget(&config)).await;
    // Every task the daemon starts ends on this (see `crate::stopped`).
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut links = Links::open(
        &LinkSetup {
            links: &config.links,
            cluster_id: config.cluster.id,
            local: &local,
            peer: &peer,
            boot: crate::membership::boot::start(&config.paths.state_db),
            key: &key,
            warntime: config.heartbeat.warntime,
            deadtime: config.heartbeat.deadtime,
        },
        events_tx.clone(),
        &stop_rx,
    )?;
    let mut asks_rx = links.incoming_asks().unwrap_or_else(|| mpsc::channel(1).1);
    let ping = PingMonitor::new(config.ping.clone());
    let ping_stop = spawn_ping(&ping, events_tx.clone(), &stop_rx);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Pending>(16);
    tokio::spawn(control::serve(listener, ctl_tx, stop_rx.clone()));
    // The first node offers the second node's join while `pbxha install` left a token.
    let offer = config.paths.state_db.with_file_name(pbxha_installer::join::OFFER_NAME);
    let mut join_stop = stop_rx.clone();
    tokio::spawn(pbxha_installer::join::serve(offer, async move { crate::stopped(&mut join_stop).await }, |line| {
        tracing::info!("{line}")
    }));
    let mailer = spawn_mail(&config, &local.name, None, None, &stop_rx);
    let notifier = Notifier::new(&config.cluster.name, &local.name, config.paths.hooks.clone(), runner.clone())
        .with_mail(mailer.as_ref().map(|m| m.handle.clone()));
    probes.alert_with(notifier.clone());
    let mysql = crate::mysql_watch::spawn(config.mysql.as_ref(), notifier.clone(), stop_rx.clone());
    let (check_tx, mut check_rx) = mpsc::channel::<Transition>(64);
    if !config.checks.is_empty() {
        let checks = with_drill_program(&config.checks, &opts.config);
        let (db, runner) = (config.paths.state_db.clone(), runner.clone());
        let (tx, stop) = (check_tx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = run_checks(checks, runner, db, tx, stop).await {
                tracing::error!("checks not running: {e}");
            }
        });
    }
    let checks = config
        .checks
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                CheckStatus { name: c.name.clone(), state: "unknown".into(), since_ms: None, detail: String::new() },
            )
        })
        .collect();

    let calls = CallCounter::spawn(&pbx);
    let drbd =
        crate::fence::LocalDrbd::spawn(&config.resources, runner.clone(), events_tx.clone(), fencing.view(), &stop_rx);
    let now = Instant::now();
    let mut d = Daemon {
        mailer,
        fsm: Node::new(params(&config, &local.name), now),
        config_path: opts.config.clone(),
        local: local.name.clone(),
        links,
        group,
        pending_resources: None,
        ping,
        ping_stop,
        stop: stop_rx.clone(),
        journal,
        notifier,
        runner,
        events: events_tx,
        started: now,
        drain: Default::default(),
        drain_task: None,
        pbx,
        calls,
        failover,
        checks,
        probes,
        mysql,
        fencing,
        fence_answer: None,
        drbd,
        fingerprint: fingerprint(&opts.config, &local.name),
        drill_probe: None,
        config,
    };
    // The endpoint only ever reads what this loop publishes (see crate::http).
    let snapshots = http.map(|(listener, allow)| {
        let (tx, rx) = watch::channel(Arc::new(d.snapshot()));
        tokio::spawn(crate::http::serve(listener, allow, rx, d.config.paths.state_db.clone(), stop_rx.clone()));
        tx
    });
    let mut publish = tokio::time::interval(SNAPSHOT_EVERY);
    if let Some(ev) = leftover {
        d.apply(ev);
    }
    tracing::info!(node = %d.local, peer = %peer.name, cluster = %d.config.cluster.name, "pbxha started");
    d.journal.record(Entry::now(&d.local, Kind::Record(RecordKind::RoleChange), "daemon started"));

    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| Error::io("installing SIGTERM handler", e))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::io("installing SIGINT handler", e))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| Error::io("installing SIGHUP handler", e))?;
    let mut beat = tokio::time::interval(d.config.heartbeat.interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(tick_period(&d.config));
    let (watchdog_every, mut watchdog) = sd_watchdog();
    // Armed last: from here on a main loop that stops turning resets the node.
    let mut kicker = match &d.config.watchdog {
        Some(w) => Some(Kicker::arm(Box::new(LinuxWatchdog::open(&w.device)?), w.timeout)?),
        None => None,
    };
    let mut kick = tokio::time::interval(kicker.as_ref().map_or(Duration::from_secs(3600), |k| k.interval));
    sd_notify("READY=1");
    let mut stopping: Option<Instant> = None;

    loop {
        tokio::select! {
            Some(ev) = events_rx.recv() => d.apply(ev),
            _ = tick.tick() => d.apply(Event::Tick),
            _ = beat.tick() => {
                // The fsm looks at the clock first: after a freeze, the first heartbeat out
                // must already say so (see `Node::notice_stall`).
                d.apply(Event::Tick);
                d.links.send(&d.summary());
            }
            Some((req, reply)) = ctl_rx.recv() => match req {
                Request::AskPeer { ask } => d.ask_peer(ask, reply),
                req => {
                    let answer = d.answer(req);
                    let _ = reply.send(answer);
                }
            },
            Some(incoming) = asks_rx.recv() => d.on_ask(incoming),
            _ = sigterm.recv() => stopping = stopping.or_else(|| d.begin_shutdown("SIGTERM")),
            _ = sigint.recv() => stopping = stopping.or_else(|| d.begin_shutdown("SIGINT")),
            _ = sighup.recv() => {
                if d.reload() {
                    beat = tokio::time::interval(d.config.heartbeat.interval);
                    tick = tokio::time::interval(tick_period(&d.config));
                }
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => sd_notify("WATCHDOG=1"),
            _ = kick.tick(), if kicker.is_some() => {
                if let Some(Err(e)) = kicker.as_mut().map(Kicker::kick) {
                    tracing::error!("{e}");
                }
            }
            Some(t) = check_rx.recv() => d.on_check(t),
            _ = publish.tick(), if snapshots.is_some() => {
                if let Some(tx) = &snapshots {
                    tx.send_replace(Arc::new(d.snapshot()));
                }
            }
        }
        if d.fsm.exited() {
            break;
        }
        if let Some(since) = stopping {
            if since.elapsed() > shutdown_budget(&d.config) {
                break;
            }
        }
    }
    sd_notify("STOPPING=1");
    let held: Vec<String> = d
        .group
        .status()
        .into_iter()
        .filter(|r| r.state != crate::resources::MemberState::Stopped)
        .map(|r| format!("{} ({:?})", r.name, r.state).to_lowercase())
        .collect();
    let gave_up = !d.fsm.exited();
    if gave_up {
        // Not a clean stop: the watchdog stays armed (no magic close), so a node that cannot
        // release its resources is reset rather than left holding them beside the peer.
        tracing::error!(
            "resources still held after {:?}: {}; exiting with an error",
            shutdown_budget(&d.config),
            held.join(", ")
        );
    } else if let Some(Err(e)) = kicker.take().map(Kicker::stop) {
        // A clean stop: disarm, so stopping pbxha does not reset the node.
        tracing::error!("{e}");
    }
    let _ = stop_tx.send(true);
    // Tell the peer once more, so it takes over now rather than after deadtime.
    d.links.send(&d.summary());
    // A takeover still waiting for the VIP's SIP answer ends here, inside its failover.
    if let Some(ended) = d.failover.release(true) {
        d.report_failover(ended);
    }
    d.journal.record(Entry::now(&d.local, Kind::Record(RecordKind::RoleChange), "daemon stopped"));
    if let Some(m) = &d.mailer {
        // The outbox's writer thread dies with the process: what it holds is lost unless it
        // reaches the database first.
        let held = m.handle.written(MAIL_WRITE_LIMIT).await;
        if held > 0 {
            tracing::error!(held, "mails not yet in the outbox after {MAIL_WRITE_LIMIT:?}; they are lost");
        }
    }
    // Clients then get "pbxha is not running" rather than a refused connection.
    let _ = std::fs::remove_file(&d.config.paths.control_socket);
    if gave_up {
        return Err(Error::Resource {
            resource: "group".into(),
            message: format!("could not stop before exiting: {}", held.join(", ")),
        });
    }
    if let Some(sentinel) = sentinel {
        sentinel.dismiss();
    }
    tracing::info!("pbxha stopped");
    Ok(())
}

/// Stops the whole group once and waits for the outcome. Returns a stop failure for the fsm:
/// it must then treat the group as possibly held.
async fn clean_start(group: &GroupHandle, events: &mut mpsc::Receiver<Event>, limit: Duration) -> Option<Event> {
    tracing::info!("stopping any resources left running by a previous run");
    group.stop();
    let outcome = tokio::time::timeout(limit, async {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Group(GroupEvent::Stopped) => return None,
                ev @ Event::Group(GroupEvent::StopFailed { .. }) => return Some(ev),
                _ => {}
            }
        }
        None
    })
    .await;
    match outcome {
        Ok(ev) => ev,
        Err(_) => Some(Event::Group(GroupEvent::StopFailed {
            resource: "group".into(),
            reason: format!("the start-up stop did not finish within {limit:?}"),
        })),
    }
}

/// How long a stopping daemon waits for queued mail to reach the outbox: two tries of a
/// database another process holds (the outbox's busy timeout is 5 s).
const MAIL_WRITE_LIMIT: Duration = Duration::from_secs(12);

/// Enough for a start in progress to finish and every resource to stop, plus a margin.
fn shutdown_budget(config: &Config) -> Duration {
    config.resources.iter().map(|r| r.start_timeout + r.stop_timeout).sum::<Duration>() + Duration::from_secs(5)
}

/// How often deadlines (deadtime, initdead, drain) are checked: a peer's death is noticed
/// up to one tick late, and an fsm step costs tens of nanoseconds, so tick often.
fn tick_period(config: &Config) -> Duration {
    (config.heartbeat.interval / 10).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

/// What every resource group the daemon builds is wired to, at start and on a reload.
struct GroupWiring<'a> {
    runner: &'a Arc<dyn Runner>,
    journal: &'a Arc<Journal>,
    timeline: &'a Timeline,
    events: &'a mpsc::Sender<Event>,
    probes: &'a crate::probes::Probes,
    drbd_view: &'a crate::fence::DrbdView,
}

/// The group and its PBX adapter, built once here and shared by the group's `pbx` member,
/// the call counter and the drains.
fn new_group(config: &Config, local: &str, w: GroupWiring<'_>) -> Result<(GroupHandle, GroupPbx), Error> {
    let pbx = GroupPbx::new(&config.resources, w.runner.clone())?;
    let members = w.probes.wrap(build_members(&config.resources, w.runner.clone(), w.drbd_view, &pbx)?);
    let (journal, timeline, events) = (w.journal.clone(), w.timeline.clone(), w.events.clone());
    let node = local.to_string();
    let report = Arc::new(move |r: ResourceReport| {
        let kind = Kind::Resource {
            resource: r.resource.clone(),
            action: r.action,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
            ok: r.ok,
        };
        let entry = Entry::now(&node, kind, r.message);
        // Never the end of a timeline: only the fsm's records close one.
        timeline.observe(&entry);
        journal.record(entry);
    });
    Ok((spawn_group(members, config.group.clone(), events, report), pbx))
}

/// The outbox's delivery loop and its status for `pbxha status`, with a stop signal of
/// their own so a reload can replace them, which the daemon's stop sets too
/// ([`crate::stop_within`]).
struct Mailer {
    /// What the notifier queues with.
    handle: MailHandle,
    stop: watch::Sender<bool>,
    /// The delivery loop, awaited by the one that replaces it.
    task: JoinHandle<()>,
    /// The outbox's pending count and last error, refreshed in the background.
    status: Arc<std::sync::Mutex<Option<MailStatus>>>,
}

/// Starts outbox delivery when `[mail]` is configured. An outbox that cannot be opened is
/// logged and shown by `pbxha status`; the cluster is managed without mail. A reload passes
/// the running loop's `handle`, so mails it holds in memory (a full disk) are kept, and the
/// loop itself as `after`, already told to stop: it is awaited first, so two loops never
/// send the same mail.
fn spawn_mail(
    config: &Config,
    local: &str,
    handle: Option<MailHandle>,
    after: Option<JoinHandle<()>>,
    daemon_stop: &watch::Receiver<bool>,
) -> Option<Mailer> {
    let mail = config.mail.clone()?;
    let hostname =
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| local.to_string());
    let db = config.paths.state_db.clone();
    let handle = match handle.map_or_else(|| MailHandle::open(&db, &hostname), Ok) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}; running without mail");
            return None;
        }
    };
    let delivery = Delivery { config: mail, cluster: config.cluster.name.clone(), hostname };
    let (stop, stop_rx) = crate::stop_within(daemon_stop);
    let status = MailStatus::watch(db.clone(), stop_rx.clone());
    let h = handle.clone();
    let task = tokio::spawn(async move {
        if let Some(previous) = after {
            let _ = previous.await;
        }
        if let Err(e) = h.run(db, delivery, stop_rx).await {
            tracing::error!("mail delivery stopped: {e}");
        }
    });
    Some(Mailer { handle, stop, task, status })
}

/// Runs the ping monitor until the daemon stops or a reload replaces it (the returned sender).
fn spawn_ping(
    ping: &PingMonitor,
    events: mpsc::Sender<Event>,
    daemon_stop: &watch::Receiver<bool>,
) -> watch::Sender<bool> {
    let (own, mut stop) = crate::stop_within(daemon_stop);
    let ping = ping.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = ping.run(events) => {}
            () = crate::stopped(&mut stop) => {}
        }
    });
    own
}

impl Daemon {
    /// What the next heartbeat says: the fsm's view, plus what only the I/O side knows.
    fn summary(&self) -> NodeSummary {
        NodeSummary {
            calls: self.calls_reported().and_then(|c| c.calls),
            drbd: self.drbd.brief(),
            ..self.fsm.summary()
        }
    }

    /// A split brain reported by DRBD's handler or by events2 (DRBD runs both for one split
    /// brain): the first report, with both sides' state, becomes the fsm's event; a repeat
    /// while the fault stands is only logged.
    fn split_brain(&self, resource: String, reported: String) -> Option<Event> {
        let st = self.fsm.status(Instant::now());
        let fault = crate::fsm::Fault::SplitBrain(resource.clone()).to_string();
        if st.faults.contains(&fault) {
            tracing::info!("{fault} reported again: {reported}");
            return None;
        }
        tracing::info!("DRBD split brain on {resource} reported: {reported}");
        let peer = st.peer.last.and_then(|p| p.drbd);
        let report = crate::fence::split_brain_detail(&resource, self.drbd.status().as_ref(), peer, &reported);
        Some(Event::SplitBrain { resource, report })
    }

    /// The call count to tell: while the group is here, and while handing it over — then it
    /// is the count at the move, which the new primary puts in its failover timeline.
    fn calls_reported(&self) -> Option<crate::calls::CallsStatus> {
        let s = self.fsm.summary();
        self.calls.snapshot().filter(|_| s.group != GroupPhase::Stopped || s.handover)
    }

    fn apply(&mut self, ev: Event) {
        let ev = match ev {
            Event::SplitBrain { resource, report } => match self.split_brain(resource, report) {
                Some(ev) => ev,
                None => return,
            },
            ev => ev,
        };
        if let Some(ended) = self.failover.release(false) {
            self.report_failover(ended);
        }
        self.probes.follow_group(self.group.phase());
        let drained = match &ev {
            Event::DrainFinished { calls_left } => Some(*calls_left),
            _ => None,
        };
        if matches!(ev, Event::Group(GroupEvent::Stopped)) {
            self.apply_pending_resources();
        }
        if let Event::Heartbeat { summary, .. } = &ev {
            self.failover.peer_heard(summary.group);
        }
        let actions = self.fsm.handle(ev, Instant::now());
        self.fencing.follow(&self.fsm, Instant::now());
        for a in actions {
            self.act(a);
        }
        // After the actions, so polling ends with the stop the drain led to and the drain's
        // final count (newer than the last poll) stays as the count at the move.
        self.calls.follow_group(self.fsm.summary().group);
        if let Some(left) = drained {
            self.calls.set(left);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::StartGroup { released: false } => self.group.start(),
            Action::StartGroup { released: true } => self.group.start_released(),
            Action::StopGroup => self.group.stop(),
            Action::Announce => self.links.send(&self.summary()),
            Action::Reannounce => self.group.reannounce(),
            Action::Drain { deadline } => {
                self.drain_task =
                    Some(crate::calls::spawn_drain(&self.pbx, deadline, self.events.clone(), self.drain.clone()));
            }
            Action::CancelDrain => {
                if let Some(task) = self.drain_task.take() {
                    task.cancel();
                }
            }
            Action::RestartFailed => self.group.restart_failed(),
            Action::ProbeVip => crate::probes::spawn_vip_reprobe(&self.config, self.events.clone()),
            Action::Record(r) => {
                if r.kind == RecordKind::FailoverBegin {
                    // A takeover still waiting for its first SIP answer ends first: whether
                    // the new one is a failover depends on it.
                    if let Some(ended) = self.failover.release(true) {
                        self.report_failover(ended);
                    }
                }
                tracing::info!(kind = ?r.kind, "{}", r.message);
                let entry = Entry::now(&self.local, Kind::Record(r.kind), r.message);
                let ended = match (r.kind, r.end) {
                    (RecordKind::FailoverBegin, _) => {
                        let context = self.failover_context();
                        self.failover.begin(entry, context);
                        None
                    }
                    (_, Some(end)) => self.failover.end(entry, end, crate::probes::vip_sip_probe(&self.config)),
                    _ => {
                        self.failover.journal(entry);
                        None
                    }
                };
                if let Some(ended) = ended {
                    self.report_failover(ended);
                }
            }
            Action::Notify(n) => self.notifier.send(&n),
            Action::FenceAnswer { verdict, message, asked } => self.fence_answer = Some((verdict, message, asked)),
            Action::Outdate { attempt } => {
                crate::fence::Fencing::outdate(attempt, &self.config.resources, &self.runner, &self.events, &self.stop)
            }
            Action::MissedFence { attempts, failure } => self.fencing.missed(attempts, &failure),
            Action::Exit => {}
        }
    }

    fn answer(&mut self, req: Request) -> Reply {
        let admin = match req {
            Request::Status => {
                let status = self.status();
                return Reply {
                    ok: true,
                    message: crate::status::render(&status),
                    status: serde_json::to_value(&status).ok(),
                };
            }
            Request::Standby => Admin::Standby,
            Request::Online => Admin::Online,
            Request::Switchover { now } => Admin::Switchover { now },
            Request::FencePeer { resource } => {
                self.apply(Event::FencePeer);
                let (verdict, message, asked) = self.fence_answer.take().unwrap_or_else(|| {
                    (crate::fence::FenceVerdict::Pending, "the daemon gave no fence verdict".into(), false)
                });
                let peer = self.fsm.status(Instant::now()).peer.name;
                return crate::fence::Fencing::reply(&resource, &peer, verdict, message, asked);
            }
            Request::SplitBrain { resource, report } => {
                self.apply(Event::SplitBrain { resource: resource.clone(), report });
                return Reply {
                    ok: true,
                    message: format!("split brain on {resource} reported by {}", self.local),
                    status: None,
                };
            }
            Request::Fingerprint => {
                return Reply {
                    ok: true,
                    message: self.local.clone(),
                    status: serde_json::to_value(&self.fingerprint).ok(),
                }
            }
            // The loop hands these to ask_peer, which waits off the loop.
            Request::AskPeer { .. } => {
                return Reply { ok: false, message: "an ask is for the peer".into(), status: None };
            }
        };
        if let Some(why) = self.fsm.refuse(&admin) {
            if matches!(admin, Admin::Switchover { .. }) {
                self.failover.switchover_refused();
            }
            return Reply { ok: false, message: format!("refused: {why}"), status: None };
        }
        let what = format!("{admin:?}").to_lowercase();
        let alert = match admin {
            Admin::Standby => Some(Alert::NodeStandby { node: self.local.clone() }),
            Admin::Online => {
                // Like a resolved split brain, a missed fence is the operator's to clear.
                self.fencing.view().clear_missed_fence("`pbxha online`");
                Some(Alert::NodeOnline { node: self.local.clone() })
            }
            _ => None,
        };
        self.apply(Event::Admin(admin));
        if let Some(alert) = alert {
            self.notifier.alert(&alert, crate::unix_ms());
        }
        let status = self.status();
        Reply {
            ok: true,
            message: format!("{what} accepted on {}", self.local),
            status: serde_json::to_value(&status).ok(),
        }
    }

    /// Sends `ask` to the peer from a task of its own, replying to the control client with
    /// the answer (or why there is none).
    fn ask_peer(&self, ask: Ask, reply: tokio::sync::oneshot::Sender<Reply>) {
        let asker = self.links.asker();
        tokio::spawn(async move {
            let answer = match asker.ask(&ask, ASK_TRIES, ASK_WAIT).await {
                Ok(answer) => {
                    Reply { ok: true, message: "answered".into(), status: serde_json::to_value(&answer).ok() }
                }
                Err(e) => Reply { ok: false, message: e, status: None },
            };
            let _ = reply.send(answer);
        });
    }

    /// The peer's drill asks: this config's fingerprint, a SIP probe from here, a switchover.
    fn on_ask(&mut self, incoming: IncomingAsk) {
        let answer = match incoming.ask.clone() {
            Ask::Fingerprint => Answer::Fingerprint { node: self.local.clone(), fingerprint: self.fingerprint.clone() },
            Ask::ProbeStart { target, every_ms } => {
                let every = Duration::from_millis(every_ms);
                self.drill_probe = Some(crate::drill::probe::Prober::start(target, every));
                Answer::Done { ok: true, message: format!("{} probes {target}", self.local) }
            }
            Ask::ProbeReport { stop } => {
                let probe = if stop { self.drill_probe.take() } else { None };
                match probe.as_ref().or(self.drill_probe.as_ref()) {
                    Some(p) => Answer::Probe { report: p.report() },
                    None => Answer::Done { ok: false, message: format!("no drill probe runs on {}", self.local) },
                }
            }
            Ask::Switchover { now } => {
                let reply = self.answer(Request::Switchover { now });
                Answer::Done { ok: reply.ok, message: reply.message }
            }
            // Off the loop: the replicated filesystem may be slow or hung.
            Ask::ReplicaCanary { token, write } => {
                let config = self.config.clone();
                tokio::task::spawn_blocking(move || {
                    let (ok, message) = match crate::drill::canary::apply(&config, &token, write) {
                        Ok(m) => (true, m),
                        Err(m) => (false, m),
                    };
                    incoming.reply.answer(Answer::Done { ok, message });
                });
                return;
            }
        };
        incoming.reply.answer(answer);
    }

    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            cluster: self.config.cluster.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            node: self.fsm.status(Instant::now()),
            resources: self.group.status(),
            heartbeat: self.links.stats(),
            ping: self.ping.status(),
            nonlocal_bind: nonlocal::ip_nonlocal_bind().ok(),
            journal: self.journal.is_enabled(),
            last_failover: self.failover.last(),
            drain: self.drain.snapshot(),
            calls: self.calls_reported(),
            mail: self
                .mailer
                .as_ref()
                .and_then(|m| m.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()),
            checks: self.checks.values().cloned().collect(),
            probes: self.probes.status(),
            mysql: self.mysql.as_ref().map(crate::mysql_watch::MysqlWatch::status),
        }
    }

    fn snapshot(&self) -> crate::status::Snapshot {
        crate::status::Snapshot {
            status: self.status(),
            failovers: self.failover.counts(),
            drbd: self.drbd.status(),
            taken: Instant::now(),
        }
    }

    /// A check changed state: remember it for status, and tell people.
    fn on_check(&mut self, t: Transition) {
        let replication = self
            .config
            .checks
            .iter()
            .any(|c| c.name == t.check && matches!(c.kind, CheckKind::MysqlReplication { .. }));
        if let Some(alert) = check_alert(&t, replication) {
            self.notifier.alert(&alert, t.at_ms);
        }
        // Only checks marked `failover = true` are faults of this node; the rest only alert.
        let failover = self.config.checks.iter().any(|c| c.name == t.check && c.failover);
        if failover && t.to != Health::Unknown {
            self.apply(Event::Check { name: t.check.clone(), ok: t.to == Health::Up });
        }
        let status = CheckStatus {
            name: t.check.clone(),
            state: t.to.as_str().into(),
            since_ms: Some(t.at_ms),
            detail: t.detail,
        };
        self.checks.insert(t.check, status);
    }

    /// What the report needs besides the timeline, as it stands at the decision.
    fn failover_context(&self) -> FailoverContext {
        let peer = self.fsm.status(Instant::now()).peer;
        let planned = peer.alive && peer.last.is_some_and(|p| p.handover);
        let garp = self
            .config
            .resources
            .iter()
            .filter(|r| matches!(&r.kind, config::ResourceKind::Vip(v) if v.garp_count > 0))
            .map(|r| r.name.clone())
            .collect();
        FailoverContext {
            old_primary: (self.failover.peer_held() || planned).then(|| peer.name.clone()),
            planned,
            // The old primary's count as it handed over (its drain's final one), or the last
            // it reported before it died: the calls dropped.
            active_calls: peer.last.and_then(|p| p.calls),
            garp,
            ..FailoverContext::default()
        }
    }

    /// A takeover ended: its one report mail, with the members as they stand now.
    fn report_failover(&mut self, mut ended: Ended) {
        let ctx = &mut ended.context;
        let group = self.group.status();
        let members = |kind: &str| -> Vec<String> {
            let of_kind = group.iter().filter(|r| r.kind == kind);
            of_kind
                .map(|r| {
                    format!(
                        "{}: {:?}{}",
                        r.name,
                        r.state,
                        r.last_error.as_ref().map_or(String::new(), |e| format!(" ({e})"))
                    )
                })
                .collect()
        };
        let drbd = members("drbd");
        ctx.drbd = (!drbd.is_empty()).then(|| drbd.join("; "));
        // MySQL is a group member in `replica` mode, a replication check in master-master mode.
        let mut mysql = members("mysql");
        mysql.extend(
            self.config
                .checks
                .iter()
                .filter(|c| matches!(c.kind, CheckKind::MysqlReplication { .. }))
                .filter_map(|c| self.checks.get(&c.name))
                .map(|c| format!("{}: replication {} {}", c.name, c.state, c.detail)),
        );
        ctx.mysql = (!mysql.is_empty()).then(|| mysql.join("; "));
        let report = switchover_report(&self.config.cluster.name, &self.local, &ended);
        self.notifier.switchover(&report);
    }

    fn begin_shutdown(&mut self, why: &str) -> Option<Instant> {
        tracing::info!("{why}: handing over and stopping resources");
        self.apply(Event::Admin(Admin::Shutdown));
        Some(Instant::now())
    }

    /// SIGHUP: applies a valid new config by diff; keeps the running one if it is invalid.
    /// Returns whether the heartbeat timing changed (the caller resets its timers).
    fn reload(&mut self) -> bool {
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload: {e}; keeping the running config");
                let what = format!("config not reloaded: {e}; the running config is kept");
                self.journal.record(Entry::now(&self.local, Kind::Record(RecordKind::Admin), what));
                return false;
            }
        };
        let old = &self.config;
        let mut restart_needed = Vec::new();
        if new.cluster.id != old.cluster.id || new.cluster.auth_key_file != old.cluster.auth_key_file {
            restart_needed.push("cluster id / auth key file");
        }
        if new.nodes != old.nodes {
            restart_needed.push("nodes");
        }
        if new.links != old.links {
            restart_needed.push("links");
        }
        if new.paths.state_db != old.paths.state_db || new.paths.control_socket != old.paths.control_socket {
            restart_needed.push("paths");
        }
        if new.checks != old.checks || new.watchdog != old.watchdog {
            restart_needed.push("checks / watchdog");
        }
        if new.probes != old.probes {
            restart_needed.push("probes");
        }
        if new.mysql != old.mysql {
            restart_needed.push("mysql");
        }
        // Each drbd resource's status reader and events2 follower start with the daemon.
        let drbd = |c: &Config| {
            c.resources.iter().filter(|r| matches!(r.kind, config::ResourceKind::Drbd(_))).cloned().collect::<Vec<_>>()
        };
        if drbd(&new) != drbd(old) {
            restart_needed.push("drbd resources");
        }
        if new.http != old.http {
            restart_needed.push("http");
        }
        if !restart_needed.is_empty() {
            let why =
                format!("{} changed; that needs a restart, so the running config is kept", restart_needed.join(", "));
            tracing::warn!("reload: {why}");
            self.journal.record(Entry::now(
                &self.local,
                Kind::Record(RecordKind::Admin),
                format!("config not reloaded: {why}"),
            ));
            return false;
        }
        let mut applied = Vec::new();
        let timing_changed = new.heartbeat != old.heartbeat;
        if timing_changed || new.cluster != old.cluster || new.group != old.group {
            self.fsm.update_params(params(&new, &self.local));
            applied.push("heartbeat/failback policy");
        }
        if new.ping != old.ping {
            self.ping_stop.send_replace(true);
            self.ping = PingMonitor::new(new.ping.clone());
            self.ping_stop = spawn_ping(&self.ping, self.events.clone(), &self.stop);
            applied.push("ping targets");
        }
        // Mail subjects and bodies carry the cluster name, so a new name restarts delivery too.
        let mail_changed = new.mail != old.mail || new.cluster.name != old.cluster.name;
        if mail_changed {
            let (handle, after) = match self.mailer.take() {
                Some(m) => {
                    let _ = m.stop.send(true);
                    (Some(m.handle), Some(m.task))
                }
                None => (None, None),
            };
            self.mailer = spawn_mail(&new, &self.local, handle, after, &self.stop);
            applied.push("mail");
        }
        if mail_changed || new.paths.hooks != old.paths.hooks {
            // In place: the probe and MySQL watchers hold clones of this notifier.
            self.notifier.reconfigure(
                &new.cluster.name,
                new.paths.hooks.clone(),
                self.mailer.as_ref().map(|m| m.handle.clone()),
            );
            applied.push("hooks / cluster name");
        }
        let resources_changed = new.resources != old.resources || new.group != old.group;
        self.config = new.clone();
        self.fingerprint = fingerprint(&self.config_path, &self.local);
        if resources_changed {
            self.pending_resources = Some(new);
            if self.fsm.status(Instant::now()).group == GroupPhase::Stopped {
                self.apply_pending_resources();
                applied.push("resources");
            } else {
                applied.push("resources (at the next start: the group is running)");
            }
        }
        let what = if applied.is_empty() { "nothing changed".to_string() } else { applied.join(", ") };
        tracing::info!("reload: applied {what}");
        self.journal.record(Entry::now(
            &self.local,
            Kind::Record(RecordKind::Admin),
            format!("config reloaded: {what}"),
        ));
        timing_changed
    }

    fn apply_pending_resources(&mut self) {
        let Some(config) = self.pending_resources.take() else { return };
        let wiring = GroupWiring {
            runner: &self.runner,
            journal: &self.journal,
            timeline: self.failover.timeline(),
            events: &self.events,
            probes: &self.probes,
            drbd_view: self.fencing.view(),
        };
        match new_group(&config, &self.local, wiring) {
            Ok((group, pbx)) => {
                self.group = group;
                self.pbx = pbx;
                self.calls = CallCounter::spawn(&self.pbx);
            }
            Err(e) => tracing::error!("reload: {e}; keeping the running resource group"),
        }
    }
}

/// systemd `Type=notify`: a datagram to `$NOTIFY_SOCKET`, if set.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return tracing::warn!("sd_notify: {e}"),
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

/// The `WATCHDOG=1` period: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
fn sd_watchdog() -> (Option<Duration>, tokio::time::Interval) {
    let every = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|us| *us > 0)
        .map(|us| Duration::from_micros(us / 2));
    (every, tokio::time::interval(every.unwrap_or(Duration::from_secs(3600))))
}
