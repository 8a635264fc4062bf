//! The setup wizard behind `pbxha install`: two bare servers with a PBX become a pair, one
//! command per node.
//!
//! Parts: [`answers`] (the answers file: model, reader reporting every problem with its key
//! path, saved text), [`questions`] (at most twelve, with detected defaults), [`facts`]
//! (what the machine is like, gathered at the edge through the runner seam and files below
//! `--root`), [`preflight`] (pure PASS/WARN/FAIL checks), [`render`] (pbxha.toml, the PBX
//! bind, diffs), [`plan`] (numbered steps, the config last as the commit point),
//! [`journal`] (SQLite: the confirmed plan, step states and originals) and [`apply`]
//! (resume and undo). [`import`] turns a heartbeat v1 cluster into defaults.
//!
//! Layout: the `pbxha` binary lives in the appliance crate, and this crate must not depend
//! on it (that would be a cycle). What the installer needs from the appliance, the
//! config checker and the key generator, comes in through the small [`Appliance`] trait,
//! which `appliance/src/cli/install.rs` implements with check-config's and keygen's code.
//! Joining the second node (the next issue) plugs in as more steps over the same journal.

pub mod answers;
pub mod apply;
pub mod error;
pub mod facts;
pub mod import;
pub mod join;
pub mod journal;
pub mod plan;
pub mod preflight;
pub mod questions;
pub mod render;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pbxha_runner::Runner;

pub use error::{Error, Result};

/// What the installer borrows from the appliance crate.
pub trait Appliance: Send + Sync {
    /// The problems `pbxha check-config` reports for this config text, as node `node`;
    /// empty when it passes.
    fn check_config(&self, text: &str, node: &str) -> Vec<String>;
    /// The contents of a new heartbeat key file, as `pbxha keygen` writes it.
    fn new_auth_key(&self) -> String;
}

/// Where the installer works: the root every /etc, /var, /run, /replica and /usr/local path
/// is taken below, and the runner every command goes through.
#[derive(Clone)]
pub struct Env {
    pub root: PathBuf,
    pub runner: Arc<dyn Runner>,
}

impl Env {
    /// An absolute path below the root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// `systemctl`, told about the root when there is one (it then edits that tree offline).
    pub fn systemctl(&self) -> Vec<String> {
        let mut argv = vec!["systemctl".to_string()];
        if self.root != Path::new("/") {
            argv.extend(["--root".to_string(), self.root.display().to_string()]);
        }
        argv
    }
}

/// The operator's side of an install: lines out, answers in. `ask` returns `None` when no
/// one can answer (no terminal).
pub trait Terminal {
    fn say(&mut self, text: &str);
    fn ask(&mut self, prompt: &str) -> Option<String>;
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub answers: Option<PathBuf>,
    pub yes: bool,
    pub dry_run: bool,
}

/// How an install ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The dry run's preflight passed and its plan was shown.
    Planned,
    /// The operator said no at the confirmation.
    Declined,
    /// Every step is done; `start_daemon` when pbxha must start `pbxha run` itself.
    Installed { config: PathBuf, start_daemon: bool },
}

/// Reads and checks an answers file.
pub fn read_answers(path: &Path) -> Result<(String, answers::Partial)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let partial = answers::parse(&text).map_err(|problems| Error::Answers { path: path.to_path_buf(), problems })?;
    Ok((text, partial))
}

