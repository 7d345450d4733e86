//! The layering of `src/`, held: each room (a top-level module) imports only rooms below it,
//! so a sign request flows one way (commands -> http -> app -> protection / keys -> signing
//! -> consensus / network -> the leaves) and the import graph has no cycle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Rooms from the top down; a room may use the rooms of later layers only.
const LAYERS: &[&[&str]] = &[
    &["commands"],
    &["http"],
    &["app"],
    &["protection", "keys"],
    &["signing"],
    &["consensus", "network"],
    &["json", "fsutil", "process", "ratelimit", "types"],
];

fn layer_of(room: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&room))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The rooms a piece of code names through `crate::room` or `crate::{room, ...}`.
fn rooms_used(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group only: `crate::{a::{x, y}, b}` uses a and b.
            let (mut depth, mut name, mut expect_name) = (0, String::new(), true);
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    c if depth == 0 && expect_name && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ => {
                        if !name.is_empty() {
                            used.insert(std::mem::take(&mut name));
                            expect_name = false;
                        }
                    }
                }
            }
            if !name.is_empty() {
                used.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            used.insert(name);
        }
    }
    used
}

/// The file without its unit tests (they may reach anywhere).
fn without_tests(code: &str) -> &str {
    code.find("#[cfg(test)]").map_or(code, |i| &code[..i])
}

#[test]
fn every_room_imports_only_rooms_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut rooms_seen = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let room = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let room = room.trim_end_matches(".rs").to_string();
        if room == "lib" || room == "main" {
            continue;
        }
        rooms_seen.insert(room.clone());
        let Some(own) = layer_of(&room) else {
            violations.push(format!("{}: room `{room}` is in no layer of this test", rel.display()));
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        for used in rooms_used(without_tests(&code)) {
            if used == room || used == "self" || used == "super" {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l > own => {}
                Some(_) => violations.push(format!(
                    "{}: `{room}` uses `{used}`, which is not below it",
                    rel.display()
                )),
                None => violations.push(format!("{}: uses `crate::{used}`, a room in no layer", rel.display())),
            }
        }
    }
    assert!(violations.is_empty(), "layering broken:\n{}", violations.join("\n"));
    // The table names real rooms only (a renamed room must be renamed here too).
    for layer in LAYERS {
        for room in *layer {
            assert!(
                rooms_seen.contains(*room),
                "LAYERS names `{room}`, which src/ does not have"
            );
        }
    }
}

/// What each room uses, exactly: a new dependency (even one the layers allow) must be added
/// here on purpose, and one that is gone must be struck. `protection`, for one, knows nothing
/// of how requests are parsed or keys held.
const USES: &[(&str, &[&str])] = &[
    (
        "commands",
        &[
            "app",
            "fsutil",
            "http",
            "keys",
            "network",
            "protection",
            "signing",
            "types",
        ],
    ),
    (
        "http",
        &[
            "app",
            "consensus",
            "fsutil",
            "json",
            "protection",
            "ratelimit",
            "signing",
            "types",
        ],
    ),
    (
        "app",
        &[
            "consensus",
            "fsutil",
            "keys",
            "network",
            "process",
            "protection",
            "ratelimit",
            "signing",
            "types",
        ],
    ),
    ("protection", &["fsutil", "json", "types"]),
    ("keys", &["consensus", "fsutil", "json", "process", "signing", "types"]),
    ("signing", &["consensus", "json", "network", "types"]),
    ("consensus", &["types"]),
    ("network", &["types"]),
];

#[test]
fn every_room_uses_exactly_what_it_declares() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut actual: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let room = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let room = room.trim_end_matches(".rs").to_string();
        let code = std::fs::read_to_string(file).unwrap();
        let entry = actual.entry(room.clone()).or_default();
        for used in rooms_used(without_tests(&code)) {
            if used != room && used != "self" && used != "super" {
                entry.insert(used);
            }
        }
    }
    for (room, declared) in USES {
        let declared: BTreeSet<String> = declared.iter().map(|s| s.to_string()).collect();
        let used = actual.get(*room).cloned().unwrap_or_default();
        assert_eq!(
            used, declared,
            "`{room}` uses {used:?}, USES declares {declared:?}: update one of them"
        );
    }
}

/// No function in `src/` runs over 120 lines: a longer one is several steps that want names.
#[test]
fn no_function_is_longer_than_120_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for file in &files {
        let code = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = code.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "const fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p));
            // A declaration without a body, or a body on one line, is no long function.
            let opens = lines[i..]
                .iter()
                .map(|l| l.trim_end())
                .find(|l| l.ends_with('{') || l.ends_with(';'));
            if !is_fn || trimmed.ends_with('}') || opens.is_none_or(|l| l.ends_with(';')) {
                continue;
            }
            // Its end: the first line after it that closes at its own indentation.
            let end = lines[i + 1..]
                .iter()
                .position(|l| *l == format!("{indent}}}"))
                .map(|n| i + 1 + n);
            if let Some(end) = end
                && end - i + 1 > 120
            {
                long.push(format!("{}:{}: {} lines", file.display(), i + 1, end - i + 1));
            }
        }
    }
    assert!(long.is_empty(), "functions over 120 lines:\n{}", long.join("\n"));
}

#[test]
fn the_scanner_sees_both_import_forms() {
    let used = rooms_used("use crate::app::signer::Signer;\nuse crate::{json::parse_at, types::{Slot, Epoch}};");
    assert_eq!(used, BTreeSet::from(["app".to_string(), "json".into(), "types".into()]));
    assert!(
        without_tests("fn a() {}\n#[cfg(test)]\nmod tests { use crate::http; }")
            .find("http")
            .is_none()
    );
}
