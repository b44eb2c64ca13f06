//! A configuration file written by someone else must never panic the loader:
//! arbitrary strings and mutated valid configs either load or produce errors
//! whose positions lie inside the text.

use std::path::Path;

use proptest::prelude::*;

const REFERENCE: &str = include_str!("../examples/reference.toml");

fn check(text: &str) {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fuzz.toml"));
    let lines = text.split('\n').count();
    if let Err(errors) = harbormaster::config::from_str_with_env(text, path, &|_| None) {
        assert!(!errors.is_empty());
        for e in errors.iter() {
            assert!(
                e.line >= 1 && e.line <= lines,
                "line {} of {lines}: {e}",
                e.line
            );
            assert!(e.col >= 1, "{e}");
            assert!(!e.message.is_empty());
        }
    }
}

/// Pieces that steer mutations towards deep, interesting parse states.
const FRAGMENTS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    "\"",
    "=",
    ",",
    "\n",
    "[apps.x]",
    "[[apps]]",
    "routes = []",
    "command = 1",
    "port = 99999",
    "instances = -1",
    "\"${",
    "${X}",
    "}",
    "\"1ms\"",
    "tcp = true",
    "http = \"/\"",
    "depends_on = { x = \"ready\" }",
    "# ",
    "\u{e9}",
    "'''",
    "=[{}]",
    "1e400",
    "0x",
    "inf",
    ".",
    "*.",
    "[apps.web.restart]",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: usize },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut s = text.to_string();
    match *m {
        Mutation::Delete { at, len } => {
            let start = floor_char_boundary(&s, at % (s.len() + 1));
            let end = floor_char_boundary(&s, start + len);
            s.replace_range(start..end, "");
        }
        Mutation::Insert { at, fragment } => {
            let at = floor_char_boundary(&s, at % (s.len() + 1));
            s.insert_str(at, FRAGMENTS[fragment % FRAGMENTS.len()]);
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let l = lines[line % lines.len()];
            lines.insert(line % lines.len(), l);
            s = lines.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = s.split('\n').collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            s = lines.join("\n");
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in "\\PC*") {
        check(&text);
    }

    #[test]
    fn toml_like_strings_never_panic(text in "([\\[\\]{}=,\"a-z_.0-9 \\n$]|apps|routes|command){0,200}") {
        check(&text);
    }

    #[test]
    fn mutated_reference_configs_never_panic(mutations in proptest::collection::vec(mutation(), 1..6)) {
        let text = mutations.iter().fold(REFERENCE.to_string(), |t, m| apply(&t, m));
        check(&text);
    }
}
