//! Access control for MCP tools: roles hold `allow` and `deny` globs over
//! exposed tool names (`everything__*`); a client may call a tool when one
//! of its roles allows it and none denies it (deny wins). A client without
//! roles (or not configured, like the stdio caller) is not restricted.
//! `tools/list` shows a caller only what it may call ([`Access::visible`]).

use std::collections::HashMap;

use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
struct Role {
    allow: GlobSet,
    deny: GlobSet,
}

#[derive(Debug, Clone, Default)]
pub struct Access {
    roles: HashMap<String, Role>,
    /// Client → its roles (unknown roles were refused when built).
    clients: HashMap<String, Vec<String>>,
}

/// A glob that does not parse, or a client naming a role that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("role `{role}`: invalid glob \"{glob}\": {why}")]
    Glob {
        role: String,
        glob: String,
        why: String,
    },
    #[error("client `{client}` names unknown role `{role}`")]
    UnknownRole { client: String, role: String },
}

fn globs(role: &str, list: &[String]) -> Result<GlobSet, AccessError> {
    let mut set = GlobSetBuilder::new();
    for g in list {
        let glob = Glob::new(g).map_err(|e| AccessError::Glob {
            role: role.into(),
            glob: g.clone(),
            why: e.kind().to_string(),
        })?;
        set.add(glob);
    }
    set.build().map_err(|e| AccessError::Glob {
        role: role.into(),
        glob: list.join(", "),
        why: e.to_string(),
    })
}

impl Access {
    /// `roles`: (name, allow, deny); `clients`: (name, roles).
    pub fn new(
        roles: impl IntoIterator<Item = (String, Vec<String>, Vec<String>)>,
        clients: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Result<Self, AccessError> {
        let mut built = HashMap::new();
        for (name, allow, deny) in roles {
            let role = Role {
                allow: globs(&name, &allow)?,
                deny: globs(&name, &deny)?,
            };
            built.insert(name, role);
        }
        let mut by_client = HashMap::new();
        for (client, roles) in clients {
            if let Some(role) = roles.iter().find(|r| !built.contains_key(*r)) {
                return Err(AccessError::UnknownRole {
                    client,
                    role: role.clone(),
                });
            }
            by_client.insert(client, roles);
        }
        Ok(Self {
            roles: built,
            clients: by_client,
        })
    }

    /// Whether `client` may call `tool` (the exposed name).
    pub fn allows(&self, client: &str, tool: &str) -> bool {
        let Some(names) = self.clients.get(client).filter(|r| !r.is_empty()) else {
            return true;
        };
        let roles = names.iter().filter_map(|n| self.roles.get(n));
        let mut allowed = false;
        for role in roles {
            if role.deny.is_match(tool) {
                return false;
            }
            allowed |= role.allow.is_match(tool);
        }
        allowed
    }

    /// The tools `client` may call, in the given order (for `tools/list`).
    pub fn visible<'t>(
        &self,
        client: &str,
        tools: impl IntoIterator<Item = &'t str>,
    ) -> Vec<&'t str> {
        tools
            .into_iter()
            .filter(|t| self.allows(client, t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn access() -> Access {
        Access::new(
            [
                (
                    "dev".to_string(),
                    s(&["everything__*", "remote__search"]),
                    s(&["everything__get-env"]),
                ),
                ("ops".to_string(), s(&["*"]), s(&[])),
                ("no-env".to_string(), s(&[]), s(&["*__get-env"])),
            ],
            [
                ("alice".to_string(), s(&["dev"])),
                ("root".to_string(), s(&["ops"])),
                ("carol".to_string(), s(&["ops", "no-env"])),
                ("dave".to_string(), s(&[])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn allow_globs_and_deny_wins() {
        let a = access();
        assert!(a.allows("alice", "everything__echo"));
        assert!(a.allows("alice", "remote__search"));
        assert!(
            !a.allows("alice", "remote__delete"),
            "not allowed by any role"
        );
        assert!(
            !a.allows("alice", "everything__get-env"),
            "denied in the same role"
        );
        assert!(a.allows("root", "everything__get-env"));
        // Deny in one role beats allow in another.
        assert!(!a.allows("carol", "everything__get-env"));
        assert!(a.allows("carol", "remote__delete"));
        // No roles, or not configured: unrestricted.
        assert!(a.allows("dave", "remote__delete"));
        assert!(a.allows("local", "remote__delete"));
    }

    #[test]
    fn two_clients_see_different_lists() {
        let a = access();
        let tools = [
            "everything__echo",
            "everything__get-env",
            "remote__search",
            "remote__delete",
        ];
        assert_eq!(
            a.visible("alice", tools),
            vec!["everything__echo", "remote__search"]
        );
        assert_eq!(a.visible("root", tools), tools.to_vec());
    }

    #[test]
    fn bad_globs_and_unknown_roles_are_refused() {
        let err = Access::new([("r".to_string(), s(&["a[b"]), s(&[]))], []).unwrap_err();
        assert!(matches!(err, AccessError::Glob { .. }), "{err}");
        let err = Access::new([], [("alice".to_string(), s(&["ghost"]))]).unwrap_err();
        assert_eq!(err.to_string(), "client `alice` names unknown role `ghost`");
    }
}
