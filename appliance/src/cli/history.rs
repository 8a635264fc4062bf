//! `pbxha history`: the last failovers as timelines, read straight from the journal (works
//! without the daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pbxha_appliance::journal;

pub fn run(config_path: &Path, db: Option<PathBuf>, last: usize, json: bool) -> anyhow::Result<ExitCode> {
    let db = super::mail::state_db(config_path, db);
    let failovers = journal::history(&db, last)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&failovers)?);
    } else if failovers.is_empty() {
        println!("no failovers recorded in {}", db.display());
    } else {
        print!("{}", journal::render_history(&failovers));
    }
    Ok(ExitCode::SUCCESS)
}