/// Asks every question `p` leaves open, re-asking a wrong answer with its reason. What
/// `offered` holds (an imported heartbeat cluster) is the default before any detected one.
fn ask_missing(
    p: &mut answers::Partial,
    offered: &answers::Partial,
    f: &facts::Facts,
    term: &mut dyn Terminal,
) -> Result<()> {
    for q in questions::QUESTIONS {
        if !p.missing().contains(&q.key) {
            continue;
        }
        let default = questions::shown(q.key, offered).or_else(|| questions::default(q.key, p, f));
        let hint = questions::hint(q.key, p, f).map_or(String::new(), |h| format!(" ({h})"));
        // Bounded: an operator who gets one question wrong ten times is better served by
        // an answers file than by an eleventh prompt.
        for attempt in 0.. {
            let prompt = match &default {
                Some(d) => format!("{}{hint} [{d}]: ", q.prompt),
                None => format!("{}{hint}: ", q.prompt),
            };
            let line = term
                .ask(&prompt)
                .ok_or_else(|| Error::Missing { keys: p.missing().iter().map(|k| k.to_string()).collect() })?;
            let line = match (line.trim(), &default) {
                ("", Some(d)) => d.clone(),
                (l, _) => l.to_string(),
            };
            match questions::answer(q.key, &line, p, f) {
                Ok(()) => break,
                Err(why) if attempt < 9 => term.say(&format!("  {why}; try again")),
                Err(why) => return Err(Error::Refused(format!("{}: {why}", q.key))),
            }
        }
    }
    Ok(())
}

/// A heartbeat v1 cluster on this machine (/etc/ha.d): its answers become the wizard's
/// defaults, and what is not a question (udpport, auto_failback) is taken as it is.
fn heartbeat_defaults(
    env: &Env,
    f: &facts::Facts,
    p: &mut answers::Partial,
    term: &mut dyn Terminal,
) -> answers::Partial {
    let dir = env.path("/etc/ha.d");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let Some(ha_cf) = read("ha.cf") else {
        return answers::Partial::default();
    };
    let im = import::import(&ha_cf, read("haresources").as_deref(), read("authkeys").as_deref(), &f.uname);
    term.say(&format!("heartbeat cluster found in {}: its settings are offered as defaults", dir.display()));
    for note in &im.notes {
        term.say(&format!("  note: {note}"));
    }
    p.port = p.port.or(im.answers.port);
    p.auto_failback = p.auto_failback.or(im.answers.auto_failback);
    im.answers
}

/// The answers as the plan needs them: complete, with this node's addresses filled in.
fn complete(p: &answers::Partial, f: &facts::Facts) -> Result<answers::Answers> {
    let mut a = p.complete().map_err(|keys| Error::Missing { keys: keys.iter().map(|k| k.to_string()).collect() })?;
    plan::resolve(&mut a, f).map_err(|problems| Error::Refused(problems.join("; ")))?;
    Ok(a)
}

fn confirm(plan: &plan::Plan, opts: &Options, term: &mut dyn Terminal) -> bool {
    if opts.yes {
        return true;
    }
    for s in &plan.steps {
        if let Some(dev) = &s.wipes {
            let typed = term.ask(&format!("Step `{}` DESTROYS everything on {dev}. Type {dev} to agree: ", s.id));
            if typed.as_deref().map(str::trim) != Some(dev.as_str()) {
                term.say(&format!("{dev} was not typed: nothing was changed"));
                return false;
            }
        }
    }
    let answer = term.ask(&format!("Apply these {} steps? [y/N]: ", plan.steps.len()));
    matches!(answer.as_deref().map(str::trim), Some("y" | "Y" | "yes"))
}

/// The problems of the planned config that are not expected at plan time: the key file the
/// first step creates (and on a joining node the secret files it received) do not exist
/// yet. The commit step checks again, with no exception.
fn plan_time_problems(app: &dyn Appliance, plan: &plan::Plan) -> Vec<String> {
    let written: Vec<String> = plan
        .steps
        .iter()
        .flat_map(|s| &s.actions)
        .filter_map(|a| match a {
            plan::Action::Write { path, mode: 0o600, .. } => Some(path.display().to_string()),
            _ => None,
        })
        .collect();
    plan.steps
        .iter()
        .flat_map(|s| &s.actions)
        .filter_map(|a| match a {
            plan::Action::Commit { contents, node, .. } => Some(app.check_config(contents, node)),
            _ => None,
        })
        .flatten()
        .filter(|p| !p.starts_with("cluster.auth-key-file") && !written.iter().any(|w| p.contains(w.as_str())))
        .collect()
}

