//! A user's clone has nothing beside it: no tracked file may read a path outside the repository.
//!
//! Reading a path is not something a grep can decide in general, so this looks for the ways such
//! paths have been written here, each of which a unit test below shows it catching:
//! - the sibling folder of the developers' workplace, [`WORKPLACE_SIBLING`] (and any path in
//!   the workplace, [`WORKPLACE_ROOT`]);
//! - a run of `..` segments longer than the file's depth below the root (`cd "$(dirname "$0")/../..."`,
//!   `include_str!("../../..")`);
//! - a literal added to `CARGO_MANIFEST_DIR` that climbs above the root;
//! - `..` joined to the repository root (`repo_root().join("..")`, `$ROOT/..`, `$(CURDIR)/..`).
//!
//! Prose (Markdown) and lock files are not read: they read nothing.

use std::path::Path;
use std::process::Command;

use trafficmap_e2e::cluster::repo_root;

/// How a line reaches outside the repository.
#[derive(Debug, PartialEq)]
enum Escape {
    /// Names the workplace's folders beside the repository.
    Workplace,
    /// Climbs more `..` than the file sits below the root.
    ClimbsFromFile,
    /// Climbs above the root from the crate's manifest directory.
    ClimbsFromManifest,
    /// Climbs from the repository root itself.
    ClimbsFromRoot,
}

/// The developers' folder beside the repository (spelt in two pieces, so that this file does
/// not name it itself).
const WORKPLACE_SIBLING: &str = concat!("..", "/shared");
/// Where the developers' checkouts live.
const WORKPLACE_ROOT: &str = concat!("/wo", "rk/");

/// Prefixes that stand for the repository root in our code and scripts.
const ROOT_ANCHORS: &[&str] = &[
    "repo_root().join(\"..",
    "root.join(\"..",
    "$ROOT/..",
    "${ROOT}/..",
    "$(CURDIR)/..",
    "$(git rev-parse --show-toplevel)/..",
];

/// Lengths of the runs of `..` segments in `line` (`../..` is 2), with whether each run starts
/// a literal (right after a quote).
fn climbs(line: &str) -> Vec<(usize, bool)> {
    let bytes = line.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let starts_segment =
            i == 0 || matches!(bytes[i - 1], b'/' | b'"' | b'\'' | b' ' | b'=' | b'(');
        if !(starts_segment && bytes[i] == b'.' && bytes[i + 1] == b'.') {
            i += 1;
            continue;
        }
        let after_quote = i >= 2 && bytes[i - 1] == b'/' && bytes[i - 2] == b'"';
        let mut count = 0;
        let mut j = i;
        while j + 1 < bytes.len() && bytes[j] == b'.' && bytes[j + 1] == b'.' {
            let end = j + 2;
            if end < bytes.len() && !matches!(bytes[end], b'/' | b'"' | b'\'' | b' ' | b')') {
                break;
            }
            count += 1;
            j = end + 1;
            if end >= bytes.len() || bytes[end] != b'/' {
                break;
            }
        }
        if count > 0 {
            runs.push((count, after_quote));
        }
        i = j.max(i + 2);
    }
    runs
}

/// Every way `text`, the content of the tracked file `path`, reads outside the repository: as
/// (line number, escape). `manifest_depth` is the depth of the file's crate directory, for Rust.
fn escapes(path: &Path, text: &str, manifest_depth: Option<usize>) -> Vec<(usize, Escape)> {
    let depth = path.parent().map_or(0, |p| p.components().count());
    let manifest_relative = manifest_depth.is_some() && text.contains("CARGO_MANIFEST_DIR");
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let depth = depth + cd_depth(line);
        if line.contains(WORKPLACE_SIBLING) || line.contains(WORKPLACE_ROOT) {
            found.push((n, Escape::Workplace));
        } else if ROOT_ANCHORS.iter().any(|anchor| line.contains(anchor)) {
            found.push((n, Escape::ClimbsFromRoot));
        } else {
            for (count, starts_literal) in climbs(line) {
                if count > depth {
                    found.push((n, Escape::ClimbsFromFile));
                } else if manifest_relative
                    && starts_literal
                    && manifest_depth.is_some_and(|d| count > d)
                {
                    found.push((n, Escape::ClimbsFromManifest));
                }
            }
        }
    }
    found
}

/// How far below its starting directory a line `cd`s before the rest runs (`cd e2e/coredns &&`
/// is 2), so that paths after it are read from there.
fn cd_depth(line: &str) -> usize {
    let Some((_, rest)) = line.split_once("cd ") else {
        return 0;
    };
    let dir = rest.split_whitespace().next().unwrap_or_default();
    if dir.starts_with(['$', '"', '\'', '.', '/']) || !rest.contains("&&") {
        return 0;
    }
    Path::new(dir).components().count()
}

