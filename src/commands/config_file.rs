//! `--config-file FILE`: the options of the command line in a YAML file, as Web3Signer's.
//!
//! The file's keys are long option names (Palisade's or their Web3Signer aliases), at the top
//! or under the subcommand (`eth2.keystores-path`, `serve.keystores-path`, or nested maps).
//! Each becomes a command-line argument, unless the command line or the option's
//! environment variable sets it: command line > environment > file > default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};
use serde_yaml_ng::Value;

/// Why a configuration file cannot be used; every one names the file, and the key when one
/// is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("--config-file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--config-file {}: not YAML: {reason}", path.display())]
    Yaml { path: PathBuf, reason: String },
    #[error("--config-file {}: {key}: {reason}", path.display())]
    Key { path: PathBuf, key: String, reason: String },
    #[error("--config-file needs a file name")]
    Missing,
}

/// Subcommand prefixes a file may put before a key: Web3Signer's `eth2.` and Palisade's own.
const PREFIXES: [&str; 3] = ["eth2.", "serve.", "slashing-protection."];

/// Keys Palisade accepts for a Web3Signer file's sake when they ask for what Palisade always
/// does, and refuses (with the reason) when they ask for something else.
const ALWAYS_ON: [(&str, &str); 4] = [
    (
        "slashing-protection-enabled",
        "Palisade never signs without slashing protection",
    ),
    (
        "key-manager-api-enabled",
        "the Key Manager API is always served (behind the admin token)",
    ),
    (
        "enable-key-manager-api",
        "the Key Manager API is always served (behind the admin token)",
    ),
    ("access-logs-enabled", "requests are always logged (at debug)"),
];

/// `args` with the file's options added (and `--config-file` itself taken out). `command`
/// is the clap description of the command line, for the option names, aliases and
/// environment variables.
pub fn expand(args: Vec<OsString>, command: &Command) -> Result<Vec<OsString>, ConfigFileError> {
    let (mut args, path) = take_config_file(args)?;
    let Some(path) = path.or_else(|| std::env::var_os("PALISADE_CONFIG_FILE").map(PathBuf::from)) else {
        return Ok(args);
    };
    let entries = read(&path)?;
    let (insert_at, sub) = subcommand_position(&args, command);
    let mut added = Vec::new();
    for (key, value) in entries {
        let err = |reason: String| ConfigFileError::Key {
            path: path.clone(),
            key: key.clone(),
            reason,
        };
        let name = PREFIXES.iter().find_map(|p| key.strip_prefix(p)).unwrap_or(&key);
        if let Some((_, why)) = ALWAYS_ON.iter().find(|(k, _)| *k == name) {
            match value {
                Value::Bool(true) => continue,
                Value::String(ref s) if s.eq_ignore_ascii_case("true") => continue,
                _ => return Err(err(format!("only `true` is possible: {why}"))),
            }
        }
        let Some(arg) = find(sub, command, name) else {
            // One file serves every command: `serve`'s options are not the import's.
            if another_commands_option(command, sub, name) {
                continue;
            }
            return Err(err(format!(
                "no such option of `{}` (see `palisade {} --help`, and the README's table of Web3Signer options)",
                sub.get_name(),
                sub.get_name()
            )));
        };
        if given(&args, arg) {
            continue;
        }
        let long = arg.get_long().expect("options in files have long names");
        let values = scalars(&value).map_err(err)?;
        match arg.get_action() {
            ArgAction::SetTrue => {
                if values.len() != 1 || !matches!(values[0].as_str(), "true" | "false") {
                    return Err(err("`true` or `false`".into()));
                }
                if values[0] == "true" {
                    added.push(OsString::from(format!("--{long}")));
                }
            }
            _ => added.extend(values.iter().map(|v| OsString::from(format!("--{long}={v}")))),
        }
    }
    args.splice(insert_at..insert_at, added);
    Ok(args)
}

/// Takes `--config-file FILE` / `--config-file=FILE` out of `args`.
fn take_config_file(args: Vec<OsString>) -> Result<(Vec<OsString>, Option<PathBuf>), ConfigFileError> {
    let mut out = Vec::with_capacity(args.len());
    let mut path = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config-file") => path = Some(PathBuf::from(it.next().ok_or(ConfigFileError::Missing)?)),
            Some(s) if s.starts_with("--config-file=") => path = Some(PathBuf::from(&s["--config-file=".len()..])),
            _ => out.push(a),
        }
    }
    Ok((out, path))
}

/// The file's entries as `key: value` pairs, nested maps flattened with dots, in file order.
fn read(path: &Path) -> Result<Vec<(String, Value)>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let yaml_err = |reason: String| ConfigFileError::Yaml {
        path: path.to_path_buf(),
        reason,
    };
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| yaml_err(e.to_string()))?;
    let mut out = Vec::new();
    match value {
        Value::Null => {}
        Value::Mapping(m) => flatten("", m, &mut out).map_err(yaml_err)?,
        _ => return Err(yaml_err("the file must be a map of option names to values".into())),
    }
    Ok(out)
}

fn flatten(prefix: &str, map: serde_yaml_ng::Mapping, out: &mut Vec<(String, Value)>) -> Result<(), String> {
    for (k, v) in map {
        let Value::String(k) = k else {
            return Err(format!("a key that is not text under `{prefix}`"));
        };
        let key = format!("{prefix}{k}");
        match v {
            Value::Mapping(inner) => flatten(&format!("{key}."), inner, out)?,
            v => out.push((key, v)),
        }
    }
    Ok(())
}

