//! Carrying out a journaled plan, and undoing it. Every action is safe to repeat, so a
//! step interrupted anywhere is simply run again on resume; originals are journaled before
//! the first change and never overwritten afterwards.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pbxha_runner::Cmd;

use crate::error::{Error, Result};
use crate::journal::{Journal, Original, State};
use crate::plan::{Action, Step};
use crate::{Appliance, Env};

/// DRBD state changes and mkfs of a large device take a while.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs every step not done yet, in order. `progress` gets one line per step.
pub async fn apply(
    env: &Env,
    app: &dyn Appliance,
    journal: &Journal,
    steps: &[Step],
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    for (i, step) in steps.iter().enumerate() {
        let state = journal.state(i)?;
        if state == State::Done {
            continue;
        }
        let resumed = if state == State::Started { " (resumed)" } else { "" };
        progress(&format!("{:>3}/{} {}{resumed}", i + 1, steps.len(), step.title));
        journal.set(i, State::Started, None)?;
        for action in &step.actions {
            perform(env, app, journal, i, action, progress).await.map_err(|e| Error::Step {
                number: i + 1,
                id: step.id.clone(),
                message: e.to_string(),
            })?;
        }
        journal.set(i, State::Done, None)?;
    }
    Ok(())
}

/// Every ancestor of `path` that does not exist yet, outermost first.
pub(crate) fn missing_ancestors(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path.ancestors().skip(1).take_while(|p| !p.exists()).map(Path::to_path_buf).collect();
    out.reverse();
    out
}

fn original_of(path: &Path) -> Result<Original> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
            Ok(Original::File(bytes, mode))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Original::Absent),
        Err(e) => Err(Error::file(path, format!("cannot read: {e}"))),
    }
}

/// Journals `path`'s original and the directories that must be made for it, then makes them.
fn prepare(journal: &Journal, idx: usize, path: &Path, file: bool) -> Result<()> {
    for dir in missing_ancestors(path) {
        journal.remember(idx, &dir, &Original::CreatedDir)?;
    }
    if file {
        journal.remember(idx, path, &original_of(path)?)?;
    } else if !path.exists() {
        journal.remember(idx, path, &Original::CreatedDir)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    }
    Ok(())
}

/// Writes a file whole or not at all: a temporary file, fsync, rename, fsync of the dir.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{}.pbxha-tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let err = |e: std::io::Error| Error::file(path, format!("cannot write: {e}"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)?;
    // The umask may have narrowed the mode given to open.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

async fn run(env: &Env, argv: &[String]) -> Result<()> {
    run_shown(env, argv, &mut |_| {}).await
}

/// How often a command that takes a while says it is still at it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Runs a command, telling `progress` every second that it is still running, so a long
/// mkfs or DRBD state change never looks like a hang.
async fn run_shown(env: &Env, argv: &[String], progress: &mut dyn FnMut(&str)) -> Result<()> {
    let cmd = Cmd::new(argv.iter().cloned()).timeout(COMMAND_TIMEOUT);
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    let done = env.runner.run_ok(&cmd);
    tokio::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => {
                out?;
                return Ok(());
            }
            _ = ticks.tick() => progress(&format!("      still running `{cmd}` ({} s)", started.elapsed().as_secs())),
        }
    }
}