/// Depth below the root of the nearest directory above `path` that holds a Cargo.toml.
fn manifest_depth(root: &Path, path: &Path) -> Option<usize> {
    path.ancestors()
        .skip(1)
        .find(|dir| root.join(dir).join("Cargo.toml").is_file())
        .map(|dir| dir.components().count())
}

/// Whether `path` is a file that tools read or run (not prose, not a lock file, and not this
/// file, whose examples name what it looks for).
fn read_by_tools(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    !(name.ends_with(".md") || name.ends_with(".lock") || path == Path::new(file!()))
}

#[test]
fn no_tracked_file_reads_a_path_outside_the_repository() {
    let root = repo_root();
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git runs (the tests run in a clone)");
    assert!(out.status.success(), "git ls-files failed");
    let files: Vec<&Path> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .filter_map(|f| std::str::from_utf8(f).ok().map(Path::new))
        .collect();
    assert!(
        files.len() > 100,
        "git ls-files listed only {} files",
        files.len()
    );
    let mut found = Vec::new();
    for path in files.iter().filter(|p| read_by_tools(p)) {
        let Ok(text) = std::fs::read_to_string(root.join(path)) else {
            continue; // binary
        };
        let manifest = (path.extension() == Some("rs".as_ref()))
            .then(|| manifest_depth(&root, path))
            .flatten();
        for (line, how) in escapes(path, &text, manifest) {
            found.push(format!("{}:{line}: {how:?}", path.display()));
        }
    }
    assert!(
        found.is_empty(),
        "tracked files read outside the repository (a user's clone has nothing beside it):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_ways_paths_outside_have_been_written_are_caught() {
    let cases: &[(&str, &str, Option<usize>, Escape)] = &[
        (
            "e2e/src/crds.rs",
            &format!(
                "    repo_root().join(\"{WORKPLACE_SIBLING}/upstream/clientintents-crd.yaml\")"
            ),
            Some(1),
            Escape::Workplace,
        ),
        (
            "e2e/tests/scenarios.rs",
            "    repo_root().join(\"../other/scenarios\")",
            Some(1),
            Escape::ClimbsFromRoot,
        ),
        (
            "crds/fuzz/fuzz_targets/render_client_intents.rs",
            "const X: &str = include_str!(concat!(\n    env!(\"CARGO_MANIFEST_DIR\"),\n    \"/../../../sibling/crd.yaml\"\n));",
            Some(2),
            Escape::ClimbsFromManifest,
        ),
        (
            "e2e/tools/render-config.sh",
            "cd \"$(dirname \"$0\")/../../..\"",
            None,
            Escape::ClimbsFromFile,
        ),
        (
            "Makefile",
            "\tcp $(CURDIR)/../crd.yaml chart/",
            None,
            Escape::ClimbsFromRoot,
        ),
        (
            "e2e/demo.sh",
            &format!("ROOT={WORKPLACE_ROOT}main"),
            None,
            Escape::Workplace,
        ),
    ];
    for (path, text, manifest, want) in cases {
        let got = escapes(Path::new(path), text, *manifest);
        assert!(
            got.iter().any(|(_, how)| how == want),
            "{path}: {text:?} gave {got:?}, expected {want:?}"
        );
    }
}

#[test]
fn paths_that_stay_inside_are_not_flagged() {
    let cases: &[(&str, &str, Option<usize>)] = &[
        (
            "e2e/tools/install-helm.sh",
            "cd \"$(dirname \"$0\")/../..\"",
            None,
        ),
        (
            "e2e/controlplane/controlplane.sh",
            "ROOT=\"$(cd \"$HERE/../..\" && pwd -P)\"",
            None,
        ),
        (
            "sniffer/src/scan/bpf.rs",
            "static OBJECT: &[u8] = aya::include_bytes_aligned!(\"../../bpf/sockets.bpf.o\");",
            Some(1),
        ),
        (
            "crds/fuzz/fuzz_targets/render_client_intents.rs",
            "const X: &str = include_str!(concat!(\n    env!(\"CARGO_MANIFEST_DIR\"),\n    \"/../../chart/files/crds/x.yaml\"\n));",
            Some(2),
        ),
        (
            "sniffer/fuzz/Cargo.toml",
            "trafficmap-api = { path = \"../../crds\" }",
            None,
        ),
        (
            "Makefile",
            "\tcd e2e/coredns && go build -o ../../target/go/coredns .",
            None,
        ),
        (
            "e2e/src/x.rs",
            "let range = 0..10; let s = &v[1..];",
            Some(1),
        ),
    ];
    for (path, text, manifest) in cases {
        let got = escapes(Path::new(path), text, *manifest);
        assert!(got.is_empty(), "{path}: {text:?} flagged as {got:?}");
    }
}
