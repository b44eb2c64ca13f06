//! Building an instance's process: argv or `/bin/sh -c`, working dir,
//! environment, its own process group, and death with harbormaster.

use std::ffi::OsString;
use std::process::Stdio;

use crate::config::{AppName, Command, ManagedApp};

/// What differs between two starts of one app.
pub struct SpawnSpec<'a> {
    pub app: &'a AppName,
    pub managed: &'a ManagedApp,
    pub port: u16,
    /// `HARBORMASTER_INSTANCE`: unique per start.
    pub instance_id: &'a str,
}

/// The command for one start. stdin is null, stdout/stderr are piped.
pub fn command(spec: &SpawnSpec<'_>) -> Result<tokio::process::Command, String> {
    let port = spec.port.to_string();
    let mut cmd = match &spec.managed.command {
        Command::Argv(argv) => {
            let argv: Vec<String> = argv.iter().map(|a| a.replace("{port}", &port)).collect();
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
        Command::Shell(line) => {
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c").arg(line.replace("{port}", &port));
            cmd
        }
    };
    cmd.current_dir(&spec.managed.working_dir)
        .envs(environment(spec)?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: one signal reaches everything the instance starts.
        .process_group(0)
        .kill_on_drop(false);
    die_with_parent(&mut cmd, spec.managed.stop.signal);
    Ok(cmd)
}

/// The child's environment on top of harbormaster's own: `env_file`, then
/// `env`, then the variables harbormaster sets itself.
fn environment(spec: &SpawnSpec<'_>) -> Result<Vec<(OsString, OsString)>, String> {
    let mut vars = Vec::new();
    if let Some(file) = &spec.managed.env_file {
        let iter = dotenvy::from_path_iter(file)
            .map_err(|e| format!("cannot read env_file {}: {e}", file.display()))?;
        for item in iter {
            let (k, v) = item.map_err(|e| format!("invalid env_file {}: {e}", file.display()))?;
            vars.push((k.into(), v.into()));
        }
    }
    for (k, v) in &spec.managed.env {
        vars.push((k.into(), v.into()));
    }
    vars.push(("PORT".into(), spec.port.to_string().into()));
    vars.push(("HARBORMASTER_APP".into(), spec.app.as_str().into()));
    vars.push(("HARBORMASTER_INSTANCE".into(), spec.instance_id.into()));
    Ok(vars)
}

/// `PR_SET_PDEATHSIG`: the child gets its `stop.signal` when harbormaster
/// dies, even by SIGKILL (the guard process then finishes the stop ladder,
/// see `guard.rs`). The kernel ties this to the *thread* that forked, so
/// spawns must happen on long-lived runtime threads, never inside
/// `spawn_blocking`.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut tokio::process::Command, signal: nix::sys::signal::Signal) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec in the child and only
    // makes two async-signal-safe syscalls (prctl, getppid); it allocates
    // nothing and takes no locks. A measured need: there is no safe API for
    // a pre-exec prctl, and orphaned children are the bug this product removes.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            // harbormaster died before prctl took effect: do not run orphaned.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("harbormaster exited during spawn"));
            }
            Ok(())
        });
    }
}
