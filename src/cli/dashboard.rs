//! `harbormaster dashboard [--open]`: asks the running harbormaster over
//! `admin.sock` for a one-time login URL (valid 60 s, single use) and
//! prints it, or opens it in the desktop's browser.

use std::process::ExitCode;

use super::client;
use super::control::{running, ADMIN_TIMEOUT};
use super::Cli;
use crate::admin::api::DashboardLogin;

pub fn dashboard(cli: &Cli, open: bool) -> ExitCode {
    client::block_on(async {
        let (dir, info) = match running(cli).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        let login = match client::request(&dir, "POST", "/v1/dashboard/login", ADMIN_TIMEOUT).await
        {
            Ok((200, body)) => match serde_json::from_str::<DashboardLogin>(&body) {
                Ok(login) => login,
                Err(e) => {
                    eprintln!("dashboard: unexpected answer ({e}): {body}");
                    return ExitCode::FAILURE;
                }
            },
            Ok((code, body)) => {
                eprintln!("dashboard: {code} {body}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("dashboard: {e}");
                return ExitCode::FAILURE;
            }
        };
        let url = format!("{}{}", info.admin.trim_end_matches('/'), login.path);
        println!("{url}");
        eprintln!(
            "(works once, within {} s; the session it starts lasts 12 h)",
            login.expires_in_s
        );
        if open {
            let opener = if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            };
            if let Err(e) = std::process::Command::new(opener)
                .arg(&url)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            {
                eprintln!("cannot run {opener} ({e}); open the URL above yourself");
                return ExitCode::FAILURE;
            }
        }
        ExitCode::SUCCESS
    })
}
