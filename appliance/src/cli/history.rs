//! `pbxha history`: the last failovers as timelines, read straight from the journal (works
//! without the daemon).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pbxha_appliance::{config, journal};

pub fn run(config_path: &Path, db: Option<PathBuf>, last: usize) -> anyhow::Result<ExitCode> {
    let db = db.unwrap_or_else(|| {
        config::load(config_path).map(|c| c.paths.state_db).unwrap_or_else(|_| PathBuf::from(config::DEFAULT_STATE_DB))
    });
    let failovers = journal::history(&db, last)?;
    if failovers.is_empty() {
        println!("no failovers recorded in {}", db.display());
    } else {
        print!("{}", journal::render_history(&failovers));
    }
    Ok(ExitCode::SUCCESS)
}
