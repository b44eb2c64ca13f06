//! `harbormaster completions bash|zsh|fish`: the shell completion script,
//! generated from the same clap definition the binary parses with.

use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = visible(Cli::command());
    clap_complete::generate(shell, &mut cmd, "harbormaster", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `cmd` without its hidden verbs (`__guard`): clap_complete would offer them.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new("harbormaster");
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if cmd.get_version().is_some() {
        out = out.version(env!("CARGO_PKG_VERSION"));
    }
    for arg in cmd.get_arguments() {
        out = out.arg(arg.clone());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(sub.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every positional argument of every verb says what it is (`--help`
    /// and the completion scripts show it).
    #[test]
    fn every_positional_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_positionals() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "harbormaster", &mut missing);
        assert!(
            missing.is_empty(),
            "positional arguments without help: {missing:?}"
        );
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
