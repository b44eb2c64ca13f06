//! From text to [`RawConfig`]: TOML syntax, `${NAME}` interpolation, and serde
//! type checks — collecting every error instead of stopping at the first.
//!
//! serde stops at the first problem in a document. To report all of them we
//! deserialize, and when it fails we find the entry the error points at,
//! report it, remove it from the spanned tree and try again. Every retry
//! removes one entry, so the loop ends; removed keys are remembered so that
//! validation does not also complain that they are missing.

use std::collections::HashSet;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::error::{did_you_mean, Reporter};
use super::raw::RawConfig;

/// A bound on retries, so a document with thousands of errors stays cheap.
const MAX_TYPE_ERRORS: usize = 100;

pub(crate) struct Parsed {
    pub raw: RawConfig,
    /// Key paths removed because their value was wrong (already reported).
    pub dropped: HashSet<String>,
}

pub(crate) fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    rep: &mut Reporter<'_>,
) -> Option<Parsed> {
    let (mut root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
            rep.error(
                e.span().unwrap_or(0..0),
                "",
                format!("TOML syntax error: {message}"),
                Some(
                    "fix the TOML syntax here (strings need quotes, tables need [brackets])".into(),
                ),
            );
        }
        return None;
    }
    interpolate_table(root.get_mut(), "", env, rep);

    let mut dropped = HashSet::new();
    for _ in 0..MAX_TYPE_ERRORS {
        let doc = Spanned::new(root.span(), DeValue::Table(root.get_ref().clone()));
        let err = match RawConfig::deserialize(ValueDeserializer::from(doc)) {
            Ok(raw) => return Some(Parsed { raw, dropped }),
            Err(err) => err,
        };
        let span = err.span().unwrap_or(0..0);
        let Some(path) = remove_entry_at(root.get_mut(), span.start) else {
            let (message, hint) = describe(err.message(), "");
            rep.error(span, "", message, hint);
            return None;
        };
        let key = render(&path);
        let (message, hint) = describe(err.message(), &key);
        rep.error(span, key.clone(), message, hint);
        dropped.insert(key);
    }
    None
}

#[derive(Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && (offset < span.end || span.is_empty() && offset == span.start)
}

/// Removes the innermost entry (table key or array element) at `offset` and
/// returns its path.
fn remove_entry_at(table: &mut DeTable<'_>, offset: usize) -> Option<Vec<Seg>> {
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        if let Some(mut sub) = remove_inside(value, offset) {
            sub.insert(0, Seg::Key(key.get_ref().to_string()));
            return Some(sub);
        }
        if hit.is_none() && (contains(&key.span(), offset) || contains(&value.span(), offset)) {
            hit = Some(key.get_ref().to_string());
        }
    }
    let key = hit?;
    table.remove(key.as_str());
    Some(vec![Seg::Key(key)])
}

fn remove_inside(value: &mut Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<Seg>> {
    match value.get_mut() {
        DeValue::Table(t) => remove_entry_at(t, offset),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if let Some(mut sub) = remove_inside(item, offset) {
                    sub.insert(0, Seg::Index(i));
                    return Some(sub);
                }
            }
            let i = items.iter().position(|v| contains(&v.span(), offset))?;
            let kept = std::mem::replace(items, toml::de::DeArray::new())
                .into_iter()
                .enumerate()
                .filter_map(|(j, v)| (j != i).then_some(v))
                .collect();
            *items = kept;
            Some(vec![Seg::Index(i)])
        }
        _ => None,
    }
}

/// Turns serde's message into ours: what is wrong, and how to fix it.
fn describe(message: &str, key: &str) -> (String, Option<String>) {
    let message = message.lines().next().unwrap_or(message).trim();
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if message.starts_with("unknown field") {
        let word = quoted.first().copied().unwrap_or("?");
        let valid = &quoted[1.min(quoted.len())..];
        let hint = match did_you_mean(word, valid.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if valid.is_empty() => "remove it".to_string(),
            None => format!("remove it; valid keys here: {}", valid.join(", ")),
        };
        return (format!("unknown key `{word}`"), Some(hint));
    }
    if message.starts_with("unknown variant") {
        let word = quoted.first().copied().unwrap_or("?");
        let valid = &quoted[1.min(quoted.len())..];
        let hint = match did_you_mean(word, valid.iter().copied()) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => format!("use one of: {}", quote_all(valid)),
        };
        return (format!("unknown value \"{word}\""), Some(hint));
    }
    if message.contains("untagged enum RawCommand") || key.ends_with(".command") {
        return (
            "command must be an array of strings".into(),
            Some(
                r#"write command = ["program", "arg"], or a single string with shell = true"#
                    .into(),
            ),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let expected = plain_type(expected);
            return (
                format!("wrong type: found {found}, expected {expected}"),
                Some(format!("write {expected} here")),
            );
        }
    }
    (message.to_string(), None)
}

fn quote_all(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// serde names Rust types; users write TOML.
fn plain_type(expected: &str) -> &str {
    match expected {
        "i64" | "u64" | "i32" | "u32" | "u16" => "an integer",
        "f64" | "f32" => "a number",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "an array",
        "a map" => "a table",
        other => other,
    }
}

/// Replaces `${NAME}` in every string value (not in keys) with the variable's value.
fn interpolate_table(
    table: &mut DeTable<'_>,
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
    rep: &mut Reporter<'_>,
) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        interpolate_value(value, &path, env, rep);
    }
}

fn interpolate_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    rep: &mut Reporter<'_>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains("${") => {
            let replaced = substitute(s, env, |message, hint| {
                rep.error(span.clone(), path, message, Some(hint))
            });
            *s = replaced.into();
        }
        DeValue::Table(t) => interpolate_table(t, path, env, rep),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{i}]"), env, rep);
            }
        }
        _ => {}
    }
}

/// `${NAME}` → the value of NAME; problems go to `report(message, hint)`.
pub(crate) fn substitute(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
    mut report: impl FnMut(String, String),
) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            report(
                "unterminated `${` in string".into(),
                "close it as ${NAME}".into(),
            );
            return out;
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            report(
                format!("`${{{name}}}` is not a valid environment variable reference"),
                "use ${NAME} with letters, digits and underscores".into(),
            );
        } else {
            match env(name) {
                Some(v) => out.push_str(&v),
                None => report(
                    format!("environment variable `{name}` is not set"),
                    format!("set {name} in harbormaster's environment, or remove ${{{name}}}"),
                ),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
