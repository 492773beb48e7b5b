//! `motion system check` end to end: the real binary on the repository's
//! system.toml and on one failing fixture per rule.
//!
//! Each fixture in tests/fixtures/system/ is named after its rule and marks
//! the offending line with a `# <- rule` comment; the test expects exactly one
//! finding, `FIXTURE:LINE: rule: ...`, at that line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use motion_e2e::motion_bin::motion_bin;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run `motion system check <args>` from the repository root.
fn check(args: &[&str]) -> Output {
    Command::new(motion_bin())
        .current_dir(repo_root())
        .args(["system", "check"])
        .args(args)
        .output()
        .expect("run motion")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn repository_system_toml_is_ok() {
    for args in [&["system.toml"][..], &[]] {
        let out = check(args);
        assert_eq!(text(&out.stdout), "ok\n", "stderr: {}", text(&out.stderr));
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn unreadable_file_exits_2_naming_it() {
    let out = check(&["tests/fixtures/system/no-such-file.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot read tests/fixtures/system/no-such-file.toml"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn each_fixture_fails_with_its_own_rule_at_its_marked_line() {
    let dir = repo_root().join("tests/fixtures/system");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    let mut rules_seen = Vec::new();
    for path in &fixtures {
        let rule = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let src = std::fs::read_to_string(path).unwrap();
        let marker = format!("# <- {rule}");
        let lines: Vec<usize> = src
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&marker))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: mark exactly one line with `{marker}`",
            path.display()
        );
        let rel = format!("tests/fixtures/system/{rule}.toml");
        let out = check(&[&rel]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{rel}: stderr: {err}");
        assert!(
            out.stdout.is_empty(),
            "{rel}: stdout: {}",
            text(&out.stdout)
        );
        let want = format!("{rel}:{}: {rule}: ", lines[0]);
        let findings: Vec<&str> = err.lines().collect();
        assert_eq!(
            findings.len(),
            1,
            "{rel}: want one finding `{want}...`, got:\n{err}"
        );
        assert!(
            findings[0].starts_with(&want),
            "{rel}: want `{want}...`, got:\n{err}"
        );
        rules_seen.push(rule);
    }
    // One fixture per rule, no more, no fewer.
    let mut all: Vec<String> = motion_system::Rule::ALL
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    all.sort();
    assert_eq!(rules_seen, all);
}

#[test]
fn findings_are_all_reported_in_line_order() {
    // Two broken rules in one file: both reported, sorted by line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.toml");
    let src = std::fs::read_to_string(repo_root().join("system.toml"))
        .unwrap()
        .replace("grants = [\"stdout\"]", "grants = []")
        .replace(
            "uses = [\"LogAppend\", \"Pmu\"]",
            "uses = [\"LogAppend\", \"Pmu\", \"LogRead\"]",
        );
    std::fs::write(&file, &src).unwrap();
    let out = check(&[file.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let rules: Vec<&str> = err
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        rules,
        ["unreachable-use", "capability-not-granted"],
        "{err}"
    );
}
