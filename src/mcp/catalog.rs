//! Exposed names: `SERVER` + separator + upstream name, for tools, prompts
//! and resource URIs. Pure, so naming rules are tested on their own.
//!
//! Server names never contain the separator (validated), so splitting at the
//! first separator is unambiguous even when a tool's own name contains it.

use serde_json::Value;

/// `SERVER__TOOL`.
pub fn expose(server: &str, sep: &str, name: &str) -> String {
    format!("{server}{sep}{name}")
}

/// `SERVER__TOOL` → (`SERVER`, `TOOL`).
pub fn split<'a>(exposed: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let (server, name) = exposed.split_once(sep)?;
    (!server.is_empty() && !name.is_empty()).then_some((server, name))
}

/// Resource URIs are namespaced as `hm://SERVER/` + the upstream URI,
/// so any scheme round-trips and clients can still read them.
pub fn expose_uri(server: &str, uri: &str) -> String {
    format!("hm://{server}/{uri}")
}

pub fn split_uri(exposed: &str) -> Option<(&str, &str)> {
    exposed.strip_prefix("hm://")?.split_once('/')
}

/// Whether upstream tool `name` passes a server's `tools` allow-list.
pub fn allowed(allow: &[String], name: &str) -> bool {
    allow.is_empty() || allow.iter().any(|a| a == name)
}

/// Upstream list items (tools or prompts) renamed for clients: `name`
/// becomes `SERVER__name`, the rest is kept as the server wrote it.
pub fn rename_items(items: &[Value], server: &str, sep: &str, allow: &[String]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|item| {
            let name = item.get("name")?.as_str()?;
            if !allowed(allow, name) {
                return None;
            }
            let mut item = item.clone();
            item["name"] = Value::String(expose(server, sep, name));
            Some(item)
        })
        .collect()
}

/// Upstream resources (or templates, with `key` = `uriTemplate`) renamed.
pub fn rename_resources(items: &[Value], server: &str, key: &str) -> Vec<Value> {
    items
        .iter()
        .filter_map(|item| {
            let uri = item.get(key)?.as_str()?;
            let mut item = item.clone();
            item[key] = Value::String(expose_uri(server, uri));
            Some(item)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_split_at_the_first_separator() {
        assert_eq!(expose("everything", "__", "echo"), "everything__echo");
        assert_eq!(split("a__b__c", "__"), Some(("a", "b__c")));
        assert_eq!(split("noseparator", "__"), None);
        assert_eq!(split("__x", "__"), None);
        assert_eq!(split("x__", "__"), None);
    }

    #[test]
    fn uris_round_trip() {
        let e = expose_uri("files", "file:///tmp/a b");
        assert_eq!(split_uri(&e), Some(("files", "file:///tmp/a b")));
    }

    #[test]
    fn the_allow_list_filters_and_names_are_prefixed() {
        let tools = [json!({"name": "echo", "x": 1}), json!({"name": "add"})];
        let all = rename_items(&tools, "s", "__", &[]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], json!({"name": "s__echo", "x": 1}));
        let some = rename_items(&tools, "s", "__", &["add".into()]);
        assert_eq!(some, vec![json!({"name": "s__add"})]);
    }
}
