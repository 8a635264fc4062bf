//! The call drain before a planned switchover: refuse new calls, then poll the PBX until
//! no call is left or the deadline passes, reporting each count as it goes.
//!
//! It only talks to a [`Drain`], and time is tokio's, so tests run it against a scripted
//! PBX with paused time.

use std::time::Duration;

use tokio::time::Instant;

use crate::pbx::{Calls, Drain};

/// The default `drain-timeout`: long enough for most calls to end by themselves.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// How often the PBX is asked for its call count while draining.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// The least time one count may take, even at the deadline: `asterisk -rx` and fs_cli
/// connect to the PBX, which can take a moment on a loaded box.
const MIN_QUERY: Duration = Duration::from_secs(5);

/// How a drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainOutcome {
    /// The last reading: `Known(0)` when the drain emptied the PBX.
    pub calls_left: Calls,
    /// Whether the PBX accepted the order to refuse new calls. When it did not, the drain
    /// still waited for calls to end, but new ones may have come in meanwhile.
    pub refusing: bool,
    pub elapsed: Duration,
}

/// Refuses new calls on `pbx` and waits until it has no call left or `deadline` passed,
/// asking every `poll`. `progress` gets every reading with the time since the drain began.
/// The PBX is left refusing: the caller stops and moves it next (see [`Drain::end_drain`]).
pub async fn drain(
    pbx: &dyn Drain,
    deadline: Duration,
    poll: Duration,
    mut progress: impl FnMut(&Calls, Duration) + Send,
) -> DrainOutcome {
    let began = Instant::now();
    let refusing = match pbx.start_drain().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("drain: cannot make the PBX refuse new calls ({e}); waiting for calls to end anyway");
            false
        }
    };
    loop {
        let remaining = deadline.saturating_sub(began.elapsed());
        let calls = match tokio::time::timeout(remaining.max(MIN_QUERY), pbx.active_calls()).await {
            Ok(calls) => calls,
            Err(_) => Calls::Unknown(format!("no call count within {:?}", remaining.max(MIN_QUERY))),
        };
        let elapsed = began.elapsed();
        progress(&calls, elapsed);
        // An unknown count is never taken for an idle PBX: only a read zero ends early.
        if calls == Calls::Known(0) || elapsed >= deadline {
            return DrainOutcome { calls_left: calls, refusing, elapsed };
        }
        tokio::time::sleep(poll.min(deadline - elapsed)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::Error;

    /// A PBX that answers counts from a script (the last repeats) and records what it was told.
    struct Scripted {
        counts: Mutex<VecDeque<Calls>>,
        refuse_fails: bool,
        started: AtomicUsize,
        ended: AtomicUsize,
        /// How long each count takes to arrive.
        delay: Duration,
    }

    impl Scripted {
        fn new(counts: Vec<Calls>) -> Self {
            Scripted {
                counts: Mutex::new(counts.into()),
                refuse_fails: false,
                started: AtomicUsize::new(0),
                ended: AtomicUsize::new(0),
                delay: Duration::ZERO,
            }
        }
    }

    #[async_trait]
    impl Drain for Scripted {
        async fn start_drain(&self) -> Result<(), Error> {
            self.started.fetch_add(1, Ordering::SeqCst);
            if self.refuse_fails {
                return Err(Error::Pbx { command: "fsctl pause inbound".into(), message: "-ERR".into() });
            }
            Ok(())
        }

        async fn active_calls(&self) -> Calls {
            tokio::time::sleep(self.delay).await;
            let mut counts = self.counts.lock().unwrap();
            if counts.len() > 1 {
                counts.pop_front().unwrap()
            } else {
                counts.front().cloned().unwrap()
            }
        }

        async fn end_drain(&self) -> Result<(), Error> {
            self.ended.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Every progress report, with when it came.
    type Seen = std::sync::Arc<Mutex<Vec<(Calls, Duration)>>>;

    fn record() -> (Seen, impl FnMut(&Calls, Duration) + Send) {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |c: &Calls, t| sink.lock().unwrap().push((c.clone(), t)))
    }

    #[tokio::test(start_paused = true)]
    async fn waits_until_the_last_call_ends_and_reports_each_count() {
        let pbx = Scripted::new(vec![Calls::Known(3), Calls::Known(2), Calls::Known(2), Calls::Known(0)]);
        let (seen, progress) = record();
        let out = drain(&pbx, Duration::from_secs(300), Duration::from_secs(1), progress).await;
        assert_eq!(out, DrainOutcome { calls_left: Calls::Known(0), refusing: true, elapsed: Duration::from_secs(3) });
        let seen = seen.lock().unwrap();
        let counts: Vec<_> = seen.iter().map(|(c, _)| c.known()).collect();
        assert_eq!(counts, [Some(3), Some(2), Some(2), Some(0)]);
        assert_eq!(seen.iter().map(|(_, t)| t.as_secs()).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(pbx.started.load(Ordering::SeqCst), 1);
        assert_eq!(pbx.ended.load(Ordering::SeqCst), 0, "the PBX must keep refusing until it is stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_deadline_with_calls_still_up() {
        let pbx = Scripted::new(vec![Calls::Known(4)]);
        let (seen, progress) = record();
        let out = drain(&pbx, Duration::from_secs(10), Duration::from_secs(3), progress).await;
        assert_eq!(out.calls_left, Calls::Known(4));
        assert_eq!(out.elapsed, Duration::from_secs(10), "the last poll is cut to the deadline");
        let times: Vec<_> = seen.lock().unwrap().iter().map(|(_, t)| t.as_secs()).collect();
        assert_eq!(times, [0, 3, 6, 9, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_count_never_ends_the_drain_early() {
        let pbx = Scripted::new(vec![
            Calls::Known(1),
            Calls::Unknown("AMI list without CoreShowChannelsComplete".into()),
            Calls::Unknown("timeout".into()),
        ]);
        let (_, progress) = record();
        let out = drain(&pbx, Duration::from_secs(5), Duration::from_secs(1), progress).await;
        assert_eq!(out.calls_left, Calls::Unknown("timeout".into()));
        assert_eq!(out.elapsed, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pbx_that_cannot_refuse_is_still_waited_for() {
        let mut pbx = Scripted::new(vec![Calls::Known(1), Calls::Known(0)]);
        pbx.refuse_fails = true;
        let (_, progress) = record();
        let out = drain(&pbx, Duration::from_secs(60), Duration::from_secs(1), progress).await;
        assert_eq!(out, DrainOutcome { calls_left: Calls::Known(0), refusing: false, elapsed: Duration::from_secs(1) });
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_count_is_cut_off_and_unknown() {
        let mut pbx = Scripted::new(vec![Calls::Known(2)]);
        pbx.delay = Duration::from_secs(3600);
        let (_, progress) = record();
        let out = drain(&pbx, Duration::from_secs(20), Duration::from_secs(1), progress).await;
        assert!(matches!(out.calls_left, Calls::Unknown(ref why) if why.contains("no call count")), "{out:?}");
        assert_eq!(out.elapsed, Duration::from_secs(20), "a hung PBX must not hold the switchover past its deadline");
    }
}
