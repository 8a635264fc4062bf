//! `pbxha mail test|queue` and `pbxha checks`: the mail setup and the watchdog's state, read
//! straight from the config and the state database (they work without the daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use pbxha_appliance::config;
use pbxha_watchdog::{checks, outbox, smtp};

#[derive(Subcommand)]
pub enum MailCommand {
    /// Send a test mail now and print the server's answer or the step that failed.
    Test,
    /// List the mails waiting in the outbox, with attempts and the last error.
    Queue,
}

/// The state database: `--db`, else `paths.state-db` from the config, else the default.
pub fn state_db(config_path: &Path, db: Option<PathBuf>) -> PathBuf {
    db.unwrap_or_else(|| config::lenient_path(config_path, "paths", "state-db", config::DEFAULT_STATE_DB))
}

pub async fn run(config_path: &Path, db: Option<PathBuf>, command: MailCommand) -> anyhow::Result<ExitCode> {
    match command {
        MailCommand::Test => test(config_path).await,
        MailCommand::Queue => queue(&state_db(config_path, db)),
    }
}

async fn test(config_path: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let root: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", config_path.display()))?;
    let Some(section) = root.get("mail").and_then(toml::Value::as_table) else {
        anyhow::bail!("{} has no [mail] section", config_path.display());
    };
    let mail = match pbxha_watchdog::config::parse_mail(section, "mail") {
        Ok(m) => m,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", config_path.display());
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let cluster = root.get("cluster").and_then(|c| c.get("name")).and_then(toml::Value::as_str).unwrap_or("pbxha");
    let host =
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into());
    let now = smtp::now_ms();
    let queued = outbox::QueuedMail {
        id: 0,
        dedup_key: format!("test:{now}"),
        message_id: format!("pbxha.{now}.test@{host}"),
        created_ms: now,
        subject: format!("[{cluster}] pbxha test mail from {host}"),
        body: format!("This is a test mail from pbxha on {host}.\nIf you read this, alerts reach you.\n"),
        attempts: 0,
        next_attempt_ms: now,
        last_error: None,
    };
    let message = smtp::build_message(&mail, &queued, cluster)?;
    let to: Vec<String> = mail.to.iter().map(ToString::to_string).collect();
    println!("sending to {} through {}:{} ({:?})", to.join(", "), mail.server, mail.port, mail.security);
    match smtp::send(&mail, &message, &host).await {
        Ok(answer) => {
            println!("accepted: {answer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("pbxha: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn queue(db: &Path) -> anyhow::Result<ExitCode> {
    if !db.exists() {
        println!("no outbox yet ({} does not exist)", db.display());
        return Ok(ExitCode::SUCCESS);
    }
    let pending = outbox::Outbox::open_read_only(db)?.pending()?;
    if pending.is_empty() {
        println!("outbox empty");
    }
    for m in &pending {
        println!(
            "#{} queued {}  attempts {}  next {}",
            m.id,
            outbox::format_ms(m.created_ms),
            m.attempts,
            outbox::format_ms(m.next_attempt_ms)
        );
        println!("    {}", m.subject);
        if let Some(e) = &m.last_error {
            println!("    last error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `pbxha checks`: the last results of every check.
pub fn checks(config_path: &Path, db: Option<PathBuf>, last: usize) -> anyhow::Result<ExitCode> {
    let db = state_db(config_path, db);
    if !db.exists() {
        println!("no check history yet ({} does not exist)", db.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rows = checks::History::open(&db)?.recent(last)?;
    if rows.is_empty() {
        println!("no check results recorded in {}", db.display());
    }
    let mut current = "";
    for r in &rows {
        if r.name != current {
            println!("{}: {}", r.name, r.state);
            current = &r.name;
        }
        println!("    {}  {}  {}", outbox::format_ms(r.at_ms), if r.ok { "ok  " } else { "FAIL" }, r.detail);
    }
    Ok(ExitCode::SUCCESS)
}
