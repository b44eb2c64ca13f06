//! Specification of configuration validation: each rule, its message and
//! its position (`line:col`), checked through the library's loader.

use std::path::PathBuf;

use harbormaster::config::{self, AppKind, Command, HostMatch, ProbeKind};

fn file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/harbormaster.toml"
    ))
}

fn env(name: &str) -> Option<String> {
    match name {
        "GREETING" => Some("hi".into()),
        "PORT_FROM_ENV" => Some("7000".into()),
        _ => None,
    }
}

/// Every error as `LINE:COL: key: message — hint`.
fn errors(text: &str) -> Vec<String> {
    match config::from_str_with_env(text, &file(), &env) {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .iter()
            .map(|e| {
                let full = e.to_string();
                let after_file = full.split_once(".toml:").map_or(full.as_str(), |x| x.1);
                after_file.to_string()
            })
            .collect(),
    }
}

fn assert_error(text: &str, expected: &str) {
    let errs = errors(text);
    assert!(
        errs.iter().any(|e| e.starts_with(expected)),
        "expected an error starting with {expected:?}, got {errs:#?}"
    );
}

const APP: &str = r#"
[apps.web]
routes = [{ host = "web.localhost" }]
command = ["testapp", "--port", "{port}"]
"#;

#[test]
fn reference_config_is_valid() {
    let text = include_str!("../examples/reference.toml");
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/reference.toml"
    ));
    let config = config::from_str(text, &path).expect("reference.toml is valid");
    assert_eq!(config.apps.len(), 2);
    let web = &config.apps[&config::AppName::new("web").unwrap()];
    assert_eq!(
        web.routes[1].host,
        Some(HostMatch::Wildcard("web.localhost".into()))
    );
    let AppKind::Managed(m) = &web.kind else {
        panic!("web is managed")
    };
    assert_eq!(m.restart.backoff.max(), std::time::Duration::from_secs(30));
    assert_eq!(m.stop.hooks[0].path, "/admin/shutdown");
    assert_eq!(config.runtime.dir, None, "the private default applies");
    assert_eq!(
        config.runtime.state_dir,
        path.parent().unwrap().join(".harbormaster")
    );
}

