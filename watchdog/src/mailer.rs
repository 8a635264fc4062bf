//! Delivery: the loop that drains the outbox through SMTP, and the handle the notifier queues
//! mail with.
//!
//! The handle and the loop each own a connection to the same SQLite file, so queuing never
//! waits for a slow SMTP server. A mail that cannot even be written (disk full) is kept in
//! memory by the handle and written as soon as the disk takes it again; it is logged either
//! way.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::MailConfig;
use crate::outbox::{plan_flood, NewMail, Outbox};
use crate::smtp::{self, now_ms};
use crate::Error;

/// How often a flood-blocked or spilled queue is looked at again.
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
    let due: Vec<i64> = outbox.due(now)?.iter().map(|m| m.id).collect();
    let plan = plan_flood(&due, outbox.sent_in_window(now)?, d.config.flood_limit as usize);
    let mut pass = Pass { held: due.len() - plan.send.len() - plan.digest.len(), ..Pass::default() };
    let mut ids = plan.send.clone();
    if let Some(digest) = outbox.make_digest(&plan.digest, now)? {
        pass.digested = plan.digest.len();
        ids.push(digest);
    }
    let due = outbox.pending()?;
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
                outbox.mark_sent(id, &response, now)?;
                pass.sent += 1;
            }
            Err(error) => {
                tracing::warn!(subject = %mail.subject, attempts = mail.attempts + 1, %error, "mail not sent; will retry");
                outbox.mark_failed(id, &error, now, d.config.retry_min, d.config.retry_max)?;
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}

/// Queues mail for the delivery loop; cheap to clone.
#[derive(Clone)]
pub struct MailHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    outbox: Mutex<Outbox>,
    /// Mails the database refused (disk full), oldest first.
    spill: Mutex<Vec<(NewMail, u64)>>,
    wake: Notify,
}

impl MailHandle {
    /// Opens the outbox at `db` for queuing.
    pub fn open(db: &std::path::Path, hostname: &str) -> Result<Self, Error> {
        let outbox = Outbox::open(db, hostname)?;
        Ok(MailHandle {
            inner: Arc::new(HandleInner {
                outbox: Mutex::new(outbox),
                spill: Mutex::new(Vec::new()),
                wake: Notify::new(),
            }),
        })
    }

    /// Writes the mail to the outbox and wakes the loop. Never fails: a mail the disk refuses
    /// is held in memory and retried (and the error logged with the database's path).
    pub fn queue(&self, mail: NewMail) {
        let now = now_ms();
        self.inner.spill.lock().unwrap_or_else(|e| e.into_inner()).push((mail, now));
        self.flush_spill();
        self.inner.wake.notify_one();
    }

    /// How many mails wait in memory because the database refused them.
    pub fn spilled(&self) -> usize {
        self.inner.spill.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn flush_spill(&self) {
        let outbox = self.inner.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let mut spill = self.inner.spill.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((mail, at)) = spill.first() {
            match outbox.enqueue(mail, *at) {
                Ok(_) => {
                    spill.remove(0);
                }
                Err(e) => {
                    tracing::error!(error = %e, held = spill.len(), "mail kept in memory until the outbox can be written");
                    break;
                }
            }
        }
    }

    /// Runs delivery until `shutdown` turns true. The loop's own connection is opened at
    /// `db`; errors of a pass are logged and the pass retried later.
    pub async fn run(&self, db: PathBuf, delivery: Delivery, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut outbox = Outbox::open(&db, &delivery.hostname)?;
        loop {
            self.flush_spill();
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
                let _ = outbox.prune(now);
            }
            let next = outbox.next_due_ms().unwrap_or(None);
            let mut wait =
                next.map_or(Duration::from_secs(3600), |t| Duration::from_millis(t.saturating_sub(now_ms())));
            if pass.held > 0 || self.spilled() > 0 {
                wait = wait.max(Duration::from_millis(200)).min(RECHECK);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    }
}
