//! The configuration documentation matches the code: every variable caregraph reads is a row of
//! the README's one configuration table and a line of `.env.example`, and neither lists a
//! variable the code does not read.

use std::{collections::BTreeSet, path::Path};

/// The prefixes of caregraph's own variables (`RUST_LOG` belongs to the log filter).
const PREFIXES: &[&str] = &[
    "CAREGRAPH_",
    "JITSI_",
    "STREAM_",
    "SENDBIRD_",
    "ETHORA_",
    "OTEL_",
    "TWILIO_",
];

fn is_variable(word: &str) -> bool {
    PREFIXES.iter().any(|p| word.starts_with(p))
        && word.len() > 4
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every quoted variable name in the service's sources (the benchmark binary under `src/bin`
/// has its own flags and is not the service).
fn read_by_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            for quoted in text.split('"').skip(1).step_by(2) {
                if is_variable(quoted) {
                    names.insert(quoted.to_owned());
                }
            }
        }
    }
    names
}

/// Splits a table row into cells, ignoring `|` inside backticks.
fn cells(row: &str) -> Vec<String> {
    let inner = row
        .trim()
        .strip_prefix('|')
        .and_then(|r| r.strip_suffix('|'))
        .unwrap_or_else(|| panic!("a table row starts and ends with |: {row}"));
    let (mut cells, mut cell, mut code) = (Vec::new(), String::new(), false);
    for c in inner.chars() {
        match c {
            '`' => {
                code = !code;
                cell.push(c);
            }
            '|' if !code => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            _ => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

/// The README's `## Configuration` section.
fn configuration_section() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let start = readme
        .find("\n## Configuration\n")
        .expect("a Configuration section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

#[test]
fn the_readme_configuration_is_one_table_with_three_cells_per_row() {
    let section = configuration_section();
    let lines: Vec<&str> = section.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with('|'))
        .expect("a table");
    let run = lines[first..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .count();
    let after = lines[first + run..]
        .iter()
        .filter(|l| l.starts_with('|'))
        .count();
    assert_eq!(
        after, 0,
        "rows after a blank line start a second table without a header"
    );
    assert_eq!(lines[first], "| variable | default | meaning |");
    assert_eq!(lines[first + 1], "|---|---|---|");
    assert!(run > 60, "the table holds every variable ({run} lines)");
    for row in &lines[first + 2..first + run] {
        assert_eq!(cells(row).len(), 3, "{row}");
    }
}

#[test]
fn every_variable_the_code_reads_is_in_the_readme_table_and_env_example_and_no_other() {
    let code = read_by_code();
    assert!(
        code.contains("CAREGRAPH_DATABASE_URL") && code.len() > 60,
        "the scan finds the configuration: {code:?}"
    );

    let readme: BTreeSet<String> = configuration_section()
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|row| {
            cells(row)[0]
                .split('`')
                .filter(|w| is_variable(w))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let env_example: BTreeSet<String> = std::fs::read_to_string(root().join(".env.example"))
        .expect(".env.example")
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.split_once('=').map(|(name, _)| name.to_owned())
        })
        .filter(|name| is_variable(name))
        .collect();

    for (list, documented) in [("README", &readme), (".env.example", &env_example)] {
        let missing: Vec<_> = code.difference(documented).collect();
        let extra: Vec<_> = documented.difference(&code).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{list}: missing {missing:?}, not read by the code {extra:?}"
        );
    }
}
