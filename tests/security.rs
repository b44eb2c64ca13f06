//! No secret on disk and no credential sent anywhere: the README's example
//! serves no runtime file, the runtime dir is private, TCP mutations need a
//! configured token while the CLI needs none (it uses admin.sock), a second
//! `start` touches nothing of the running one, app names never become paths
//! unchecked, and a broken config does not hide the running instance.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::harbor::{post, testapp_command};
use support::{Cmd, Output};

/// A config in a temp dir with its own `XDG_RUNTIME_DIR`, driven by the CLI.
struct Project {
    dir: tempfile::TempDir,
    xdg: tempfile::TempDir,
}

impl Project {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("harbormaster.toml"), text).unwrap();
        Self {
            dir,
            xdg: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("harbormaster.toml")
    }

    fn verb(&self, args: &[&str]) -> Output {
        let config = self.config();
        let mut all = vec!["-c", config.to_str().unwrap()];
        all.extend_from_slice(args);
        Cmd::harbormaster(all)
            .env("XDG_RUNTIME_DIR", self.xdg.path())
            .current_dir(self.dir.path())
            .run()
    }

    /// The one runtime dir under `$XDG_RUNTIME_DIR/harbormaster/`.
    fn runtime(&self) -> PathBuf {
        let base = self.xdg.path().join("harbormaster");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        dirs.pop().unwrap()
    }

    fn info(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.runtime().join("runtime.json")).unwrap())
            .unwrap()
    }

    fn admin(&self) -> String {
        let admin = self.info()["admin"].as_str().unwrap().to_string();
        admin.trim_start_matches("http://").to_string()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.verb(&["stop", "--timeout", "20s"]);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The README's minimal configuration, with the gateway on a free port.
fn readme_config() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```toml\n# harbormaster.toml\n")
        .expect("the README's example")
        + 8;
    let text = &readme[start..];
    let text = &text[..text.find("```").unwrap()];
    assert!(text.contains("\"127.0.0.1:8080\""), "{text}");
    text.replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
}

#[test]
fn the_readme_example_serves_no_runtime_file_and_keeps_no_credential_beside_the_config() {
    let p = Project::new(&readme_config());
    let out = p.verb(&["start"]);
    assert_eq!(out.code, 0, "{out:?}");
    let runtime = p.runtime();
    assert!(
        !runtime.starts_with(p.dir.path()),
        "the runtime dir is outside the served folder"
    );
    let gw = p.info()["gateway"][0].as_str().unwrap().to_string();

    // Every file of the runtime dir, and the old token's place, by every route.
    let mut paths: Vec<String> = vec![
        ".harbormaster/admin.token".into(),
        ".harbormaster/runtime.json".into(),
    ];
    for f in files(&runtime) {
        paths.push(f.file_name().unwrap().to_string_lossy().into_owned());
        paths.push(format!(
            ".harbormaster/{}",
            f.file_name().unwrap().to_string_lossy()
        ));
    }
    let runtime_json = std::fs::read_to_string(runtime.join("runtime.json")).unwrap();
    for path in &paths {
        let (code, body) =
            support::harbor::fetch(gw.as_str(), "x", &format!("/web/{path}")).unwrap();
        assert_ne!(code, 200, "/web/{path} answered {body}");
        let (_, body) =
            support::harbor::fetch(gw.as_str(), "web.localhost", &format!("/{path}")).unwrap();
        assert!(!body.contains(&runtime_json), "{path}");
    }
    // The served folder itself: only logs, nothing that authenticates.
    for f in files(p.dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name == "harbormaster.toml" || f.starts_with(p.dir.path().join(".harbormaster/logs")),
            "unexpected file {f:?}"
        );
        assert!(!name.contains("token") && !name.contains(".sock"), "{f:?}");
    }
    // The instances listen on loopback only (once each is ready: `start`
    // returns when one instance per app is).
    let status =
        || -> Value { serde_json::from_str(&p.verb(&["status", "--json"]).stdout).unwrap() };
    support::harbor::eventually(
        std::time::Duration::from_secs(20),
        "every instance is ready",
        || {
            status()["apps"]["web"]["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["ready"] == true)
        },
    );
    let status = status();
    for i in status["apps"]["web"]["instances"].as_array().unwrap() {
        let port = i["port"].as_u64().unwrap() as u16;
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let listening: Vec<&str> = tcp
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(&format!(":{port:04X}")))
            })
            .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
            .collect();
        assert!(
            !listening.is_empty(),
            "nothing listens on {port}: {status}\n{tcp}"
        );
        for l in listening {
            assert!(
                l.split_whitespace()
                    .nth(1)
                    .unwrap()
                    .starts_with("0100007F:"),
                "{l}"
            );
        }
    }
}

