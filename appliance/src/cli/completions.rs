//! `pbxha completions SHELL` and the hidden `pbxha manpage`: both generated from the clap
//! definitions, so they cannot drift from what the parser accepts.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "pbxha", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn manpage() -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    render_manpage(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// pbxha(8): the top-level page, then one section per subcommand (nested ones too) with its
/// synopsis, description and every flag, so one `man pbxha` covers the whole command.
fn render_manpage(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut cmd = super::Cli::command();
    // Fills in the `pbxha status`-style names the subcommand synopses print.
    cmd.build();
    let man = |cmd: clap::Command| {
        clap_mangen::Man::new(cmd)
            .section("8")
            .source(concat!("pbxha ", env!("CARGO_PKG_VERSION")))
            .manual("System Administration")
    };
    man(cmd.clone()).render(out)?;
    out.extend_from_slice(b".SH \"COMMANDS IN DETAIL\"\n");
    let mut stack = visible(&cmd);
    while let Some(sub) = stack.pop() {
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_string();
        let mut part = Vec::new();
        // The global flags and --help/--version are on the top-level page already.
        let own = sub.clone().mut_args(|a| {
            let repeated = a.is_global_set() || matches!(a.get_id().as_str(), "help" | "version");
            a.hide(repeated)
        });
        let page = man(own.clone());
        page.render_synopsis_section(&mut part)?;
        page.render_description_section(&mut part)?;
        if own.get_arguments().any(|a| !a.is_hide_set()) {
            page.render_options_section(&mut part)?;
        }
        writeln!(out, ".SS \"{name}\"")?;
        // Inside one page the subcommand's own sections are paragraphs under its heading.
        for line in String::from_utf8_lossy(&part).lines() {
            match line.strip_prefix(".SH ") {
                Some(title) => writeln!(out, ".TP\n\\fI{}\\fR", title.trim_matches('"').to_lowercase())?,
                None => writeln!(out, "{line}")?,
            }
        }
        stack.extend(visible(&sub));
    }
    out.extend_from_slice(b".SH \"SEE ALSO\"\n.BR pbxha.toml (5)\n");
    Ok(())
}

/// Subcommands in reverse order, for a stack that pops them in order.
fn visible(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut subs: Vec<clap::Command> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").cloned().collect();
    subs.reverse();
    subs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand and every flag of the parser is in pbxha(8).
    #[test]
    fn the_manpage_covers_every_subcommand_and_flag() {
        let mut out = Vec::new();
        render_manpage(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        let mut cmd = crate::cli::Cli::command();
        cmd.build();
        let mut stack = vec![cmd];
        let mut seen = 0;
        while let Some(c) = stack.pop() {
            let name = c.get_bin_name().unwrap_or(c.get_name()).to_string();
            assert!(c.get_name() == "pbxha" || page.contains(&format!(".SS \"{name}\"")), "no section for `{name}`");
            for arg in c.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    // roff escapes the dashes: \-\-json
                    assert!(
                        page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                        "`{name} --{long}` is not in pbxha(8)"
                    );
                    seen += 1;
                }
            }
            stack.extend(visible(&c));
        }
        assert!(seen > 20, "only {seen} flags found: is the walk right?");
        assert!(page.contains(".SS \"pbxha lab up\""), "nested subcommands have sections too");
    }
}
