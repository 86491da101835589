//! The README's commands run as written: every `make` target it names exists, every
//! `coordinator` / `worker` subcommand and flag it uses is one the binaries accept (their
//! `--help`), and every script, config and cluster file it names is in the repository.

use airlift_tests::bin;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lines of the README's ```sh blocks, comments removed, split at `&&` and `;`.
fn commands() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim();
        if code.starts_with('#') || code.is_empty() {
            continue;
        }
        pending.push_str(code.trim_end_matches('\\'));
        pending.push(' ');
        if code.ends_with('\\') {
            continue;
        }
        for part in pending.split("&&").flat_map(|p| p.split(';')) {
            let words: Vec<&str> = part
                .split_whitespace()
                .skip_while(|w| w.contains('=') && !w.starts_with('-') || *w == "export")
                .collect();
            if !words.is_empty() {
                out.push(words.join(" "));
            }
        }
        pending.clear();
    }
    out
}

fn help(binary: &str, sub: Option<&str>) -> String {
    let mut c = Command::new(bin(binary));
    if let Some(s) = sub {
        c.arg(s);
    }
    let o = c.arg("--help").output().unwrap();
    assert!(o.status.success(), "{binary} {sub:?} --help failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_readme_commands_exist_as_written() {
    let cmds = commands();
    assert!(cmds.len() >= 15, "{cmds:?}");
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let targets: BTreeSet<&str> = makefile
        .lines()
        .filter_map(|l| l.split_once(':').map(|x| x.0))
        .filter(|t| !t.contains(' ') && !t.contains('$') && !t.is_empty())
        .collect();
    let mut checked = 0;
    for cmd in &cmds {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let first = words[0];
        if first == "make" {
            for t in &words[1..] {
                assert!(targets.contains(t), "README: `{cmd}`: no make target `{t}` (targets: {targets:?})");
            }
            checked += 1;
            continue;
        }
        let binary = if first.ends_with("/coordinator") || first == "$C" {
            "coordinator"
        } else if first.ends_with("/worker") || first == "$W" {
            "worker"
        } else {
            // A file of the repository (script, cluster tool): it exists.
            if first.starts_with("cluster/") || first.starts_with("scripts/") {
                assert!(root().join(first).exists(), "README: `{cmd}`: no file {first}");
                checked += 1;
            }
            for w in &words[1..] {
                if (w.starts_with("scripts/") || w.starts_with("configs/")) && !w.contains("my-run") {
                    assert!(root().join(w).exists(), "README: `{cmd}`: no file {w}");
                }
            }
            continue;
        };
        // `[--config FILE] [--threads N] SUB ...`: the subcommand is the first word that is not a
        // flag or a flag's value.
        let mut sub = None;
        let mut i = 1;
        while i < words.len() {
            let w = words[i];
            if w.starts_with("--") {
                i += if matches!(w, "--config" | "--threads" | "--listen") { 2 } else { 1 };
                continue;
            }
            // A path is an optional flag's value (`--resume [CHECKPOINT]`), not a subcommand.
            if w.contains('/') {
                i += 1;
                continue;
            }
            sub = Some(w);
            break;
        }
        let main_help = help(binary, None);
        let sub_help = sub.filter(|s| main_help.contains(&format!("  {s} "))).map(|s| help(binary, Some(s)));
        if let Some(s) = sub {
            assert!(
                sub_help.is_some() || binary == "coordinator" && s.starts_with('$'),
                "README: `{cmd}`: `{binary}` has no subcommand `{s}`:\n{main_help}"
            );
        }
        for w in words.iter().filter(|w| w.starts_with("--")) {
            let flag = w.split('=').next().unwrap();
            let known = main_help.contains(flag) || sub_help.as_deref().is_some_and(|h| h.contains(flag));
            assert!(known, "README: `{cmd}`: `{binary} {}` does not take {flag}", sub.unwrap_or(""));
        }
        for w in &words[1..] {
            if w.starts_with("configs/") || w.starts_with("data/") {
                assert!(root().join(w.trim_start_matches("processbench:")).exists(), "README: `{cmd}`: no file {w}");
            }
            if let Some(f) = w.strip_prefix("processbench:") {
                assert!(root().join(f).exists(), "README: `{cmd}`: no file {f}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 12, "checked {checked} of {cmds:?}");
}
