//! The boot counter: how the peer tells this daemon's starts apart, and orders them.
//!
//! Every start takes a counter higher than the last one this node used, stores it under the
//! state directory (written, fsync'd and renamed into place, then the directory fsync'd)
//! before the first heartbeat leaves, and sends it in every packet. The peer judges a packet
//! by it: a higher counter is a new boot (its sequences start over), the same counter is the
//! same boot (the sequence must grow), a lower one is a replay of an earlier boot.
//!
//! Why a persisted counter and not a nonce/challenge exchange: a challenge makes believing a
//! restarted peer depend on the reverse path (the peer must hear us first), so a one-way link
//! would also hide restarts; the counter needs nothing from the receiver, and costs one small
//! file write per start. Why not the wall clock (packet version 1): a node restarting with
//! its clock behind (RTC behind, before NTP, a step undone) was refused until its clock
//! caught up.
//!
//! The clock still seeds the counter: each start takes `max(stored + 1, now in seconds)`.
//! The stored value alone makes it increase whatever the clock does; the clock makes a node
//! that lost its state directory (reinstalled, disk replaced, a VM snapshot rolled back)
//! start above every counter it used before, as long as its clock is not behind the clock
//! of its earlier starts. If it is, the peer refuses its heartbeats as replays and logs the
//! counter it needs; restarting the node once its clock is right, or writing a higher number
//! into the counter file and restarting it, lets it join. Restarting the peer's daemon also
//! does: what it has seen is held in memory only.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// The counter file for a daemon whose journal is `state_db`: beside it, named after it, so
/// two daemons sharing a directory (the tests, the lab) keep their own counters.
pub fn counter_path(state_db: &Path) -> PathBuf {
    let mut name = state_db.as_os_str().to_owned();
    name.push(".boot-counter");
    PathBuf::from(name)
}

/// This start's counter from the stored one (none when the file is missing or unreadable)
/// and the wall clock in unix seconds. Pure.
pub fn next(stored: Option<u64>, now_secs: u64) -> u64 {
    match stored {
        Some(last) => last.saturating_add(1).max(now_secs),
        None => now_secs,
    }
}

/// What starting took from and left in the counter file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    /// The counter this start sends.
    pub counter: u64,
    /// Why no stored counter was used (missing or unreadable file); none when one was.
    pub unseeded: Option<String>,
}

/// Reads the stored counter, takes the next one and stores it durably. Fails naming the
/// file when it cannot be stored; the caller decides whether to run without it.
pub fn advance(path: &Path, now_secs: u64) -> Result<Boot, Error> {
    let (stored, unseeded) = match std::fs::read_to_string(path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) => (Some(n), None),
            Err(_) => (None, Some(format!("{} does not hold a number: {:?}", path.display(), text.trim()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (None, Some(format!("{} does not exist (first start, or the state directory was lost)", path.display())))
        }
        Err(e) => (None, Some(format!("cannot read {}: {e}", path.display()))),
    };
    let counter = next(stored, now_secs);
    store(path, counter)?;
    Ok(Boot { counter, unseeded })
}

/// Test only: seconds added to the wall clock the counter is seeded from (negative: behind),
/// so a real daemon can be started as a node whose clock is off would start. Unset in
/// production.
pub const CLOCK_OFFSET_ENV: &str = "PBXHA_TEST_CLOCK_OFFSET_SECS";

/// The daemon's start: advances the counter beside `state_db` and logs what it did. A
/// counter that cannot be stored is logged and used anyway: the daemon keeps running, and
/// only a restart within the same second would repeat it (the clock seeds the next one).
pub fn start(state_db: &Path) -> u64 {
    let offset: i64 = std::env::var(CLOCK_OFFSET_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let now_secs = (crate::unix_ms() / 1000).saturating_add_signed(offset);
    let path = counter_path(state_db);
    match advance(&path, now_secs) {
        Ok(Boot { counter, unseeded: None }) => {
            tracing::info!(boot = counter, file = %path.display(), "boot counter");
            counter
        }
        Ok(Boot { counter, unseeded: Some(why) }) => {
            tracing::warn!(
                boot = counter,
                "boot counter seeded from the clock: {why}. If this node ran before with its clock \
                 ahead of now, the peer refuses its heartbeats as replays and logs the counter it \
                 has seen; then write a higher number into {} and restart",
                path.display()
            );
            counter
        }
        Err(e) => {
            let counter = next(None, now_secs);
            tracing::error!(boot = counter, "{e}; using the clock as this start's boot counter");
            counter
        }
    }
}

fn store(path: &Path, counter: u64) -> Result<(), Error> {
    let fail = |what: &str, e: std::io::Error| Error::io(format!("boot counter {}: {what}", path.display()), e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("creating its directory", e))?;
    let tmp = {
        let mut name = path.as_os_str().to_owned();
        name.push(".tmp");
        PathBuf::from(name)
    };
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("creating the temporary file", e))?;
    writeln!(f, "{counter}").map_err(|e| fail("writing", e))?;
    // Durable before the first heartbeat carries it: after a power cut the next start must
    // not reuse this counter.
    f.sync_all().map_err(|e| fail("fsync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail("renaming into place", e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| fail("fsync of its directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;

    #[test]
    fn the_counter_grows_whatever_the_clock_does() {
        assert_eq!(next(None, NOW), NOW);
        assert_eq!(next(Some(NOW), NOW), NOW + 1, "two starts within a second");
        assert_eq!(next(Some(NOW), NOW - 3600), NOW + 1, "clock an hour behind");
        assert_eq!(next(Some(NOW), NOW + 3600), NOW + 3600, "clock an hour ahead");
        assert_eq!(next(Some(NOW + 3600), NOW), NOW + 3601, "ahead, then put right");
        assert_eq!(next(Some(u64::MAX), NOW), u64::MAX);
    }

    #[test]
    fn advance_stores_each_start_and_says_when_it_had_nothing_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = counter_path(&dir.path().join("state").join("a.db"));
        assert!(path.ends_with("a.db.boot-counter"), "{}", path.display());
        let first = advance(&path, NOW).unwrap();
        assert_eq!(first.counter, NOW);
        assert!(first.unseeded.as_deref().is_some_and(|w| w.contains("does not exist")), "{first:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{NOW}\n"));
        let behind = advance(&path, NOW - 3600).unwrap();
        assert_eq!(behind, Boot { counter: NOW + 1, unseeded: None });
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), (NOW + 1).to_string());

        std::fs::write(&path, "garbage\n").unwrap();
        let reseeded = advance(&path, NOW + 10).unwrap();
        assert_eq!(reseeded.counter, NOW + 10);
        assert!(reseeded.unseeded.as_deref().is_some_and(|w| w.contains("does not hold a number")), "{reseeded:?}");
    }

    #[test]
    fn a_counter_that_cannot_be_stored_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("a.db.boot-counter");
        let err = advance(&path, NOW).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