/// The preflight table, stopping at a FAIL; then the plan `make` builds from the files as
/// they are, shown, and checked with check-config's code.
fn checked_plan(
    env: &Env,
    app: &dyn Appliance,
    rows: &[preflight::Row],
    term: &mut dyn Terminal,
    make: impl FnOnce(plan::Read, plan::Size) -> Result<plan::Plan>,
) -> Result<plan::Plan> {
    term.say(&preflight::table(rows));
    let failed = preflight::failures(rows);
    if failed > 0 {
        return Err(Error::Preflight { failed });
    }
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let size = |p: &Path| pbxha_replica::migrate::copy::tree_usage(p).ok().map(|u| u.0);
    let plan = make(&read, &size)?;
    term.say(&plan::show(&plan));
    let problems = plan_time_problems(app, &plan);
    match problems.is_empty() {
        true => Ok(plan),
        false => Err(Error::Config { path: env.path(render::CONFIG_PATH), problems }),
    }
}

/// `pbxha install` (with or without `--answers`, `--yes`, `--dry-run`): preflight, plan,
/// confirmation, journaled apply; or the resume of a journaled install.
pub async fn install(env: &Env, app: &dyn Appliance, opts: &Options, term: &mut dyn Terminal) -> Result<Outcome> {
    let given = opts.answers.as_deref().map(read_answers).transpose()?;
    let journal_path = env.path(journal::JOURNAL_PATH);
    if let Some((_, p)) = &given {
        let missing = p.missing();
        if !missing.is_empty() && (opts.yes || opts.dry_run) && !journal_path.exists() {
            return Err(Error::Missing { keys: missing.iter().map(|k| k.to_string()).collect() });
        }
    }
    let _lock = match opts.dry_run {
        true => None,
        false => Some(journal::Lock::take(&env.path(journal::LOCK_PATH))?),
    };
    if let Some(j) = journal::Journal::open(&journal_path, false)? {
        if let Some((answers_text, steps)) = j.plan()? {
            return resume(env, app, opts, term, &j, &answers_text, &steps, given.as_ref().map(|g| g.0.as_str())).await;
        }
    }
    let (text, mut partial) = given.unwrap_or_default();
    let missing = partial.missing();
    let mut facts = facts::gather(env, &partial).await;
    if !missing.is_empty() {
        let offered = heartbeat_defaults(env, &facts, &mut partial, term);
        ask_missing(&mut partial, &offered, &facts, term)?;
        facts = facts::gather(env, &partial).await;
    }
    let a = complete(&partial, &facts)?;
    let rows = preflight::check(&a, &facts);
    let plan = checked_plan(env, app, &rows, term, |read, size| plan::plan(&a, &facts, env, read, size))?;
    if opts.dry_run {
        return Ok(Outcome::Planned);
    }
    if !confirm(&plan, opts, term) {
        return Ok(Outcome::Declined);
    }
    let made_dirs = apply::missing_ancestors(&journal_path);
    let mut j =
        journal::Journal::open(&journal_path, true)?.ok_or_else(|| Error::file(&journal_path, "cannot create"))?;
    let answers_text = if text.is_empty() { a.to_toml() } else { text };
    j.begin(&answers_text, &plan.steps, &made_dirs)?;
    run_steps(env, app, term, &j, &plan.steps, plan.start_daemon).await
}

