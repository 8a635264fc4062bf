//! `pbxha mysql setup|status`: master-master MySQL/MariaDB replication from the `[mysql]`
//! section of the config.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use pbxha_replica::mysql::{self, client, setup, status};

#[derive(Subcommand)]
pub enum MysqlCommand {
    /// Configure replication both ways (idempotent: a rerun says what it left as is).
    /// Run it on both nodes; the seed node's databases win the initial copy.
    Setup,
    /// Replication health of both servers; exit 1 when something needs attention.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// The `[mysql]` section of the config file.
fn read_section(config: &Path) -> anyhow::Result<mysql::MysqlConfig> {
    let text = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let root: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", config.display()))?;
    let Some(toml::Value::Table(section)) = root.get("mysql") else {
        anyhow::bail!("{}: no [mysql] section", config.display());
    };
    mysql::parse_mysql(section).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}:\n  {}", config.display(), lines.join("\n  "))
    })
}

pub async fn run(config: &Path, cmd: MysqlCommand) -> anyhow::Result<ExitCode> {
    let cfg = read_section(config)?;
    match cmd {
        MysqlCommand::Setup => {
            let mut progress = |line: &str| eprintln!("  {line}");
            let steps = setup::setup(&cfg, &pbxha_runner::SystemRunner, &mut progress).await?;
            for step in steps {
                println!("{} {}", if step.changed { "done:      " } else { "left as is:" }, step.what);
            }
            Ok(ExitCode::SUCCESS)
        }
        MysqlCommand::Status { json } => {
            let pair = client::pair_status(&cfg).await;
            let alerts = pair.alerts(status::DEFAULT_MAX_LAG_SECS);
            if json {
                println!("{}", serde_json::json!({ "pair": pair, "alerts": alerts }));
            } else {
                print!("{pair}");
                for a in &alerts {
                    println!("ALERT {a}");
                }
            }
            Ok(if alerts.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}