/// A value as the command line would give it: one text, or several for a list.
fn scalars(v: &Value) -> Result<Vec<String>, String> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err("a text, number, true/false, or a list of them".to_string()),
    };
    match v {
        Value::Sequence(items) => items.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

/// Where the file's options go (after the last subcommand named) and that subcommand. Only
/// positions where clap would read a subcommand count: not an option's value, and nothing
/// after the first positional argument that is not a subcommand.
fn subcommand_position<'a>(args: &[OsString], command: &'a Command) -> (usize, &'a Command) {
    let mut current = command;
    let mut at = args.len().min(1);
    let mut i = 1;
    while i < args.len() {
        let Some(s) = args[i].to_str() else { break };
        if s == "--" {
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            let takes_value =
                !long.contains('=') && find(current, command, long).is_some_and(|a| a.get_action().takes_values());
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        if s.starts_with('-') && s.len() > 1 {
            i += 1;
            continue;
        }
        match current.find_subcommand(s) {
            Some(sub) => {
                current = sub;
                at = i + 1;
                i += 1;
            }
            None => break,
        }
    }
    (at, current)
}

/// Whether `name` is an option of a command other than `sub` (the file serves them all).
fn another_commands_option(root: &Command, sub: &Command, name: &str) -> bool {
    fn walk(c: &Command, sub: &Command, name: &str) -> bool {
        c.get_subcommands()
            .any(|s| (s.get_name() != sub.get_name() && find(s, s, name).is_some()) || walk(s, sub, name))
    }
    walk(root, sub, name)
}

/// The option named `name` (or one of its aliases) of `sub`, or a global one.
fn find<'a>(sub: &'a Command, root: &'a Command, name: &str) -> Option<&'a Arg> {
    let matches = |a: &&Arg| a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name));
    sub.get_arguments()
        .find(matches)
        .or_else(|| root.get_arguments().find(matches))
}

/// Whether the command line or the environment already sets `arg`.
fn given(args: &[OsString], arg: &Arg) -> bool {
    if arg.get_env().is_some_and(|e| std::env::var_os(e).is_some()) {
        return true;
    }
    let mut names: Vec<&str> = arg.get_long().into_iter().collect();
    names.extend(arg.get_all_aliases().unwrap_or_default());
    args.iter().filter_map(|a| a.to_str()).any(|a| {
        names.iter().any(|n| {
            a.strip_prefix("--")
                .and_then(|r| r.strip_prefix(n))
                .is_some_and(|r| r.is_empty() || r.starts_with('='))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command::new("palisade").subcommand(
            Command::new("serve")
                .arg(Arg::new("http_port").long("http-port").alias("http-listen-port"))
                .arg(Arg::new("flag").long("flag").action(ArgAction::SetTrue))
                .arg(Arg::new("list").long("list").action(ArgAction::Append))
                .arg(
                    Arg::new("from_env")
                        .long("from-env")
                        .env("PALISADE_CONFIG_FILE_TEST_ONLY_ENV"),
                ),
        )
    }

    fn expanded(file: &str, args: &[&str]) -> Result<Vec<String>, ConfigFileError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, file).unwrap();
        let mut all: Vec<OsString> = vec!["palisade".into(), "serve".into()];
        all.extend(args.iter().map(OsString::from));
        all.extend(["--config-file".into(), path.clone().into_os_string()]);
        expand(all, &command()).map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn file_options_become_arguments_after_the_subcommand() {
        let out = expanded("eth2:\n  http-listen-port: 7\nflag: true\nlist: [a, b]\n", &[]).unwrap();
        assert_eq!(
            out,
            ["palisade", "serve", "--http-port=7", "--flag", "--list=a", "--list=b"]
        );
    }

    #[test]
    fn the_command_line_and_the_environment_win() {
        let out = expanded("http-port: 7\n", &["--http-listen-port", "8"]).unwrap();
        assert_eq!(out, ["palisade", "serve", "--http-listen-port", "8"]);
        // Set for this test only: no other test reads this variable.
        unsafe { std::env::set_var("PALISADE_CONFIG_FILE_TEST_ONLY_ENV", "x") };
        let out = expanded("from-env: y\n", &[]).unwrap();
        assert_eq!(out, ["palisade", "serve"]);
    }

    #[test]
    fn a_value_spelled_like_a_subcommand_is_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "flag: true\n").unwrap();
        let command = command().arg(Arg::new("level").long("level").global(true));
        let args = [
            "palisade",
            "--level",
            "serve",
            "serve",
            "--config-file",
            path.to_str().unwrap(),
        ];
        let out = expand(args.iter().map(OsString::from).collect(), &command).unwrap();
        assert_eq!(out, ["palisade", "--level", "serve", "serve", "--flag"]);
    }

    #[test]
    fn another_commands_options_are_left_to_it() {
        let command = command().subcommand(Command::new("export").arg(Arg::new("to").long("to")));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "http-port: 7\nto: x.json\n").unwrap();
        let run = |sub: &str| {
            let args = ["palisade", sub, "--config-file", path.to_str().unwrap()];
            let out = expand(args.iter().map(OsString::from).collect(), &command).unwrap();
            out.into_iter().map(|a| a.into_string().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run("export"), ["palisade", "export", "--to=x.json"]);
        assert_eq!(run("serve"), ["palisade", "serve", "--http-port=7"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = expanded("nope: 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("c.yaml: nope: no such option of `serve`"), "{e}");
        let e = expanded("flag: maybe\n", &[]).unwrap_err().to_string();
        assert!(e.contains("flag: `true` or `false`"), "{e}");
        let e = expanded("http-port: {a: [1]}\n", &[]).unwrap_err().to_string();
        assert!(e.contains("http-port.a"), "{e}");
    }
}
