//! The documents point at things that exist: every section a document sends the reader to
//! (`see "Keys"`), every command it names (`palisade slashing-protection repair`,
//! `palisade-bench failover`, `deploy/ha-local.sh smoke`) and every option of the README's
//! options table.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<(String, String)> {
    let mut docs = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        docs.push(e.unwrap().path());
    }
    docs.into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Each `"..."` that follows `see ` or `README, ` names a heading or a bold paragraph opening.
#[test]
fn sections_referred_to_exist() {
    let docs = documents();
    let anchors: Vec<String> = docs
        .iter()
        .flat_map(|(_, text)| text.lines())
        .filter_map(|l| {
            let t = l.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == ' ');
            t.strip_prefix('#')
                .map(|h| h.trim_start_matches('#').trim().to_string())
                .or_else(|| t.strip_prefix("**").map(|b| b.split("**").next().unwrap().to_string()))
        })
        .collect();
    let mut checked = 0;
    for (name, text) in &docs {
        for lead in ["see \"", "See \"", "README, \""] {
            for piece in text.split(lead).skip(1) {
                let target = piece.split('"').next().unwrap();
                assert!(
                    anchors.iter().any(|a| a.starts_with(target)),
                    "{name} refers to \"{target}\", which no heading or bold paragraph of the docs opens with"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} references found");
}

fn runs(bin: &Path, args: &[&str]) -> bool {
    Command::new(bin).args(args).output().is_ok_and(|o| o.status.success())
}

/// Every `palisade ...` and `palisade-bench ...` command the docs name answers `--help`, and
/// every `deploy/*.sh` command is one its script takes.
#[test]
fn commands_named_exist() {
    let palisade = PathBuf::from(env!("CARGO_BIN_EXE_palisade"));
    let bench = palisade.with_file_name("palisade-bench");
    let mut checked = 0;
    for (name, text) in documents() {
        for line in text.lines() {
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')')
                .filter(|w| !w.is_empty())
                .collect();
            for (i, w) in words.iter().enumerate() {
                let next = |k: usize| words.get(i + k).copied().unwrap_or("");
                let is_word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-');
                match *w {
                    "palisade" if next(1) == "slashing-protection" && is_word(next(2)) => {
                        assert!(
                            runs(&palisade, &["slashing-protection", next(2), "--help"]),
                            "{name}: `palisade slashing-protection {}` is not a command",
                            next(2)
                        );
                        checked += 1;
                    }
                    "palisade" if next(1) == "serve" => {
                        assert!(runs(&palisade, &["serve", "--help"]));
                        checked += 1;
                    }
                    "palisade-bench"
                        if is_word(next(1))
                            && bench.exists()
                            && ![
                                "mode", "modes", "binary", "is", "and", "runs", "prints", "drives", "itself",
                            ]
                            .contains(&next(1)) =>
                    {
                        assert!(
                            runs(&bench, &[next(1), "--help"]),
                            "{name}: `palisade-bench {}` is not a mode",
                            next(1)
                        );
                        checked += 1;
                    }
                    // As a command: first on its line (a code block), or after `&&`.
                    w if w.starts_with("deploy/")
                        && w.ends_with(".sh")
                        && is_word(next(1))
                        && (i == 0 || words[i - 1] == "&&") =>
                    {
                        let script =
                            std::fs::read_to_string(root().join(w)).unwrap_or_else(|_| panic!("{name}: no {w}"));
                        let usage = script
                            .lines()
                            .rev()
                            .find(|l| l.contains("usage: $0"))
                            .unwrap_or_default();
                        if !["and", "or", "stands", "runs", "uses", "is"].contains(&next(1)) {
                            assert!(
                                usage.contains(next(1)),
                                "{name}: `{w} {}` is not one of its commands ({usage})",
                                next(1)
                            );
                            checked += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} commands found");
}

/// Every option in the README's options table is one `palisade serve` takes.
#[test]
fn options_in_the_table_exist() {
    let help = testkit::server::serve_help();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split("## Options")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut checked = 0;
    for line in table.lines().filter(|l| l.starts_with("| `--")) {
        let option = line[3..].split([' ', '`']).next().unwrap();
        assert!(
            help.contains(&format!("{option} "))
                || help.contains(&format!("{option}\n"))
                || help.contains(&format!("{option}=")),
            "README lists {option}, which `palisade serve` does not take"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} options found");
}
