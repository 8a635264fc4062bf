//! `pbxha install`: the setup wizard. The work is in the installer crate; this file gives
//! it the terminal, the runner, check-config's checker and keygen's key.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pbxha_installer::{Appliance, Env, Options, Outcome, Terminal};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").args(["answers", "join"])))]
pub struct InstallArgs {
    /// Answers file (see examples/answers.toml); without it the wizard asks on the terminal.
    #[arg(long, value_name = "FILE")]
    answers: Option<PathBuf>,
    /// Apply without the confirmation; only with an answers file that answers everything,
    /// or with --join.
    #[arg(long, requires = "source")]
    yes: bool,
    /// Preflight and plan only: change nothing; exit 1 when a check fails.
    #[arg(long)]
    dry_run: bool,
    /// Reverse every applied step, last first, and say what could not be undone.
    #[arg(long, conflicts_with_all = ["answers", "dry_run", "import_heartbeat"])]
    undo: bool,
    /// Take every /etc, /var, /run, /replica and /usr/local path below DIR (image builds,
    /// tests, the bare lab).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Show the pbxha.toml a heartbeat v1 cluster (ha.cf, haresources, authkeys in DIR) becomes.
    #[arg(long, value_name = "DIR", requires = "dry_run")]
    import_heartbeat: Option<PathBuf>,
    /// Do not start `pbxha run` at the end where systemd is not PID 1 (nor, on a join, drill).
    #[arg(long)]
    no_start: bool,
    /// Join the first node at ADDR (its heartbeat address, as it printed it) as the second; the
    /// install ends with `pbxha drill --now` once the pair has formed, and prints its report.
    #[arg(long, value_name = "ADDR", requires = "token", conflicts_with_all = ["answers", "undo", "import_heartbeat", "new_token"])]
    join: Option<String>,
    /// The one-time token the first node printed with the --join line.
    #[arg(long, value_name = "XXXX-XXXX-XXXX", requires = "join")]
    token: Option<String>,
    /// On the first node: make a fresh join token (the old one stops working) and print the
    /// line to run on the second node.
    #[arg(long, conflicts_with_all = ["answers", "undo", "import_heartbeat", "dry_run"])]
    new_token: bool,
    /// Seconds a new join token stays valid.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    token_expiry: u64,
}

/// check-config's checker and keygen's key, lent to the installer.
struct Lent;

impl Appliance for Lent {
    fn check_config(&self, text: &str, node: &str) -> Vec<String> {
        super::check::check(text, Some(node)).1.iter().map(ToString::to_string).collect()
    }

    fn new_auth_key(&self) -> String {
        super::keygen::new_key_text()
    }
}

/// stdout and stdin; nobody to ask when stdin is not a terminal.
struct Tty {
    interactive: bool,
}

impl Terminal for Tty {
    fn say(&mut self, text: &str) {
        println!("{}", text.trim_end_matches('\n'));
    }

    fn ask(&mut self, prompt: &str) -> Option<String> {
        if !self.interactive {
            return None;
        }
        print!("{prompt}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
        }
    }
}