#[test]
fn the_runtime_dir_is_private_and_the_socket_is_0600() {
    let p = Project::new(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
        testapp_command(&[])
    ));
    assert_eq!(p.verb(&["start"]).code, 0);
    let runtime = p.runtime();
    let name = runtime.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("harbormaster-") && name.len() == "harbormaster-".len() + 8,
        "{name}"
    );
    assert_eq!(mode(&runtime), 0o700);
    assert_eq!(mode(&runtime.join("admin.sock")), 0o600);
    assert_eq!(
        p.info()["socket"],
        runtime.join("admin.sock").display().to_string()
    );
    assert!(!runtime.join("admin.token").exists());
}

#[test]
fn tcp_mutations_need_a_configured_token_and_the_cli_needs_none() {
    let token = "s3cret-token-0123456789";
    let app = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
        testapp_command(&[])
    );
    let with = Project::new(&format!("[admin]\ntokens = [\"{token}\"]\n{app}"));
    assert_eq!(with.verb(&["start"]).code, 0);
    let admin = with.admin();
    assert_eq!(post(admin.as_str(), "/v1/apps/web/drain", None).0, 401);
    assert_eq!(
        post(
            admin.as_str(),
            "/v1/apps/web/drain",
            Some("wrong-token-0123456789")
        )
        .0,
        401
    );
    assert_eq!(
        post(admin.as_str(), "/v1/apps/web/drain", Some(token)).0,
        202
    );
    // Tokens change with a reload.
    let rotated = "rotated-token-0123456789";
    std::fs::write(
        with.config(),
        format!("[admin]\ntokens = [\"{rotated}\"]\n{app}"),
    )
    .unwrap();
    let reload = with.verb(&["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
    assert_eq!(
        post(admin.as_str(), "/v1/apps/web/resume", Some(token)).0,
        401
    );
    assert_eq!(
        post(admin.as_str(), "/v1/apps/web/resume", Some(rotated)).0,
        202
    );

    let without = Project::new(&app);
    assert_eq!(without.verb(&["start"]).code, 0);
    let admin = without.admin();
    assert_eq!(
        post(admin.as_str(), "/v1/apps/web/drain", Some(token)).0,
        401
    );
    assert_eq!(post(admin.as_str(), "/v1/shutdown", None).0, 401);
    let drain = without.verb(&["drain", "web"]);
    assert_eq!(drain.code, 0, "{drain:?}");
    let status: Value = serde_json::from_str(&without.verb(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["apps"]["web"]["draining"], true);
}

#[test]
fn start_while_running_leaves_the_running_logs_intact() {
    let p = Project::new(&format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
        testapp_command(&[])
    ));
    assert_eq!(p.verb(&["start"]).code, 0);
    let logs = p.dir.path().join(".harbormaster/logs");
    let read = || ["harbormaster.log", "web.log"].map(|f| std::fs::read(logs.join(f)).unwrap());
    let before = read();
    assert!(!before[0].is_empty());
    let again = p.verb(&["start"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already running"), "{again:?}");
    let after = read();
    for (b, a) in before.iter().zip(&after) {
        assert!(a.starts_with(b), "a log lost bytes");
    }
}

#[test]
fn app_names_are_checked_before_they_become_paths_even_when_the_config_is_broken() {
    let p = Project::new("[gateway\nthis is not toml");
    for verb in [
        &["logs", "../../x"][..],
        &["drain", "../x"],
        &["restart", "a/b"],
    ] {
        let out = p.verb(verb);
        assert_eq!(out.code, 1, "{verb:?}: {out:?}");
        assert!(out.stderr.contains("invalid app name"), "{out:?}");
    }
}

#[test]
fn a_broken_config_does_not_hide_the_running_instance() {
    for runtime_dir in [None, Some(tempfile::tempdir().unwrap())] {
        let runtime_line = runtime_dir
            .as_ref()
            .map(|d| format!("[runtime]\ndir = \"{}\"\n", d.path().join("rt").display()))
            .unwrap_or_default();
        let text = format!(
            "{runtime_line}[gateway]\nlisten = [\"127.0.0.1:0\"]\n[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
            testapp_command(&[])
        );
        let p = Project::new(&text);
        assert_eq!(p.verb(&["start"]).code, 0);
        std::fs::write(p.config(), format!("{text}\n[apps.broken\n")).unwrap();
        let status = p.verb(&["status"]);
        assert_eq!(status.code, 0, "{status:?}");
        assert!(status.stderr.contains("config has errors"), "{status:?}");
        assert!(status.stderr.contains("is running for it"), "{status:?}");
        let stop = p.verb(&["stop"]);
        assert_eq!(stop.code, 0, "{stop:?}");
        assert_eq!(p.verb(&["status"]).code, 3);
    }
}

#[test]
fn a_short_admin_token_is_a_config_error_with_its_position() {
    let p = Project::new("[admin]\ntokens = [\"short\"]\n");
    let out = p.verb(&["check"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("harbormaster.toml:2:") || out.stderr.contains("harbormaster.toml:2:"),
        "{out:?}"
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("at least 16 characters"),
        "{out:?}"
    );
}
