//! `harbormaster completions bash|zsh|fish`: a script for each shell, made
//! from the real command line (every verb is in it).

mod support;

use support::Cmd;

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _harbormaster"),
        ("zsh", "#compdef harbormaster"),
        ("fish", "complete -c harbormaster"),
    ] {
        let out = Cmd::harbormaster(["completions", shell]).run();
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        assert!(
            out.stdout.contains(marker),
            "{shell}: no `{marker}` in\n{}",
            out.stdout
        );
        for verb in ["run", "status", "drain", "dashboard", "completions"] {
            assert!(out.stdout.contains(verb), "{shell}: `{verb}` missing");
        }
        assert!(
            !out.stdout.contains("__guard"),
            "{shell}: the hidden verb is offered"
        );
    }
    if std::process::Command::new("bash")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = Cmd::harbormaster(["completions", "bash"]).run();
        let check = std::process::Command::new("bash")
            .args(["-n", "-c", &out.stdout])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "bash cannot parse the script: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Cmd::harbormaster(["completions", "tcsh"]).run();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("bash") && out.stderr.contains("fish"),
        "{}",
        out.stderr
    );
}
