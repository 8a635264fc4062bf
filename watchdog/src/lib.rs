//! Watching and telling for pbxha: what runs on a schedule, what it finds, and how the
//! operator hears about it.
//!
//! Parts: [`schedule`] (classic crontab lines through croner, or fixed intervals),
//! [`config`] (the `[mail]` and `[[check]]` sections, read from TOML with every problem and
//! its key path), [`checks`] (every check kind, rise/fall, history in SQLite), [`outbox`]
//! (the durable mail queue: dedup, backoff, flood digest), [`smtp`] (one mail through lettre,
//! failures named by SMTP step), [`mailer`] (the delivery loop and the queuing handle with its
//! writer thread), [`report`] (the text of the switchover report and alerts), [`device`] (the
//! `/dev/watchdog` kicker behind a seam) and [`error`] (the crate's one error type).

pub mod checks;
pub mod config;
pub mod device;
pub mod error;
pub mod mailer;
pub mod outbox;
pub mod report;
pub mod schedule;
pub mod smtp;

pub use error::Error;

/// Runs a blocking database call (SQLite waits up to its busy timeout for another process's
/// lock) from async code without stalling the runtime's other tasks: on the daemon's
/// multi-threaded runtime the worker hands its queued tasks (heartbeat receivers among them)
/// to another thread first. A current-thread runtime (unit tests) has no other worker to hand
/// them to, so there the call runs in place.
pub(crate) fn off_the_workers<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(call),
        _ => call(),
    }
}
