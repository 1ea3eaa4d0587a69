//! Checks the configuration table of docs/operations.md against the server binary's `--help`:
//! every flag the binary has is in the table and every flag in the table is a flag of the
//! binary, with the same default wherever clap prints one. Defaults that the table describes in
//! words are listed in [`DESCRIBED_DEFAULTS`] with what clap prints for them.

use std::collections::BTreeMap;
use std::process::Command;

/// The table's defaults written as prose: (flag, the table's text, clap's `[default: ...]` or none).
const DESCRIBED_DEFAULTS: &[(&str, &str, Option<&str>)] = &[
    ("--advertise-client-urls", "http(s)://<listen>", None),
    ("--listen-client-urls", "none", None),
    ("--cert-file", "none", None),
    ("--key-file", "none", None),
    ("--trusted-ca-file", "none", None),
    ("--client-cert-auth", "off", None),
    ("--slow-consumer-lag", "0 (off)", Some("0")),
    ("--workers", "one per core", None),
    ("--listen-metrics-urls", "none", None),
    ("--log-level", "RUST_LOG, else info", None),
    ("--upstream", "none", None),
    ("--upstream-prefix", "none", None),
    ("--upstream-cacert", "none", None),
    ("--upstream-cert", "none", None),
    ("--upstream-key", "none", None),
    ("--upstream-user", "none", None),
    ("--upstream-password", "none", None),
];

/// Flags every clap program has, not configuration.
const SKIPPED: &[&str] = &["--help", "--version"];

/// Each long flag of `--help` with the default clap prints for it, if any.
fn help_flags() -> BTreeMap<String, Option<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_watchkv")).arg("--help").output().expect("run watchkv --help");
    assert!(out.status.success(), "watchkv --help failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("--help is UTF-8");
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        // A flag line is indented less than a description: `  -h, --help`, `      --listen <LISTEN>`.
        if line.len() - trimmed.len() < 10 && trimmed.starts_with('-') {
            if let Some(long) = trimmed.split([' ', ',']).find(|w| w.starts_with("--")) {
                flags.insert(long.to_string(), None);
                current = Some(long.to_string());
            }
        }
        if let (Some(flag), Some(at)) = (&current, line.find("[default: ")) {
            let rest = &line[at + "[default: ".len()..];
            let value = rest.split(']').next().unwrap_or(rest).to_string();
            flags.insert(flag.clone(), Some(value));
        }
    }
    assert!(flags.len() > 5, "no flags found in --help:\n{text}");
    flags
}

/// Each flag row of docs/operations.md's configuration table with its default column, backticks
/// removed.
fn documented_flags() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md"))
        .expect("read docs/operations.md");
    let mut flags = BTreeMap::new();
    for line in doc.lines() {
        let Some(row) = line.strip_prefix("| `--") else { continue };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells.len() >= 3, "a configuration row needs flag, default and meaning: {line}");
        let flag = format!("--{}", cells[0].trim_end_matches('`'));
        let default = cells[1].trim_matches('`').to_string();
        assert!(flags.insert(flag.clone(), default).is_none(), "{flag} is in the table twice");
    }
    assert!(flags.len() > 5, "no configuration table found in docs/operations.md");
    flags
}

#[test]
fn the_documented_configuration_table_matches_help() {
    let help = help_flags();
    let documented = documented_flags();
    let mut problems = Vec::new();
    for (flag, clap_default) in help.iter().filter(|(f, _)| !SKIPPED.contains(&f.as_str())) {
        let Some(doc_default) = documented.get(flag) else {
            problems.push(format!("{flag}: in --help, missing from the table"));
            continue;
        };
        let described = DESCRIBED_DEFAULTS.iter().find(|(f, _, _)| f == flag);
        match described {
            Some((_, text, expected)) => {
                if doc_default != text {
                    problems.push(format!("{flag}: the table says {doc_default:?}, the described default is {text:?}"));
                }
                if clap_default.as_deref() != *expected {
                    problems.push(format!("{flag}: --help's default is {clap_default:?}, expected {expected:?}"));
                }
            }
            None => match clap_default {
                Some(d) if d == doc_default => {}
                Some(d) => problems.push(format!("{flag}: the table's default {doc_default:?}, --help's {d:?}")),
                None => problems.push(format!("{flag}: --help prints no default, the table says {doc_default:?}")),
            },
        }
    }
    for flag in documented.keys() {
        if !help.contains_key(flag) {
            problems.push(format!("{flag}: in the table, not a flag of the binary"));
        }
    }
    for (flag, _, _) in DESCRIBED_DEFAULTS {
        if !help.contains_key(*flag) {
            problems.push(format!("{flag}: listed in DESCRIBED_DEFAULTS, not a flag of the binary"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/operations.md's configuration table and --help disagree:\n{}",
        problems.join("\n")
    );
}
