//! `pbxha history`: the last failovers as timelines, then the last drills, read straight
//! from the journal (works without the daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pbxha_appliance::journal;

pub fn run(config_path: &Path, db: Option<PathBuf>, last: usize, json: bool) -> anyhow::Result<ExitCode> {
    let db = super::mail::state_db(config_path, db);
    let failovers = journal::history(&db, last)?;
    if json {
        // The failovers alone, as before drills were journaled; `pbxha drill --json` has those.
        println!("{}", serde_json::to_string_pretty(&failovers)?);
        return Ok(ExitCode::SUCCESS);
    }
    if failovers.is_empty() {
        println!("no failovers recorded in {}", db.display());
    } else {
        print!("{}", journal::render_history(&failovers));
    }
    let drills = journal::drills(&db, last)?;
    if !drills.is_empty() {
        print!("{}", journal::render_drills(&drills));
    }
    Ok(ExitCode::SUCCESS)
}