/// Writes a fresh join offer on the first node (replacing an older one) and returns the line
/// to run on the second; `None` on a node that itself joined a first node.
pub async fn offer(env: &Env, expiry: std::time::Duration) -> Result<Option<String>> {
    let path = env.path(render::ANSWERS_PATH);
    if !path.exists() {
        return Err(Error::Refused(format!(
            "{} does not exist: install this node first (`pbxha install`), then make a token",
            path.display()
        )));
    }
    let (text, p) = read_answers(&path)?;
    let a = p.complete().map_err(|keys| Error::Missing { keys: keys.iter().map(|k| k.to_string()).collect() })?;
    if a.first_node.is_some() {
        return Ok(None);
    }
    let read =
        |path: PathBuf| std::fs::read_to_string(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}")));
    let auth_key = read(env.path(render::AUTH_KEY_PATH))?;
    let secrets = a
        .secret_files()
        .into_iter()
        .map(|(_, path)| Ok((path.clone(), read(env.path(&path.display().to_string()))?)))
        .collect::<Result<Vec<_>>>()?;
    let ip = a.heartbeat.first().and_then(|l| l.address).or(a.public.address).map(|c| c.addr).ok_or_else(|| {
        Error::Refused(format!("{}: no heartbeat or public address of this node to offer the join on", path.display()))
    })?;
    let listen = std::net::SocketAddr::new(ip, a.port);
    let peer = facts::versions(env, &p).await;
    let payload = join::Payload { answers: text, auth_key, secrets, peer };
    let token = join::make_offer(&env.path(join::OFFER_PATH), &a.cluster, listen, expiry, payload)?;
    let at = if a.port == answers::DEFAULT_PORT { ip.to_string() } else { listen.to_string() };
    Ok(Some(format!("pbxha install --join {at} --token {token}")))
}

/// `pbxha install --join ADDR --token T`: the second node. Fetches the first node's answers,
/// key and secrets over the join exchange, then preflight, plan, confirmation and the
/// journaled apply of this side, as `install` does for the first node. Until the journal
/// begins, nothing below the root is left changed: a refused join removes even the lock
/// file it took.
pub async fn join(
    env: &Env,
    app: &dyn Appliance,
    opts: &Options,
    at: &str,
    token: &str,
    term: &mut dyn Terminal,
) -> Result<Outcome> {
    let at = join::join_address(at, answers::DEFAULT_PORT)?;
    join::normalize(token)?;
    let lock_path = env.path(journal::LOCK_PATH);
    let made_for_lock = apply::missing_ancestors(&lock_path);
    let lock_was_there = lock_path.exists();
    let lock = match opts.dry_run {
        true => None,
        false => Some(journal::Lock::take(&lock_path)?),
    };
    let journal_path = env.path(journal::JOURNAL_PATH);
    if let Some(j) = journal::Journal::open(&journal_path, false)? {
        if let Some((answers_text, steps)) = j.plan()? {
            return resume(env, app, opts, term, &j, &answers_text, &steps, None).await;
        }
    }
    let prepared = prepare_join(env, app, opts, at, token, term).await;
    let (a, plan) = match prepared {
        Ok(Some(ready)) => ready,
        done => {
            drop(lock);
            if !lock_was_there {
                let _ = std::fs::remove_file(&lock_path);
                for d in made_for_lock.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
            }
            return done.map(|_| if opts.dry_run { Outcome::Planned } else { Outcome::Declined });
        }
    };
    let made_dirs = apply::missing_ancestors(&journal_path);
    let mut j =
        journal::Journal::open(&journal_path, true)?.ok_or_else(|| Error::file(&journal_path, "cannot create"))?;
    j.begin(&a.to_toml(), &plan.steps, &made_dirs)?;
    run_steps(env, app, term, &j, &plan.steps, plan.start_daemon).await
}