#[test]
fn defaults_follow_the_contract() {
    let config = config::from_str_with_env(APP, &file(), &env).unwrap();
    assert_eq!(
        config.gateway.listen,
        vec!["127.0.0.1:18080".parse().unwrap()]
    );
    assert_eq!(config.gateway.drain_timeout.as_secs(), 30);
    assert_eq!(config.gateway.max_header_bytes, 65536);
    assert_eq!(config.gateway.client_idle_timeout.as_secs(), 60);
    assert_eq!(config.gateway.upstream_idle_timeout.as_secs(), 4);
    assert_eq!(config.gateway.http2_max_concurrent_streams, 100);
    assert_eq!(config.gateway.max_upstream_connections, 512);
    // Unset: derived from the open-file limit at start.
    assert_eq!(config.gateway.max_connections, None);
    let web = config.apps.values().next().unwrap();
    assert!(web.required);
    assert!(web.readiness.is_none());
    assert_eq!(web.circuit_breaker.failures.get(), 5);
    let AppKind::Managed(m) = &web.kind else {
        panic!()
    };
    assert_eq!(m.instances.get(), 1);
    assert_eq!(m.port, 0);
    assert_eq!(m.stop.signal, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(m.working_dir, file().parent().unwrap());
}

#[test]
fn connection_limits_must_be_positive() {
    assert_error(
        "[gateway]\nmax_upstream_connections = 0\n",
        "2:28: gateway.max_upstream_connections: must be at least 1, got 0",
    );
    assert_error(
        "[gateway]\nclient_idle_timeout = \"0s\"\n",
        "2:23: gateway.client_idle_timeout: must be greater than 0",
    );
}

#[test]
fn toml_syntax_error_has_position() {
    assert_error("[gateway\nlisten = 1", "1:9: TOML syntax error");
}

#[test]
fn unknown_key_suggests_the_close_one() {
    assert_error(
        "[gateway]\nlistn = [\"127.0.0.1:1\"]\n",
        "2:1: gateway.listn: unknown key `listn` — did you mean `listen`?",
    );
}

#[test]
fn unknown_key_inside_an_array_of_routes() {
    let text = APP.replace(
        r#"{ host = "web.localhost" }"#,
        r#"{ host = "a" }, { pth = "/x" }"#,
    );
    let errs = errors(&text);
    assert_eq!(
        errs,
        ["3:29: apps.web.routes[1].pth: unknown key `pth` — did you mean `path`?"]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = format!("[gateway]\nlistn = 1\nmax_connections = \"many\"\naccess_log = 3\n{APP}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("2:1: gateway.listn: unknown key"));
    assert!(errs[1].starts_with(
        "3:19: gateway.max_connections: wrong type: found string \"many\", expected an integer"
    ));
    assert!(errs[2].starts_with("4:14: gateway.access_log: wrong type"));
}

#[test]
fn wrong_type_is_named() {
    assert_error(
        &format!("{APP}instances = \"two\"\n"),
        "5:13: apps.web.instances: wrong type: found string \"two\", expected an integer — write an integer here",
    );
}

#[test]
fn bad_duration() {
    assert_error(
        "[gateway]\ndrain_timeout = \"ten seconds\"\n",
        "2:17: gateway.drain_timeout: invalid duration \"ten seconds\"",
    );
}

#[test]
fn zero_timeout_is_rejected() {
    assert_error(
        "[gateway]\nupstream_connect_timeout = \"0s\"\n",
        "2:28: gateway.upstream_connect_timeout: must be greater than 0",
    );
}

#[test]
fn app_with_both_command_and_upstreams() {
    assert_error(
        &format!("{APP}upstreams = [\"127.0.0.1:1\"]\n"),
        "5:13: apps.web.upstreams: app has both `command` and `upstreams`",
    );
}

#[test]
fn app_with_neither_command_nor_upstreams() {
    assert_error(
        "[apps.web]\nroutes = [{ path = \"/\" }]\n",
        "1:1: apps.web: app has neither `command` nor `upstreams`",
    );
}

#[test]
fn app_without_routes() {
    assert_error(
        "[apps.web]\ncommand = [\"x\"]\n",
        "1:1: apps.web: app has no routes",
    );
    assert_error(
        "[apps.web]\ncommand = [\"x\"]\nroutes = []\n",
        "3:10: apps.web.routes: app has no routes",
    );
}

#[test]
fn two_apps_claiming_the_same_host_and_path() {
    let text = format!(
        "{APP}\n[apps.api]\nroutes = [{{ host = \"WEB.localhost\" }}]\nupstreams = [\"127.0.0.1:1\"]\n"
    );
    // Apps are checked in name order: `api` claims first, so `web` conflicts.
    assert_error(
        &text,
        "3:11: apps.web.routes[0]: host \"web.localhost\" with path \"/\" is already claimed by app `api`",
    );
}

#[test]
fn probe_without_a_kind() {
    assert_error(
        &format!("{APP}\n[apps.web.readiness]\ninterval = \"1s\"\n"),
        "6:1: apps.web.readiness: probe has no kind",
    );
}

#[test]
fn probe_with_two_kinds() {
    assert_error(
        &format!("{APP}\n[apps.web.liveness]\nhttp = \"/health\"\ntcp = true\n"),
        "8:7: apps.web.liveness.tcp: probe has more than one kind (http and tcp)",
    );
}

#[test]
fn zero_threshold() {
    assert_error(
        &format!("{APP}\n[apps.web.readiness]\ntcp = true\nsuccess_threshold = 0\n"),
        "8:21: apps.web.readiness.success_threshold: must be at least 1, got 0",
    );
    assert_error(
        &format!("{APP}\n[apps.web.circuit_breaker]\nfailures = 0\n"),
        "7:12: apps.web.circuit_breaker.failures: must be at least 1",
    );
}

#[test]
fn backoff_initial_above_max() {
    assert_error(
        &format!("{APP}\n[apps.web.restart]\nbackoff_initial = \"1m\"\nbackoff_max = \"10s\"\n"),
        "7:19: apps.web.restart.backoff_initial: backoff_initial (1m) is greater than backoff_max (10s)",
    );
}

#[test]
fn fixed_port_with_several_instances() {
    assert_error(
        &format!("{APP}instances = 2\nport = 8080\n"),
        "6:8: apps.web.port: a fixed port (8080) cannot be shared by 2 instances",
    );
}

#[test]
fn depends_on_unknown_app() {
    assert_error(
        &format!("{APP}depends_on = {{ wbe = \"ready\" }}\n"),
        "5:16: apps.web.depends_on.wbe: depends on unknown app `wbe`",
    );
}

#[test]
fn depends_on_cycle_is_named() {
    let text = format!(
        "{APP}depends_on = {{ db = \"ready\" }}\n\n[apps.db]\nroutes = [{{ path = \"/db\" }}]\ncommand = [\"db\"]\ndepends_on = {{ web = \"started\" }}\n"
    );
    assert_error(
        &text,
        "5:16: apps.web.depends_on.db: dependency cycle: db -> web -> db",
    );
}

#[test]
fn depends_on_with_unknown_condition() {
    assert_error(
        &format!("{APP}depends_on = {{ web = \"up\" }}\n"),
        "5:22: apps.web.depends_on.web: unknown value \"up\" — use one of: \"started\", \"ready\"",
    );
}

#[test]
fn unset_environment_variable() {
    assert_error(
        &format!("{APP}env = {{ TOKEN = \"${{NOT_SET_ANYWHERE}}\" }}\n"),
        "5:17: apps.web.env.TOKEN: environment variable `NOT_SET_ANYWHERE` is not set",
    );
}

#[test]
fn environment_variables_are_interpolated() {
    let text = format!("{APP}env = {{ MSG = \"${{GREETING}}, world\" }}\n");
    let config = config::from_str_with_env(&text, &file(), &env).unwrap();
    let AppKind::Managed(m) = &config.apps.values().next().unwrap().kind else {
        panic!()
    };
    assert_eq!(m.env["MSG"], "hi, world");
}

#[test]
fn invalid_signal_name() {
    assert_error(
        &format!("{APP}\n[apps.web.stop]\nsignal = \"SIGTREM\"\n"),
        "7:10: apps.web.stop.signal: invalid signal name \"SIGTREM\" — did you mean \"SIGTERM\"?",
    );
}

#[test]
fn short_signal_names_are_accepted() {
    let text = format!("{APP}\n[apps.web.stop]\nsignal = \"int\"\n");
    let config = config::from_str_with_env(&text, &file(), &env).unwrap();
    let AppKind::Managed(m) = &config.apps.values().next().unwrap().kind else {
        panic!()
    };
    assert_eq!(m.stop.signal, nix::sys::signal::Signal::SIGINT);
}

#[test]
fn invalid_listen_address() {
    assert_error(
        "[gateway]\nlisten = [\"localhost:8080\"]\n",
        "2:11: gateway.listen[0]: invalid address \"localhost:8080\" — use an IP address: \"127.0.0.1:8080\"",
    );
    assert_error(
        "[admin]\nlisten = \"127.0.0.1\"\n",
        "2:10: admin.listen: invalid address \"127.0.0.1\"",
    );
}

#[test]
fn ipv6_listen_address_is_accepted() {
    let text = format!("[gateway]\nlisten = [\"[::1]:8080\", \"127.0.0.1:8080\"]\n{APP}");
    let config = config::from_str_with_env(&text, &file(), &env).unwrap();
    assert_eq!(config.gateway.listen.len(), 2);
}

#[test]
fn shell_command_is_one_string() {
    let text = APP.replace(
        r#"command = ["testapp", "--port", "{port}"]"#,
        "command = \"testapp --port $PORT\"\nshell = true",
    );
    let config = config::from_str_with_env(&text, &file(), &env).unwrap();
    let AppKind::Managed(m) = &config.apps.values().next().unwrap().kind else {
        panic!()
    };
    assert_eq!(m.command, Command::Shell("testapp --port $PORT".into()));

    let text = APP.replace(r#"["testapp", "--port", "{port}"]"#, "\"testapp\"");
    assert_error(
        &text,
        "4:11: apps.web.command: command is a string but `shell` is false",
    );
}

#[test]
fn managed_only_keys_on_an_external_app() {
    let text = "[apps.db]\nroutes = [{ path = \"/db\" }]\nupstreams = [\"127.0.0.1:5432\"]\n\n[apps.db.liveness]\ntcp = true\n";
    assert_error(
        text,
        "5:1: apps.db.liveness: `liveness` applies only to apps with a `command`",
    );
}

#[test]
fn probe_kinds_are_typed() {
    let text = format!("{APP}\n[apps.web.startup]\nexec = [\"true\"]\n");
    let config = config::from_str_with_env(&text, &file(), &env).unwrap();
    let AppKind::Managed(m) = &config.apps.values().next().unwrap().kind else {
        panic!()
    };
    let startup = m.startup.as_ref().unwrap();
    assert_eq!(
        startup.kind,
        ProbeKind::Exec {
            argv: vec!["true".into()]
        }
    );
    assert_eq!(startup.failure_threshold.get(), 300);
}

#[test]
fn invalid_app_name() {
    assert_error(
        "[apps.\"my app\"]\nroutes = [{ path = \"/\" }]\nupstreams = [\"127.0.0.1:1\"]\n",
        "1:7: apps.my app: invalid app name \"my app\"",
    );
}

#[test]
fn start_order_puts_dependencies_first() {
    let text = format!(
        "{APP}depends_on = {{ db = \"ready\" }}\n\n[apps.db]\nroutes = [{{ path = \"/db\" }}]\ncommand = [\"db\"]\n"
    );
    let config = config::from_str_with_env(&text, &file(), &env).unwrap();
    let names: Vec<String> = config.start_order().iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["db", "web"]);
}
