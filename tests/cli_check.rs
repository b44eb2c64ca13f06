//! `harbormaster check` through the real binary: exit codes and output.

mod support;

use support::Cmd;

#[test]
fn check_accepts_the_reference_config_with_one_line_per_app() {
    let out = Cmd::harbormaster(["check", "-c", "examples/reference.toml"]).run();
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(lines[0].starts_with("legacy: external 127.0.0.1:3999"));
    assert!(lines[1].starts_with("web: managed `python3`, 1 instance, port auto"));
    assert!(lines[2].ends_with("valid, 2 apps, gateway on 127.0.0.1:18080"));
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("harbormaster.toml");
    std::fs::write(
        &file,
        "[gateway]\nlistn = []\n\n[apps.web]\nroutes = [{ host = \"w\" }]\ncommand = [\"x\"]\ninstances = 0\n",
    )
    .unwrap();
    let out = Cmd::harbormaster(["check", "-c", file.to_str().unwrap()]).run();
    assert_eq!(out.code, 1, "{out:?}");
    let f = file.display();
    assert!(out.stderr.contains(&format!(
        "{f}:2:1: gateway.listn: unknown key `listn` — did you mean `listen`?"
    )));
    assert!(out.stderr.contains(&format!(
        "{f}:7:13: apps.web.instances: must be at least 1, got 0"
    )));
    assert!(out.stderr.contains(&format!("{f}: 2 errors")), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn check_on_a_missing_file_names_it() {
    let out = Cmd::harbormaster(["check", "-c", "/nonexistent/harbormaster.toml"]).run();
    assert_eq!(out.code, 1);
    assert!(out
        .stderr
        .contains("/nonexistent/harbormaster.toml: cannot read the configuration file"));
}

#[test]
fn config_defaults_to_harbormaster_toml_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("harbormaster.toml"),
        "[apps.api]\nroutes = [{ path = \"/api\" }]\nupstreams = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let out = Cmd::harbormaster(["check"]).current_dir(dir.path()).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("api: external 127.0.0.1:9"));
}

#[test]
fn usage_errors_exit_2_and_version_works() {
    assert_eq!(Cmd::harbormaster(["frobnicate"]).run().code, 2);
    let out = Cmd::harbormaster(["--version"]).run();
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout.trim(),
        format!("harbormaster {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_warns_about_a_command_that_is_not_there_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("harbormaster.toml");
    std::fs::write(
        &file,
        "[apps.web]\nroutes = [{ host = \"w\" }]\ncommand = [\"python4\", \"-m\", \"http.server\"]\n\n[apps.api]\nroutes = [{ host = \"a\" }]\ncommand = [\"./api\"]\n\n[apps.ok]\nroutes = [{ host = \"o\" }]\ncommand = [\"sh\", \"-c\", \"true\"]\n",
    )
    .unwrap();
    let out = Cmd::harbormaster(["check", "-c", file.to_str().unwrap()]).run();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("warning: apps.web.command: `python4` is not found on PATH"),
        "{out:?}"
    );
    assert!(
        out.stderr
            .contains("warning: apps.api.command: `./api` does not exist"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("apps.ok"), "{out:?}");
}

#[test]
fn check_rejects_two_apps_on_one_fixed_port_and_an_app_on_a_listener_port() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("harbormaster.toml");
    std::fs::write(
        &file,
        "[gateway]\nlisten = [\"127.0.0.1:18080\"]\n\n[apps.a]\nroutes = [{ host = \"a\" }]\ncommand = [\"sh\"]\nport = 9000\n\n[apps.b]\nroutes = [{ host = \"b\" }]\ncommand = [\"sh\"]\nport = 9000\n\n[apps.c]\nroutes = [{ host = \"c\" }]\ncommand = [\"sh\"]\nport = 18080\n",
    )
    .unwrap();
    let out = Cmd::harbormaster(["check", "-c", file.to_str().unwrap()]).run();
    assert_eq!(out.code, 1, "{out:?}");
    let f = file.display();
    assert!(
        out.stderr.contains(&format!(
            "{f}:12:8: apps.b.port: port 9000 is already used by apps.a"
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!(
            "{f}:17:8: apps.c.port: port 18080 is already used by gateway.listen (127.0.0.1:18080)"
        )),
        "{out:?}"
    );
}