/// The join up to the confirmation: `None` when it ends there (a dry run, or a no).
async fn prepare_join(
    env: &Env,
    app: &dyn Appliance,
    opts: &Options,
    at: std::net::SocketAddr,
    token: &str,
    term: &mut dyn Terminal,
) -> Result<Option<(answers::Answers, plan::Plan)>> {
    let (cluster, got) = join::fetch(at, token).await?;
    let first = answers::parse(&got.answers)
        .map_err(|p| Error::Join(format!("the first node's answers are unreadable here: {}", p.len())))?
        .complete()
        .map_err(|keys| Error::Join(format!("the first node's answers lack {}", keys.join(", "))))?;
    if first.cluster != cluster {
        return Err(Error::Join(format!(
            "the first node says cluster `{cluster}` but its answers say `{}`",
            first.cluster
        )));
    }
    let mine = first.for_joining_node().map_err(Error::Join)?;
    term.say(&format!("joining cluster `{cluster}` as node `{}`: the first node `{}` at {at} sent its answers, the key and {} secret file(s)", mine.node, mine.peer, got.secrets.len()));
    let partial = answers::parse(&mine.to_toml())
        .map_err(|p| Error::Join(format!("{} problem(s) in the swapped answers", p.len())))?;
    let mut facts = facts::gather(env, &partial).await;
    facts.secrets.retain(|(_, path, _)| !got.secrets.iter().any(|(p, _)| p == path));
    let a = complete(&partial, &facts)?;
    let mut rows = preflight::check(&a, &facts);
    rows.extend(preflight::peer_rows(&a, &facts, &got.peer));
    let plan = checked_plan(env, app, &rows, term, |read, size| plan::join_plan(&a, &facts, env, read, size, &got))?;
    if opts.dry_run || !confirm(&plan, opts, term) {
        return Ok(None);
    }
    Ok(Some((a, plan)))
}

#[allow(clippy::too_many_arguments)]
async fn resume(
    env: &Env,
    app: &dyn Appliance,
    opts: &Options,
    term: &mut dyn Terminal,
    j: &journal::Journal,
    answers_text: &str,
    steps: &[plan::Step],
    given: Option<&str>,
) -> Result<Outcome> {
    let states = j.states()?;
    let done = states.iter().filter(|(_, s, _)| *s == journal::State::Done).count();
    if states
        .iter()
        .any(|(_, s, _)| matches!(s, journal::State::Undoing | journal::State::Undone | journal::State::UndoFailed))
    {
        return Err(Error::Refused(format!(
            "an undo of this install is half done ({}): finish it with `pbxha install --undo`",
            j.path().display()
        )));
    }
    if given.is_some_and(|g| g != answers_text) {
        return Err(Error::Refused(format!(
            "an install with other answers is journaled in {} ({done} of {} steps done): rerun it with the same answers to finish, or `pbxha install --undo`",
            j.path().display(),
            steps.len()
        )));
    }
    if opts.dry_run {
        term.say(&format!(
            "an install is journaled in {}: {done} of {} steps done; a rerun resumes it",
            j.path().display(),
            steps.len()
        ));
        return Ok(Outcome::Planned);
    }
    if done == steps.len() {
        term.say("already installed: every step of the journaled plan is done");
        // The daemon was started (or enabled) when the last step was done; a second one
        // would fight the first for the control socket.
        return Ok(Outcome::Installed { config: env.path(render::CONFIG_PATH), start_daemon: false });
    }
    term.say(&format!(
        "resuming the journaled install at step {} of {} (preflight ran before step 1)",
        done + 1,
        steps.len()
    ));
    let start = !facts::systemd_is_pid1();
    run_steps(env, app, term, j, steps, start).await
}

async fn run_steps(
    env: &Env,
    app: &dyn Appliance,
    term: &mut dyn Terminal,
    j: &journal::Journal,
    steps: &[plan::Step],
    start_daemon: bool,
) -> Result<Outcome> {
    let mut progress = |line: &str| term.say(line);
    apply::apply(env, app, j, steps, &mut progress).await?;
    Ok(Outcome::Installed { config: env.path(render::CONFIG_PATH), start_daemon })
}