/// How often the initial sync is read.
const SYNC_POLL: Duration = Duration::from_secs(1);
/// A sync that moves no further for this long has stalled: the step fails saying what to
/// look at, and a rerun resumes the wait (DRBD syncs on meanwhile).
const SYNC_STALL: Duration = Duration::from_secs(600);
/// The longest the wait may last at all: a full day, beyond any disk a PBX replicates.
const SYNC_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Waits until this node's disk is UpToDate, telling `progress` each new percent of the
/// initial sync, and each change of state before it starts; fails when nothing moves for
/// `stall`.
async fn follow_sync(
    drbd: &pbxha_replica::drbd::control::Drbd,
    poll: Duration,
    stall: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    use pbxha_replica::drbd::status::{disk_name, DiskState};
    let started = tokio::time::Instant::now();
    let mut moved = started;
    let mut said = String::new();
    let r = drbd.resource();
    loop {
        let status = drbd.status().await?;
        if status.disk == DiskState::UpToDate {
            progress(&format!("      in sync: {r} is UpToDate on this node"));
            return Ok(());
        }
        let now = match status.peers.iter().find_map(|p| p.done) {
            Some(done) => format!("      initial sync of {r}: {done:.1} %"),
            None => format!(
                "      {r}: disk {}, {}",
                disk_name(&status.disk),
                status
                    .peers
                    .first()
                    .map_or("no peer configured".into(), |p| format!("{:?} to {}", p.connection, p.name))
            ),
        };
        if now != said {
            progress(&now);
            said = now;
            moved = tokio::time::Instant::now();
        }
        if moved.elapsed() >= stall || started.elapsed() >= SYNC_LIMIT {
            return Err(Error::Refused(format!(
                "DRBD's initial sync of {r} made no progress for {} s ({}); look at `drbdadm status {r}` on both nodes and the replication link (TCP 7788), then rerun `pbxha install` to resume",
                moved.elapsed().as_secs(),
                said.trim()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

async fn perform(
    env: &Env,
    app: &dyn Appliance,
    journal: &Journal,
    idx: usize,
    action: &Action,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    match action {
        Action::Write { path, contents, mode } => {
            prepare(journal, idx, path, true)?;
            write_atomic(path, contents.as_bytes(), *mode)
        }
        Action::NewKey { path } => {
            // Kept when present: either the operator's key, which the peer may share, or
            // the one an interrupted run of this step already wrote whole. Only its absence
            // is journaled: a key's bytes never go into the journal.
            if !path.exists() {
                prepare(journal, idx, path, true)?;
                write_atomic(path, app.new_auth_key().as_bytes(), 0o600)?;
            }
            Ok(())
        }
        Action::Mkdir { path } => {
            prepare(journal, idx, path, false)?;
            std::fs::create_dir_all(path).map_err(|e| Error::file(path, format!("cannot create: {e}")))
        }
        Action::Run { argv, .. } => run_shown(env, argv, progress).await,
        Action::Mount { device, mount_point, fstype } => {
            Ok(filesystem(env, device, mount_point, fstype).start().await?)
        }
        Action::Nft { chain, rules } => {
            remove_nft_rules(env, chain).await?;
            for rule in rules {
                let mut argv: Vec<String> = ["nft", "insert", "rule", &chain.family, &chain.table, &chain.chain]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                argv.extend(rule.split_whitespace().map(str::to_string));
                argv.extend(["comment".to_string(), crate::facts::NFT_COMMENT.to_string()]);
                run(env, &argv).await?;
            }
            Ok(())
        }
        Action::Migrate { dirs, replica_root, secondary } => {
            let opts = pbxha_replica::migrate::MigrateOptions {
                dirs: dirs.clone(),
                replica_root: replica_root.clone(),
                role: match secondary {
                    false => pbxha_replica::migrate::MigrateRole::Primary,
                    true => pbxha_replica::migrate::MigrateRole::Secondary,
                },
                progress: true,
            };
            let plan = pbxha_replica::migrate::migrate(&opts)?;
            for item in &plan.items {
                progress(&format!("      moved {} ({} bytes)", item.dir.display(), item.bytes));
            }
            Ok(())
        }
        Action::DrbdSync { resource, syntax, minor } => {
            let drbd = pbxha_replica::drbd::control::Drbd::new(env.runner.clone(), resource, *syntax, *minor);
            follow_sync(&drbd, SYNC_POLL, SYNC_STALL, progress).await
        }
        Action::MysqlSetup { config } => {
            let cfg = mysql_section(config)?;
            let mut said = Vec::new();
            let done = {
                let mut collect = |line: &str| said.push(line.to_string());
                pbxha_replica::mysql::setup::setup(&cfg, env.runner.as_ref(), &mut collect).await
            };
            for line in &said {
                progress(&format!("      {line}"));
            }
            for step in done? {
                progress(&format!("      {} {}", if step.changed { "done:" } else { "left as is:" }, step.what));
            }
            Ok(())
        }
        Action::Commit { path, contents, node } => {
            let problems = app.check_config(contents, node);
            if !problems.is_empty() {
                return Err(Error::Config { path: path.clone(), problems });
            }
            prepare(journal, idx, path, true)?;
            write_atomic(path, contents.as_bytes(), 0o644)
        }
    }
}

/// The `[mysql]` section of a config text.
fn mysql_section(config: &str) -> Result<pbxha_replica::mysql::MysqlConfig> {
    let bad = |why: String| Error::Refused(format!("the planned config's [mysql]: {why}"));
    let root: toml::Table = config.parse().map_err(|e: toml::de::Error| bad(e.to_string()))?;
    let section = root.get("mysql").and_then(toml::Value::as_table).ok_or_else(|| bad("missing".into()))?;
    pbxha_replica::mysql::parse_mysql(section)
        .map_err(|problems| bad(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
}

/// Deletes every rule of the chain that carries pbxha's comment.
async fn remove_nft_rules(env: &Env, c: &crate::facts::NftChain) -> Result<()> {
    let listing = env.runner.run_ok(&Cmd::new(["nft", "-a", "list", "chain", &c.family, &c.table, &c.chain])).await?;
    for handle in crate::facts::parse_nft_handles(&listing.stdout) {
        run(
            env,
            &["nft", "delete", "rule", &c.family, &c.table, &c.chain, "handle", &handle.to_string()].map(String::from),
        )
        .await?;
    }
    Ok(())
}

fn filesystem(env: &Env, device: &Path, mount_point: &Path, fstype: &str) -> pbxha_replica::filesystem::Filesystem {
    let spec = pbxha_replica::filesystem::FilesystemSpec {
        device: device.to_path_buf(),
        mount_point: mount_point.to_path_buf(),
        fstype: fstype.to_string(),
        options: String::new(),
        fsck: false,
        kill_grace: pbxha_replica::filesystem::DEFAULT_KILL_GRACE,
    };
    pbxha_replica::filesystem::Filesystem::new(spec, env.runner.clone())
}

/// Puts back what step `idx` recorded: files restored byte for byte, new files and
/// directories removed (a directory only when empty).
fn restore(journal: &Journal, idx: usize, notes: &mut Vec<String>) -> Result<()> {
    for (path, original) in journal.originals(idx)? {
        match original {
            Original::File(bytes, mode) => write_atomic(&path, &bytes, mode)?,
            Original::Absent => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::file(&path, format!("cannot remove: {e}"))),
            },
            Original::CreatedDir => {
                if std::fs::remove_dir(&path).is_err() && path.exists() {
                    notes.push(format!("{} is not empty and was left in place", path.display()));
                }
            }
        }
    }
    Ok(())
}

/// Reverses every step that began, last first. Returns what could not be undone; a step
/// whose undo failed stays marked so a rerun retries it.
pub async fn undo(env: &Env, journal: &Journal, steps: &[Step], progress: &mut dyn FnMut(&str)) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for (i, step) in steps.iter().enumerate().rev() {
        let state = journal.state(i)?;
        if matches!(state, State::Pending | State::Undone) {
            continue;
        }
        progress(&format!("{:>3}/{} undo {}", i + 1, steps.len(), step.title));
        journal.set(i, State::Undoing, None)?;
        let mut failed = Vec::new();
        let mut notes = Vec::new();
        for action in step.actions.iter().rev() {
            match action {
                Action::Run { undo: Some(argv), .. } => {
                    if let Err(e) = run(env, argv).await {
                        failed.push(e.to_string());
                    }
                }
                Action::Run { cannot_undo: Some(why), .. } => notes.push(format!("not undone: {why}")),
                Action::Run { .. } => {}
                Action::Nft { chain, .. } => {
                    if let Err(e) = remove_nft_rules(env, chain).await {
                        failed.push(e.to_string());
                    }
                }
                Action::Mount { device, mount_point, fstype } => {
                    if let Err(e) = filesystem(env, device, mount_point, fstype).stop().await {
                        failed.push(e.to_string());
                    }
                }
                Action::Migrate { dirs, .. } => match pbxha_replica::migrate::undo(dirs) {
                    Ok(undone) => notes.extend(undone.iter().filter_map(|u| {
                        let kept = u.replica_copy_kept_at.as_ref()?;
                        Some(format!("{} is back; the replica's copy is kept at {}", u.dir.display(), kept.display()))
                    })),
                    Err(e) => failed.push(e.to_string()),
                },
                Action::MysqlSetup { .. } => notes.push(
                    "not undone: MySQL replication stays set up (STOP SLAVE; RESET SLAVE ALL on both servers ends it)"
                        .into(),
                ),
                Action::Write { .. }
                | Action::NewKey { .. }
                | Action::Mkdir { .. }
                | Action::Commit { .. }
                | Action::DrbdSync { .. } => {}
            }
        }
        if let Err(e) = restore(journal, i, &mut notes) {
            failed.push(e.to_string());
        }
        for n in &notes {
            progress(&format!("      {n}"));
        }
        left.extend(
            notes.iter().filter(|n| n.starts_with("not undone")).map(|n| format!("step {} ({}): {n}", i + 1, step.id)),
        );
        if failed.is_empty() {
            journal.set(i, State::Undone, None)?;
        } else {
            let note = failed.join("; ");
            journal.set(i, State::UndoFailed, Some(&note))?;
            left.push(format!("step {} ({}): undo failed: {note}", i + 1, step.id));
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pbxha_replica::drbd::conf::Syntax;
    use pbxha_replica::drbd::control::Drbd;
    use pbxha_runner::{Output, ScriptedRunner};

    use super::*;

    /// `drbdsetup status --json` of the joining node (DRBD 9's field names), its disk in
    /// `disk` and the replication from the first node `alice` with its percent.
    fn status(disk: &str, connection: &str, replication: &str, percent: f64) -> Output {
        Output::ok(format!(
            r#"[{{"name": "r0", "node-id": 1, "role": "Secondary", "devices": [{{"volume": 0, "minor": 0, "disk-state": "{disk}"}}],
               "connections": [{{"peer-node-id": 0, "name": "alice", "connection-state": "{connection}", "peer-role": "Primary",
               "peer_devices": [{{"volume": 0, "replication-state": "{replication}", "peer-disk-state": "UpToDate", "percent-in-sync": {percent}}}]}}]}}]"#
        ))
    }

    #[tokio::test]
    async fn the_initial_sync_is_followed_in_percent_until_the_disk_is_up_to_date() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on_seq(
            ["drbdsetup", "status", "--json", "r0"],
            vec![
                status("Inconsistent", "Connecting", "Off", 0.0),
                status("Inconsistent", "Connected", "SyncTarget", 12.5),
                status("Inconsistent", "Connected", "SyncTarget", 12.5),
                status("Inconsistent", "Connected", "SyncTarget", 61.0),
                status("UpToDate", "Connected", "Established", 100.0),
            ],
        );
        let drbd = Drbd::new(runner.clone(), "r0", Syntax::V9, 0);
        let mut said = Vec::new();
        follow_sync(&drbd, Duration::from_millis(1), Duration::from_secs(10), &mut |l| said.push(l.trim().to_string()))
            .await
            .unwrap();
        assert_eq!(
            said,
            [
                "r0: disk Inconsistent, Connecting to alice",
                "initial sync of r0: 12.5 %",
                "initial sync of r0: 61.0 %",
                "in sync: r0 is UpToDate on this node"
            ]
        );
    }

    #[tokio::test]
    async fn a_sync_that_stops_moving_fails_naming_what_to_look_at() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["drbdsetup", "status", "--json", "r0"], status("Inconsistent", "Connected", "SyncTarget", 40.0));
        let drbd = Drbd::new(runner, "r0", Syntax::V9, 0);
        let err =
            follow_sync(&drbd, Duration::from_millis(5), Duration::from_millis(50), &mut |_| {}).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("made no progress") && text.contains("40.0 %") && text.contains("drbdadm status r0"),
            "{text}"
        );
    }
}