pub async fn run(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let root = std::path::absolute(&args.root).with_context(|| format!("--root {}", args.root.display()))?;
    let env = Env { root, runner: Arc::new(pbxha_runner::SystemRunner) };
    let mut tty = Tty { interactive };
    if args.undo {
        let left = pbxha_installer::undo(&env, &mut tty).await?;
        for l in &left {
            println!("{l}");
        }
        let failed = left.iter().any(|l| l.contains("undo failed"));
        println!(
            "{}",
            if failed {
                "undo incomplete: rerun `pbxha install --undo` after fixing the above"
            } else {
                "undo complete"
            }
        );
        return Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    if let Some(dir) = &args.import_heartbeat {
        let (config, problems, notes) = pbxha_installer::import_heartbeat(&env, &Lent, dir).await?;
        print!("{config}");
        for n in notes {
            eprintln!("note: {n}");
        }
        for p in &problems {
            eprintln!("to fill in: {p}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let expiry = std::time::Duration::from_secs(args.token_expiry);
    if args.new_token {
        return match pbxha_installer::offer(&env, expiry).await? {
            Some(line) => {
                print_join_line(&line, expiry);
                Ok(ExitCode::SUCCESS)
            }
            None => anyhow::bail!("this node joined its first node: make the token there"),
        };
    }
    let opts = Options { answers: args.answers.clone(), yes: args.yes, dry_run: args.dry_run };
    if let (Some(at), Some(token)) = (&args.join, &args.token) {
        let outcome = pbxha_installer::join(&env, &Lent, &opts, at, token, &mut tty).await?;
        let config = match &outcome {
            Outcome::Installed { config, .. } if !args.no_start => Some(config.clone()),
            _ => None,
        };
        let code = finish(&env, outcome, &args, interactive, None)?;
        // The pair is whole: it proves itself before the operator leaves.
        return match config {
            Some(config) => verify(&config).await,
            None => Ok(code),
        };
    }
    if !interactive && args.answers.is_none() {
        anyhow::bail!("no terminal to ask on: pass --answers FILE (annotated example: examples/answers.toml), and --yes to apply it without a confirmation");
    }
    let outcome = pbxha_installer::install(&env, &Lent, &opts, &mut tty).await?;
    let offered = match outcome {
        Outcome::Installed { .. } => pbxha_installer::offer(&env, expiry).await?,
        _ => None,
    };
    finish(&env, outcome, &args, interactive, offered.map(|line| (line, expiry)))
}

/// The end of an install or a join: what happened, the daemon started where systemd is not
/// PID 1, and on the first node the line to run on the second.
fn finish(
    env: &Env,
    outcome: Outcome,
    args: &InstallArgs,
    interactive: bool,
    join_line: Option<(String, std::time::Duration)>,
) -> anyhow::Result<ExitCode> {
    match outcome {
        Outcome::Planned => Ok(ExitCode::SUCCESS),
        Outcome::Declined => {
            println!("nothing was changed{}", if interactive { "" } else { ": no terminal to confirm on; add --yes" });
            Ok(ExitCode::FAILURE)
        }
        Outcome::Installed { config, start_daemon } => {
            println!("installed: {}", config.display());
            if start_daemon && !args.no_start {
                let log = env.path("/var/log/pbxha.log");
                let pid = start_daemon_here(&config, &log)?;
                println!("systemd is not PID 1 here: started `pbxha run` itself (pid {pid}, log {})", log.display());
            }
            if let Some((line, expiry)) = join_line {
                print_join_line(&line, expiry);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long a freshly joined pair may take to form before its drill: the daemon's start,
/// the first heartbeats on every link, MySQL's replication threads connecting.
const PAIR_FORMS_WITHIN: std::time::Duration = std::time::Duration::from_secs(90);

/// The joining node's last step: `pbxha drill` once the pair has formed, its report printed.
async fn verify(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    use pbxha_appliance::drill::{self, DrillOptions};
    println!(
        "verifying the pair with `pbxha drill --now` (a switchover there and back; a pair being installed has no calls to drain)"
    );
    let waiting = |what: &str| println!("  waiting for the pair to form: {what}");
    if let Some(row) = drill::pair_formed(config, PAIR_FORMS_WITHIN, waiting).await? {
        println!(
            "installed, but the pair did not form within {} s: {} ({}); look at `pbxha status` and the daemon's log, then run `pbxha drill`",
            PAIR_FORMS_WITHIN.as_secs(),
            row.name,
            row.detail
        );
        return Ok(ExitCode::FAILURE);
    }
    let report = drill::run(config, DrillOptions { now: true, ..DrillOptions::default() }).await?;
    let code = super::drill::show(config, &report, false)?;
    println!(
        "{}",
        match report.passed {
            true => "the pair is installed and its drill passed",
            false => "installed, but the drill failed: fix what it names, then run `pbxha drill` again",
        }
    );
    Ok(code)
}

fn print_join_line(line: &str, expiry: std::time::Duration) {
    println!(
        "on the second node, run (the token works once, for {} min; `pbxha install --new-token` makes a new one):",
        expiry.as_secs().div_ceil(60)
    );
    println!("  {line}");
}

/// Starts `pbxha --config CONFIG run` in its own session, so it outlives this command.
fn start_daemon_here(config: &std::path::Path, log: &std::path::Path) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("finding the pbxha binary")?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().with_context(|| format!("opening {}", log.display()))?;
    let child = std::process::Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("starting `pbxha run`")?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use pbxha_installer::{answers, render};

    use super::*;

    /// The example answers with this node's addresses as the interfaces would give them,
    /// and a key file below `root`.
    fn example(root: &std::path::Path) -> answers::Answers {
        let mut a = answers::parse(include_str!("../../../examples/answers.toml")).unwrap().complete().unwrap();
        a.public.address = Some("192.168.0.100/24".parse().unwrap());
        a.heartbeat[0].address = Some("10.1.1.1/24".parse().unwrap());
        let key = root.join("etc/pbxha/authkey");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, Lent.new_auth_key()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        a
    }

    #[test]
    fn the_generated_config_passes_check_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = example(dir.path());
        for (storage, mysql) in [
            (a.storage.clone(), answers::Mysql::Replica),
            (
                answers::Storage::None,
                answers::Mysql::MasterMaster { admin_password_file: "/etc/pbxha/mysql-admin".into() },
            ),
            (answers::Storage::None, answers::Mysql::None),
        ] {
            a.storage = storage;
            a.mysql = mysql;
            let text = render::config(&a, &render::group(&a), dir.path());
            assert_eq!(Lent.check_config(&text, "pbx1"), Vec::<String>::new(), "{text}");
            assert!(!Lent.check_config(&text, "pbx3").is_empty(), "the node is checked too");
        }
        a.timing = answers::Timing::Fast;
        let text = render::config(&a, &render::group(&a), dir.path());
        assert_eq!(Lent.check_config(&text, "pbx1"), Vec::<String>::new(), "{text}");
    }

    #[test]
    fn keys_are_what_keygen_writes() {
        let k = Lent.new_auth_key();
        assert_eq!(k.len(), 65);
        assert!(k.ends_with('\n') && k.trim().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(k, Lent.new_auth_key());
    }
}