/// `pbxha install --undo`: reverses every applied step, last first, and says what it
/// could not undo. Resumable; the journal is removed once everything is undone.
pub async fn undo(env: &Env, term: &mut dyn Terminal) -> Result<Vec<String>> {
    let _lock = journal::Lock::take(&env.path(journal::LOCK_PATH))?;
    let path = env.path(journal::JOURNAL_PATH);
    let j = journal::Journal::open(&path, false)?
        .ok_or_else(|| Error::Refused(format!("nothing to undo: no install journal at {}", path.display())))?;
    let (_, steps) =
        j.plan()?.ok_or_else(|| Error::Refused(format!("nothing to undo: {} holds no plan", path.display())))?;
    let mut progress = |line: &str| term.say(line);
    let left = apply::undo(env, &j, &steps, &mut progress).await?;
    if !left.iter().any(|l| l.contains("undo failed")) {
        // A node no longer installed offers no join.
        let offer = env.path(join::OFFER_PATH);
        for file in [offer.clone(), offer.with_file_name(join::LOCK_NAME)] {
            let _ = std::fs::remove_file(file);
        }
        j.remove()?;
    }
    Ok(left)
}

/// `pbxha install --import-heartbeat DIR --dry-run`: the pbxha.toml a heartbeat v1 cluster
/// becomes, with check-config's verdict on what is still to fill in.
pub async fn import_heartbeat(
    env: &Env,
    app: &dyn Appliance,
    dir: &Path,
) -> Result<(String, Vec<String>, Vec<String>)> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let ha_cf = read("ha.cf").map_err(|e| Error::file(dir.join("ha.cf"), format!("cannot read: {e}")))?;
    let uname = nix::sys::utsname::uname().map(|u| u.nodename().to_string_lossy().into_owned()).unwrap_or_default();
    let im = import::import(&ha_cf, read("haresources").ok().as_deref(), read("authkeys").ok().as_deref(), &uname);
    let facts = facts::gather(env, &im.answers).await;
    let mut p = im.answers.clone();
    for q in questions::QUESTIONS {
        if p.missing().contains(&q.key) {
            if let Some(d) = questions::default(q.key, &p, &facts) {
                let _ = questions::answer(q.key, &d, &mut p, &facts);
            }
        }
    }
    let still = p.missing().iter().map(|k| k.to_string()).collect::<Vec<_>>();
    fill_unknown(&mut p);
    let mut a = p.complete().map_err(|keys| Error::Missing { keys: keys.iter().map(|k| k.to_string()).collect() })?;
    // Addresses this machine cannot supply stay empty: check-config names them below.
    let _ = plan::resolve(&mut a, &facts);
    let group = if im.group.is_empty() { render::group(&a) } else { im.group.clone() };
    let text = render::config(&a, &group, &env.root);
    let mut notes = im.notes.clone();
    notes.extend(still.iter().map(|k| format!("not in the heartbeat files and not detectable here: {k}")));
    Ok((text.clone(), app.check_config(&text, &a.node), notes))
}

