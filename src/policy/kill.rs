//! Kill switches for MCP `tools/call`: one for everything (`*`), one per
//! server (`SERVER`), one per tool (`SERVER__TOOL`). They are independent:
//! engaging `*` and clearing it leaves a server switch as it was. Set from
//! config at start, engaged and cleared at runtime; a change holds for the
//! next call (calls in flight finish).

use std::collections::BTreeSet;
use std::sync::RwLock;

/// What a switch names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    All,
    Server(String),
    /// The exposed name, `SERVER__TOOL`.
    Tool(String),
}

impl Target {
    /// `*`, `SERVER` or `SERVER<sep>TOOL`; `servers` are the known servers.
    pub fn parse(text: &str, separator: &str, servers: &BTreeSet<String>) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::All);
        }
        let server = text.split_once(separator).map_or(text, |(s, _)| s);
        if !servers.contains(server) {
            let known: Vec<&str> = servers.iter().map(String::as_str).collect();
            return Err(format!(
                "unknown MCP server `{server}` in kill target \"{text}\"; use \"*\", a server ({}) or SERVER{separator}TOOL",
                known.join(", ")
            ));
        }
        Ok(if server.len() == text.len() {
            Self::Server(text.into())
        } else {
            Self::Tool(text.into())
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Self::All => "*",
            Self::Server(s) | Self::Tool(s) => s,
        }
    }
}

/// The engaged switches; shared by every front.
#[derive(Debug, Default)]
pub struct KillSwitches {
    engaged: RwLock<BTreeSet<Target>>,
}

impl KillSwitches {
    pub fn new(initial: impl IntoIterator<Item = Target>) -> Self {
        Self {
            engaged: RwLock::new(initial.into_iter().collect()),
        }
    }

    /// Engages `target`; true if it was not engaged yet.
    pub fn engage(&self, target: Target) -> bool {
        self.write().insert(target)
    }

    /// Clears exactly `target` (others stay); true if it was engaged.
    pub fn clear(&self, target: &Target) -> bool {
        self.write().remove(target)
    }

    /// The engaged switches, by name (`*`, servers, tools).
    pub fn engaged(&self) -> Vec<String> {
        let set = self.engaged.read().unwrap_or_else(|p| p.into_inner());
        set.iter().map(|t| t.name().to_string()).collect()
    }

    /// Every engaged switch.
    pub fn targets(&self) -> Vec<Target> {
        let set = self.engaged.read().unwrap_or_else(|p| p.into_inner());
        set.iter().cloned().collect()
    }

    /// The switch that stops a call to `tool` (exposed name) on `server`, if any.
    pub fn stopping(&self, server: &str, tool: &str) -> Option<Target> {
        let set = self.engaged.read().unwrap_or_else(|p| p.into_inner());
        [
            Target::All,
            Target::Server(server.into()),
            Target::Tool(tool.into()),
        ]
        .into_iter()
        .find(|t| set.contains(t))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<Target>> {
        self.engaged.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> BTreeSet<String> {
        ["everything", "remote"].map(String::from).into()
    }

    #[test]
    fn targets_parse_all_server_and_tool() {
        let s = servers();
        assert_eq!(Target::parse("*", "__", &s), Ok(Target::All));
        assert_eq!(
            Target::parse("remote", "__", &s),
            Ok(Target::Server("remote".into()))
        );
        assert_eq!(
            Target::parse("everything__echo", "__", &s),
            Ok(Target::Tool("everything__echo".into()))
        );
        let err = Target::parse("nope__echo", "__", &s).unwrap_err();
        assert!(err.contains("unknown MCP server `nope`"), "{err}");
    }

    #[test]
    fn switches_are_independent() {
        let k = KillSwitches::default();
        assert_eq!(k.stopping("everything", "everything__echo"), None);
        k.engage(Target::Tool("everything__echo".into()));
        assert_eq!(
            k.stopping("everything", "everything__echo"),
            Some(Target::Tool("everything__echo".into()))
        );
        assert_eq!(
            k.stopping("everything", "everything__add"),
            None,
            "other tools stay callable"
        );
        assert_eq!(k.stopping("remote", "remote__search"), None);
        k.engage(Target::Server("remote".into()));
        assert!(k.stopping("remote", "remote__search").is_some());
        assert_eq!(
            k.stopping("everything", "everything__add"),
            None,
            "other servers stay callable"
        );
        k.engage(Target::All);
        assert_eq!(
            k.stopping("everything", "everything__add"),
            Some(Target::All)
        );
        // Clearing `*` leaves the server and tool switches engaged.
        assert!(k.clear(&Target::All));
        assert!(k.stopping("remote", "remote__search").is_some());
        assert!(k.stopping("everything", "everything__echo").is_some());
        assert_eq!(k.stopping("everything", "everything__add"), None);
        assert_eq!(k.engaged(), vec!["remote", "everything__echo"]);
        assert!(!k.clear(&Target::All), "clearing twice changes nothing");
    }
}
