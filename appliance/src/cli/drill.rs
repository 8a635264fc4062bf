//! `pbxha drill`: runs [`pbxha_appliance::drill::run`], prints its report (text or one JSON
//! object), journals it and mails it when `[mail]` is set; exits 1 when a row failed.

use std::path::Path;
use std::process::ExitCode;

use pbxha_appliance::drill::{self, DrillOptions, DrillReport};

pub async fn run(config: &Path, options: DrillOptions, json: bool, if_holder: bool) -> anyhow::Result<ExitCode> {
    if if_holder && !drill::holds_group(config).await? {
        println!("skipped: the peer holds the group, and the drill runs there");
        return Ok(ExitCode::SUCCESS);
    }
    let report = drill::run(config, options).await?;
    show(config, &report, json)
}

/// Journals the report (and mails it with `[mail]`), prints it, and says the exit status:
/// 1 when a row failed. The joining install's verification ends the same way.
pub fn show(config: &Path, report: &DrillReport, json: bool) -> anyhow::Result<ExitCode> {
    if let Err(e) = drill::record(config, report) {
        eprintln!("pbxha: the drill's report was not saved: {e:#}");
    }
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{}", report.render());
        if let Some(row) = report.first_failure() {
            println!("look at: {} ({})", row.name, row.detail);
        }
    }
    Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