/// Placeholders for the import's dry run, so a config can be shown with what heartbeat
/// never said; check-config then names each one.
fn fill_unknown(p: &mut answers::Partial) {
    p.node.get_or_insert_with(|| "this-node".into());
    p.peer.get_or_insert_with(|| "peer-node".into());
    p.public_interface.get_or_insert_with(|| "eth0".into());
    p.peer_address.get_or_insert(import::UNKNOWN);
    p.vip.get_or_insert(answers::Cidr { addr: import::UNKNOWN, prefix: 24 });
    p.heartbeat.get_or_insert_with(Vec::new);
    p.ping.get_or_insert_with(Vec::new);
    p.pbx.get_or_insert(answers::Pbx::Asterisk);
    p.storage.get_or_insert(answers::Storage::None);
    p.mysql.get_or_insert(answers::Mysql::None);
    p.mail.get_or_insert(None);
    p.timing.get_or_insert(answers::Timing::Default);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers prompts from a script, recording what it was asked and told.
    struct Script {
        lines: Vec<&'static str>,
        seen: Vec<String>,
    }

    impl Terminal for Script {
        fn say(&mut self, text: &str) {
            self.seen.push(text.to_string());
        }
        fn ask(&mut self, prompt: &str) -> Option<String> {
            self.seen.push(prompt.to_string());
            (!self.lines.is_empty()).then(|| self.lines.remove(0).to_string())
        }
    }

    #[test]
    fn a_heartbeat_cluster_on_the_machine_is_offered_as_the_wizards_defaults() {
        let root = tempfile::tempdir().unwrap();
        let ha = root.path().join("etc/ha.d");
        std::fs::create_dir_all(&ha).unwrap();
        for name in ["ha.cf", "haresources", "authkeys"] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-ha.d").join(name),
                ha.join(name),
            )
            .unwrap();
        }
        let env = Env { root: root.path().to_path_buf(), runner: Arc::new(pbxha_runner::ScriptedRunner::new()) };
        let f = facts::Facts {
            uname: "kava1".into(),
            interfaces: vec![
                facts::Interface {
                    name: "eth0".into(),
                    up: true,
                    addresses: vec!["192.168.5.201/24".parse().unwrap()],
                },
                facts::Interface { name: "eth1".into(), up: true, addresses: vec!["10.1.1.1/24".parse().unwrap()] },
            ],
            ..facts::Facts::default()
        };
        let mut p = answers::Partial::default();
        let mut term = Script { lines: vec![""; 12], seen: Vec::new() };
        // Enter everywhere but what heartbeat never said: the peer's public address, the
        // heartbeat link's peer (a bcast line names none) and the PBX (none installed here).
        term.lines[5] = "eth1 10.1.1.2";
        term.lines[4] = "192.168.5.202";
        term.lines[7] = "asterisk";
        let offered = heartbeat_defaults(&env, &f, &mut p, &mut term);
        ask_missing(&mut p, &offered, &f, &mut term).unwrap();
        let asked = term.seen.join("\n");
        for default in ["[kava1]", "[kava2]", "[eth0]", "[192.168.5.203/24]", "[2000/30000/10000/120000]"] {
            assert!(asked.contains(default), "{default} not offered:\n{asked}");
        }
        assert!(asked.contains("note: authkeys (sha1) is not reused"), "{asked}");
        let a = p.complete().unwrap();
        assert_eq!((a.node.as_str(), a.peer.as_str(), a.auto_failback, a.port), ("kava1", "kava2", true, 694));
        assert_eq!(
            a.timing,
            answers::Timing::Custom { interval: 2000, deadtime: 30_000, warntime: 10_000, initdead: 120_000 }
        );
    }
}

#[cfg(test)]
mod confirm_tests {
    use super::*;

    struct Typed(Vec<&'static str>);

    impl Terminal for Typed {
        fn say(&mut self, _: &str) {}
        fn ask(&mut self, _: &str) -> Option<String> {
            (!self.0.is_empty()).then(|| self.0.remove(0).to_string())
        }
    }

    #[test]
    fn a_wipe_goes_ahead_only_when_the_device_name_is_typed() {
        let wipe = plan::Step {
            id: "wipe".into(),
            title: "WIPE /dev/sdb1".into(),
            shows: String::new(),
            actions: Vec::new(),
            wipes: Some("/dev/sdb1".into()),
        };
        let plan = plan::Plan { steps: vec![wipe], start_daemon: false };
        let opts = Options::default();
        assert!(!confirm(&plan, &opts, &mut Typed(vec!["y"])), "`y` is not the device name");
        assert!(!confirm(&plan, &opts, &mut Typed(vec!["/dev/sdc1", "y"])));
        assert!(!confirm(&plan, &opts, &mut Typed(vec!["/dev/sdb1", "n"])));
        assert!(confirm(&plan, &opts, &mut Typed(vec!["/dev/sdb1", "y"])));
        assert!(!confirm(&plan, &opts, &mut Typed(vec![])), "nobody to ask: no");
    }
}
