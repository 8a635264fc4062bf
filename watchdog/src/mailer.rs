//! Delivery: the loop that drains the outbox through SMTP, and the handle the notifier queues
//! mail with.
//!
//! The handle's writer thread and the loop each own a connection to the same SQLite file, so
//! queuing never waits for a slow SMTP server nor for the database. A mail that cannot be
//! written yet (the database locked by another process, the disk full) is kept in memory by
//! the writer and written as soon as the database takes it; it is logged either way. The
//! loop's own database calls leave their async worker to the runtime's other tasks while they
//! wait ([`crate::off_the_workers`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::MailConfig;
use crate::outbox::{plan_flood, NewMail, Outbox};
use crate::smtp::{self, now_ms};
use crate::{off_the_workers, Error};

/// How often a flood-blocked queue is looked at again.
const RECHECK: Duration = Duration::from_secs(5);

/// What one delivery pass did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub sent: usize,
    pub failed: usize,
    /// Mails folded into a digest in this pass.
    pub digested: usize,
    /// Due mails held back because this minute's flood budget is spent.
    pub held: usize,
}

/// Everything delivery needs besides the outbox.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub config: MailConfig,
    pub cluster: String,
    /// Our name in EHLO and Message-IDs.
    pub hostname: String,
}

/// One pass: sends every due mail the flood limit allows, folding the overflow into a digest.
pub async fn deliver_due(outbox: &mut Outbox, d: &Delivery, now: u64) -> Result<Pass, Error> {
    let due: Vec<i64> = off_the_workers(|| outbox.due(now))?.iter().map(|m| m.id).collect();
    let plan = plan_flood(&due, off_the_workers(|| outbox.sent_in_window(now))?, d.config.flood_limit as usize);
    let mut pass = Pass { held: due.len() - plan.send.len() - plan.digest.len(), ..Pass::default() };
    let mut ids = plan.send.clone();
    if let Some(digest) = off_the_workers(|| outbox.make_digest(&plan.digest, now))? {
        pass.digested = plan.digest.len();
        ids.push(digest);
    }
    let due = off_the_workers(|| outbox.pending())?;
    for id in ids {
        let Some(mail) = due.iter().find(|m| m.id == id) else { continue };
        let result = match smtp::build_message(&d.config, mail, &d.cluster) {
            Ok(message) => smtp::send(&d.config, &message, &d.hostname).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        // The clock moved during the send; backoff and the flood window count from now.
        let now = now_ms();
        match result {
            Ok(response) => {
                tracing::info!(subject = %mail.subject, %response, "mail accepted");
                off_the_workers(|| outbox.mark_sent(id, &response, now))?;
                pass.sent += 1;
            }
            Err(error) => {
                tracing::warn!(subject = %mail.subject, attempts = mail.attempts + 1, %error, "mail not sent; will retry");
                off_the_workers(|| outbox.mark_failed(id, &error, now, d.config.retry_min, d.config.retry_max))?;
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}

/// Mails held in memory, not yet in the outbox, before a new one is refused: at a few alerts
/// a minute, hours of a locked or full database. Past it a mail is dropped and logged with
/// its subject rather than growing without end.
const HOLD: usize = 1024;

/// Queues mail for the delivery loop; cheap to clone.
///
/// Queuing never touches the database: the mail goes over a channel to a writer thread that
/// owns its own connection (as the journal's does), so a database held by another process
/// (busy for up to the outbox's busy timeout per try) stalls that thread, never the caller
/// — the daemon loop that sends heartbeats. What the thread cannot write yet it keeps, in
/// order, and retries every [`RETRY`].
#[derive(Clone)]
pub struct MailHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    /// To the writer thread: each mail with the time it was queued (its Date header).
    queue: std::sync::mpsc::Sender<(NewMail, u64)>,
    /// Mails queued but not yet in the outbox, in the channel or the writer's hands.
    held: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    path: PathBuf,
}

/// How often the writer retries mails the database refused (locked, disk full).
const RETRY: Duration = Duration::from_secs(1);

impl MailHandle {
    /// Opens the outbox at `db` for queuing and starts its writer thread. The thread ends once
    /// every clone is dropped and what it holds is written (or, the database refusing it,
    /// logged as lost).
    pub fn open(db: &std::path::Path, hostname: &str) -> Result<Self, Error> {
        let outbox = Outbox::open(db, hostname)?;
        let (queue, mails) = std::sync::mpsc::channel();
        let (held, wake) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let writer = Writer { outbox, held: held.clone(), wake: wake.clone(), waiting: VecDeque::new() };
        std::thread::Builder::new()
            .name("pbxha-outbox".into())
            .spawn(move || writer.run(mails))
            .map_err(|e| Error::db(db, format!("cannot start the outbox writer thread: {e}")))?;
        let inner = HandleInner { queue, held, wake, path: db.to_path_buf() };
        Ok(MailHandle { inner: Arc::new(inner) })
    }

    /// Hands the mail to the writer thread; never blocks and never fails. A mail the database
    /// refuses is held and retried (the error logged with the database's path); past [`HOLD`]
    /// held mails a new one is dropped and logged.
    pub fn queue(&self, mail: NewMail) {
        let held = self.inner.held.fetch_add(1, Ordering::SeqCst);
        if held >= HOLD {
            self.inner.held.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(path = %self.inner.path.display(), held, subject = %mail.subject,
                "outbox unwritable and {HOLD} mails already held; this mail is lost");
            return;
        }
        let sent = self.inner.queue.send((mail, now_ms()));
        if let Err(std::sync::mpsc::SendError((mail, _))) = sent {
            self.inner.held.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(path = %self.inner.path.display(), subject = %mail.subject,
                "outbox writer thread stopped; this mail is lost");
        }
    }

    /// How many queued mails are not in the outbox yet.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::SeqCst)
    }

    /// Waits, up to `limit`, until every queued mail is in the outbox (a daemon about to
    /// exit); returns how many are still held.
    pub async fn written(&self, limit: Duration) -> usize {
        let until = tokio::time::Instant::now() + limit;
        while self.held() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.held()
    }

    /// Runs delivery until `shutdown` turns true or its sender is gone. The loop's own
    /// connection is opened at `db`; errors of a pass are logged and the pass retried later.
    pub async fn run(&self, db: PathBuf, delivery: Delivery, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut outbox = off_the_workers(|| Outbox::open(&db, &delivery.hostname))?;
        loop {
            let now = now_ms();
            let pass = match deliver_due(&mut outbox, &delivery, now).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "mail delivery pass failed");
                    Pass { held: 1, ..Pass::default() }
                }
            };
            if pass.sent + pass.digested > 0 {
                // Best effort: an old row left behind costs a few bytes.
                let _ = off_the_workers(|| outbox.prune(now));
            }
            let next = off_the_workers(|| outbox.next_due_ms()).unwrap_or(None);
            let mut wait =
                next.map_or(Duration::from_secs(3600), |t| Duration::from_millis(t.saturating_sub(now_ms())));
            // The writer wakes the loop for each mail it writes.
            if pass.held > 0 {
                wait = wait.max(Duration::from_millis(200)).min(RECHECK);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
                // As the daemon's tasks all wait (pbxha's `stopped`): true, or no sender left.
                _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            }
        }
    }
}

