//! The difference between the running config and a new one: the reload plan.
//!
//! Pure, so the decision "what must change, and how" is tested on its own.
//! An app whose processes are unaffected (routes, balance, required,
//! dependencies, circuit breaker, probes) changes in place; any other change
//! (command, env, instances, port, restart or stop settings) replaces its
//! instances blue-green.

use std::net::SocketAddr;

use serde::Serialize;

use super::model::{AppConfig, AppKind, AppName, Config};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub added: Vec<AppName>,
    pub removed: Vec<AppName>,
    /// New instances replace the old ones.
    pub replaced: Vec<AppName>,
    /// Only routing settings changed: no process is touched.
    pub in_place: Vec<AppName>,
    pub unchanged: Vec<AppName>,
    pub listeners_added: Vec<SocketAddr>,
    pub listeners_removed: Vec<SocketAddr>,
    /// `[gateway.tls] listen` addresses added and removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_listeners_added: Vec<SocketAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_listeners_removed: Vec<SocketAddr>,
    /// `[gateway.tls] certificates` or `min_version` changed (applied to new
    /// handshakes; open connections keep theirs).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls_changed: bool,
    /// Changed settings this reload cannot apply (a restart of harbormaster would).
    pub not_applied: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.replaced.is_empty()
            && self.in_place.is_empty()
            && self.listeners_added.is_empty()
            && self.listeners_removed.is_empty()
            && self.tls_listeners_added.is_empty()
            && self.tls_listeners_removed.is_empty()
            && !self.tls_changed
    }
}

impl Serialize for AppName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether two versions of an app run the same processes (they may differ in
/// routes, balance, breaker, dependencies and probes, which apply in place).
fn same_processes(old: &AppConfig, new: &AppConfig) -> bool {
    let without_probes = |app: &AppConfig| match &app.kind {
        AppKind::Managed(m) => {
            let mut m = (**m).clone();
            m.startup = None;
            m.liveness = None;
            AppKind::Managed(Box::new(m))
        }
        other => other.clone(),
    };
    without_probes(old) == without_probes(new)
}

pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    for (name, app) in &new.apps {
        match old.apps.get(name) {
            None => plan.added.push(name.clone()),
            Some(prev) if prev == app => plan.unchanged.push(name.clone()),
            Some(prev) if same_processes(prev, app) => plan.in_place.push(name.clone()),
            Some(_) => plan.replaced.push(name.clone()),
        }
    }
    plan.removed = old
        .apps
        .keys()
        .filter(|n| !new.apps.contains_key(*n))
        .cloned()
        .collect();
    let (o, n) = (&old.gateway, &new.gateway);
    plan.listeners_added = n
        .listen
        .iter()
        .filter(|a| !o.listen.contains(a))
        .copied()
        .collect();
    plan.listeners_removed = o
        .listen
        .iter()
        .filter(|a| !n.listen.contains(a))
        .copied()
        .collect();
    let mut o_rest = o.clone();
    o_rest.listen = n.listen.clone();
    let tls_listen = |c: &Config| {
        c.gateway
            .tls
            .as_ref()
            .map_or(Vec::new(), |t| t.listen.clone())
    };
    let (o_tls, n_tls) = (tls_listen(old), tls_listen(new));
    plan.tls_listeners_added = n_tls
        .iter()
        .filter(|a| !o_tls.contains(a))
        .copied()
        .collect();
    plan.tls_listeners_removed = o_tls
        .iter()
        .filter(|a| !n_tls.contains(a))
        .copied()
        .collect();
    let certs = |t: &Option<super::tls::TlsConfig>| {
        t.as_ref().map(|t| (t.certificates.clone(), t.min_version))
    };
    plan.tls_changed = certs(&o.tls) != certs(&n.tls);
    o_rest.tls = n.tls.clone();
    if o_rest != *n {
        plan.not_applied
            .push("[gateway] settings other than listen".into());
    }
    // `[admin] tokens` apply at once: the admin API reads the current config.
    if old.admin.listen != new.admin.listen {
        plan.not_applied.push("[admin] listen".into());
    }
    if old.runtime != new.runtime {
        plan.not_applied.push("[runtime] dir and state_dir".into());
    }
    // The writer keeps its database and queue until the next start.
    if old.audit != new.audit {
        plan.not_applied.push("[audit]".into());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/t.toml"));
        super::super::from_str_with_env(text, path, &|_| None).unwrap()
    }

    const BASE: &str = r#"
[gateway]
listen = ["127.0.0.1:8080"]
[apps.web]
routes = [{ path = "/" }]
command = ["web"]
[apps.api]
routes = [{ path = "/api" }]
command = ["api"]
[apps.old]
routes = [{ path = "/old" }]
upstreams = ["127.0.0.1:9"]
"#;

    fn names(v: &[AppName]) -> Vec<&str> {
        v.iter().map(|n| n.as_str()).collect()
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let p = plan(&config(BASE), &config(BASE));
        assert!(p.is_empty());
        assert_eq!(names(&p.unchanged), ["api", "old", "web"]);
    }

    #[test]
    fn classifies_every_app() {
        let new = BASE
            .replace(r#"command = ["api"]"#, "command = [\"api\", \"--v2\"]")
            .replace(
                r#"routes = [{ path = "/" }]"#,
                r#"routes = [{ path = "/" }, { host = "web.localhost" }]"#,
            )
            .replace(
                "[apps.old]\nroutes = [{ path = \"/old\" }]\nupstreams = [\"127.0.0.1:9\"]\n",
                "[apps.new]\nroutes = [{ path = \"/new\" }]\nupstreams = [\"127.0.0.1:10\"]\n",
            );
        let p = plan(&config(BASE), &config(&new));
        assert_eq!(names(&p.added), ["new"]);
        assert_eq!(names(&p.removed), ["old"]);
        assert_eq!(names(&p.replaced), ["api"]);
        assert_eq!(names(&p.in_place), ["web"]);
        assert!(p.unchanged.is_empty());
    }

    fn with(change: &str) -> Plan {
        let new = BASE.replace(
            "command = [\"web\"]",
            &format!("command = [\"web\"]\n{change}"),
        );
        plan(&config(BASE), &config(&new))
    }

    #[test]
    fn env_instances_and_stop_settings_replace_instances() {
        for change in [
            "env = { A = \"1\" }",
            "instances = 2",
            "[apps.web.stop]\ntimeout = \"1s\"",
        ] {
            assert_eq!(names(&with(change).replaced), ["web"], "{change}");
        }
    }

    #[test]
    fn probe_changes_apply_in_place() {
        for change in [
            "[apps.web.readiness]\nhttp = \"/\"",
            "[apps.web.liveness]\ntcp = true",
            "[apps.web.startup]\ntcp = true",
        ] {
            assert_eq!(names(&with(change).in_place), ["web"], "{change}");
        }
    }

    #[test]
    fn listeners_and_settings_it_cannot_apply() {
        let new = BASE.replace(
            r#"listen = ["127.0.0.1:8080"]"#,
            "listen = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\ndrain_timeout = \"5s\"",
        );
        let p = plan(&config(BASE), &config(&new));
        assert_eq!(
            p.listeners_added,
            ["127.0.0.1:8081".parse::<SocketAddr>().unwrap()]
        );
        assert!(p.listeners_removed.is_empty());
        assert_eq!(p.not_applied, ["[gateway] settings other than listen"]);
    }

    #[test]
    fn audit_changes_wait_for_the_next_start() {
        let p = plan(&config(BASE), &config(&format!("{BASE}\n[audit]\n")));
        assert_eq!(p.not_applied, ["[audit]"]);
    }
}