/// The writer thread's side of a [`MailHandle`].
struct Writer {
    outbox: Outbox,
    held: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    /// Mails received but not yet written, oldest first.
    waiting: VecDeque<(NewMail, u64)>,
}

impl Writer {
    fn run(mut self, mails: std::sync::mpsc::Receiver<(NewMail, u64)>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut open = true;
        while open || !self.waiting.is_empty() {
            let next = if self.waiting.is_empty() {
                mails.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                mails.recv_timeout(RETRY)
            };
            match next {
                Ok(mail) => self.waiting.push_back(mail),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            self.waiting.extend(mails.try_iter());
            if !self.write_waiting() && !open {
                for (mail, _) in self.waiting.drain(..) {
                    tracing::error!(path = %self.outbox.path().display(), subject = %mail.subject,
                        "outbox closed with this mail unwritten; it is lost");
                }
            }
        }
    }

    /// Writes what waits, in one transaction; returns whether it went.
    fn write_waiting(&mut self) -> bool {
        if self.waiting.is_empty() {
            return true;
        }
        if let Err(e) = self.outbox.enqueue_all(&self.waiting) {
            tracing::error!(error = %e, held = self.waiting.len(),
                "mail kept in memory until the outbox can be written; retrying every {RETRY:?}");
            return false;
        }
        self.held.fetch_sub(self.waiting.len(), Ordering::SeqCst);
        self.waiting.clear();
        self.wake.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(key: &str) -> NewMail {
        NewMail { dedup_key: key.into(), subject: format!("subject {key}"), body: String::new() }
    }

    #[tokio::test]
    async fn queuing_never_waits_for_a_locked_database_and_the_mail_is_written_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let handle = MailHandle::open(&db, "node-a").unwrap();
        // Another process's write lock, held past the outbox's busy timeout (5 s), so the
        // writer's first try fails and a retry writes the mails.
        let other = rusqlite::Connection::open(&db).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let started = std::time::Instant::now();
        for key in ["a", "b", "c"] {
            handle.queue(mail(key));
        }
        assert!(started.elapsed() < Duration::from_millis(100), "queuing took {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(5500)).await;
        assert_eq!(handle.held(), 3, "nothing can be written while the lock is held");
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(handle.written(Duration::from_secs(10)).await, 0);
        let pending = Outbox::open_read_only(&db).unwrap().pending().unwrap();
        assert_eq!(pending.iter().map(|m| m.dedup_key.as_str()).collect::<Vec<_>>(), ["a", "b", "c"], "in order");
    }

    #[tokio::test]
    async fn past_the_bound_a_mail_is_dropped_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let handle = MailHandle::open(&db, "node-a").unwrap();
        let other = rusqlite::Connection::open(&db).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        for i in 0..HOLD + 5 {
            handle.queue(mail(&i.to_string()));
        }
        assert_eq!(handle.held(), HOLD);
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(handle.written(Duration::from_secs(15)).await, 0);
        assert_eq!(Outbox::open_read_only(&db).unwrap().pending().unwrap().len(), HOLD);
    }
}
