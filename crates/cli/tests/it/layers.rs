//! The architecture's layer rules (ARCHITECTURE.md), checked against `cargo metadata` and the
//! sources, so a dependency or a background task in the wrong crate fails CI instead of review.
//!
//! "Internal deps" are normal (not dev, not build) dependencies on other workspace packages;
//! packages are named by their short name, `cascade-<short>`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const ENGINES: &[&str] = &["features", "models", "ann", "rank", "eval", "registry"];
/// Foundation crates an engine may depend on.
const ENGINE_MAY_USE: &[&str] = &["core", "store"];
const HTTP_SERVER_STACK: &[&str] = &["axum", "tower-http", "hyper", "tower"];
const ENV_READS: &[&str] = &["std::env::var", "env::var(", "env::var_os(", "env::vars(", "env::vars_os(", "env::args"];
const SPAWNS: &[&str] = &["tokio::spawn(", "task::spawn(", "thread::spawn(", "thread::Builder::new()"];

/// Library code that may read the environment: (file from the workspace root, text on the line,
/// reason). Every entry needs a reason; an entry that matches nothing fails the test.
const ENV_ALLOW: &[(&str, &str, &str)] = &[];

/// Code outside node, cli and bench that may start a thread or task: (file, text, reason).
/// `spawn_blocking` is request-scoped and allowed everywhere (no pattern in `SPAWNS` matches it).
const SPAWN_ALLOW: &[(&str, &str, &str)] = &[
    ("crates/store/src/log.rs", "thread::Builder::new()", "the log's writer thread: owned by `Log`, joined on close"),
    (
        "crates/server/src/listen.rs",
        "tokio::spawn(",
        "one task per connection, as in any HTTP server; drained by the graceful shutdown",
    ),
    ("crates/testkit/src/child.rs", "thread::spawn(", "test helper: pipes a child test's stdout, joined on kill"),
];

#[derive(Debug)]
struct Package {
    dir: PathBuf,
    /// (package name, kind): kind is `None` for normal, `Some("dev" | "build")` otherwise.
    deps: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
struct Workspace {
    root: PathBuf,
    /// By short name.
    packages: BTreeMap<String, Package>,
}

fn short(name: &str) -> &str {
    name.strip_prefix("cascade-").unwrap_or(name)
}

fn workspace() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
        parse_metadata(&serde_json::from_slice(&out.stdout).unwrap())
    })
}

fn parse_metadata(meta: &Value) -> Workspace {
    let packages = meta["packages"].as_array().unwrap().iter().map(|p| {
        let dir = Path::new(p["manifest_path"].as_str().unwrap()).parent().unwrap().to_path_buf();
        let deps = p["dependencies"].as_array().unwrap().iter();
        let deps = deps.map(|d| (d["name"].as_str().unwrap().to_string(), d["kind"].as_str().map(String::from)));
        (short(p["name"].as_str().unwrap()).to_string(), Package { dir, deps: deps.collect() })
    });
    Workspace { root: meta["workspace_root"].as_str().unwrap().into(), packages: packages.collect() }
}

impl Workspace {
    /// The package a rule names; a rule naming a package that is gone must be updated, not skipped.
    fn get(&self, short: &str) -> &Package {
        self.packages.get(short).unwrap_or_else(|| {
            panic!("layers.rs names cascade-{short}, which is not in the workspace; update the rule")
        })
    }

    /// Normal (incl. target-specific) dependencies: external ones by name, internal by short name.
    fn normal_deps(&self, pkg: &str) -> impl Iterator<Item = &str> {
        self.get(pkg).deps.iter().filter(|(_, kind)| kind.is_none()).map(|(name, _)| name.as_str())
    }

    /// Every package but `except` (each of which must exist).
    fn others<'a>(&'a self, except: &'a [&str]) -> impl Iterator<Item = &'a str> {
        except.iter().for_each(|p| _ = self.get(p));
        self.packages.keys().map(String::as_str).filter(|p| !except.contains(p))
    }

    fn internal(&self, pkg: &str) -> BTreeSet<&str> {
        let names = self.normal_deps(pkg).filter(|n| n.starts_with("cascade-") && self.packages.contains_key(short(n)));
        names.map(short).collect()
    }

    /// The shortest chain of internal deps from `from` to `to`, if any (both ends included).
    fn chain(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([self.packages.get_key_value(from)?.0.as_str()]);
        while let Some(at) = queue.pop_front() {
            if at == to {
                let mut path = vec![to.to_string()];
                while let Some(&prev) = came_from.get(path.last().unwrap().as_str()) {
                    path.push(prev.to_string());
                }
                path.reverse();
                return Some(path);
            }
            for next in self.internal(at) {
                if next != from && !came_from.contains_key(next) {
                    came_from.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// Lines of `pkg`'s non-test sources (`src/**/*.rs`) that contain one of `patterns`, as
    /// (file from the workspace root, line number, line).
    fn scan(&self, pkg: &str, patterns: &[&str]) -> Vec<(String, usize, String)> {
        let mut files = Vec::new();
        rs_files(&self.get(pkg).dir.join("src"), &mut files);
        let mut hits = Vec::new();
        for file in files {
            let rel = file.strip_prefix(&self.root).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in non_test_lines(&text) {
                if patterns.iter().any(|p| line.contains(p)) {
                    hits.push((rel.clone(), n, line.trim().to_string()));
                }
            }
        }
        hits
    }
}

/// Every `.rs` file under `dir`, sorted, except `tests.rs` files (test modules kept apart).
fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            out.push(path);
        }
    }
}

/// (1-based number, line) of the code lines before the file's test module: scanning stops at the
/// first unindented `#[cfg(test)]` that is followed by a `mod`. Comment lines are skipped.
fn non_test_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let is_test_mod = |i: usize| {
        let next = lines[i + 1..].iter().map(|l| l.trim()).find(|l| !l.starts_with("#["));
        let next = next.unwrap_or("").trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        lines[i].starts_with("#[cfg(test)]") && next.starts_with("mod ")
    };
    let end = (0..lines.len()).find(|&i| is_test_mod(i)).unwrap_or(lines.len());
    let code = lines.into_iter().take(end).enumerate().map(|(i, l)| (i + 1, l));
    code.filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// Hits not covered by `allow`, plus allow entries that cover nothing (stale).
fn unallowed(hits: &[(String, usize, String)], allow: &[(&str, &str, &str)]) -> Vec<String> {
    let covers =
        |(file, text, _): &(&str, &str, &str), hit: &(String, usize, String)| hit.0 == *file && hit.2.contains(text);
    let stale = allow.iter().filter(|a| !hits.iter().any(|h| covers(a, h)));
    let stale = stale.map(|(file, text, why)| format!("stale allow-list entry ({file}, {text:?}, {why:?}): remove it"));
    let bad = hits.iter().filter(|h| !allow.iter().any(|a| covers(a, h)));
    bad.map(|(file, n, line)| format!("{file}:{n}: {line}")).chain(stale).collect()
}

fn check(rule: &str, violations: &[String]) {
    assert!(violations.is_empty(), "rule: {rule}\n  {}\n", violations.join("\n  "));
}

#[test]
fn engines_do_not_depend_on_each_other() {
    let ws = workspace();
    let mut bad = Vec::new();
    for &engine in ENGINES {
        for dep in ws.internal(engine) {
            if !ENGINE_MAY_USE.contains(&dep) {
                bad.push(format!("cascade-{engine} → cascade-{dep}"));
            }
        }
    }
    check("an engine (features, models, ann, rank, eval, registry) depends only on core and store", &bad);
}

#[test]
fn training_and_serving_meet_only_through_bundle() {
    let ws = workspace();
    let mut bad = Vec::new();
    for (from, forbidden) in [("training", "serving"), ("serving", "training")] {
        for to in [forbidden, "server", "node", "cli"] {
            _ = (ws.get(from), ws.get(to));
            if let Some(chain) = ws.chain(from, to) {
                bad.push(chain.iter().map(|p| format!("cascade-{p}")).collect::<Vec<_>>().join(" → "));
            }
        }
    }
    let rule = "training and serving never depend on each other (directly or transitively), nor on server, node or cli";
    check(rule, &bad);
}

#[test]
fn only_server_has_the_http_server_stack() {
    let ws = workspace();
    _ = (ws.get("server"), ws.get("bench"));
    let mut bad = Vec::new();
    for pkg in ws.others(&[]) {
        for dep in ws.normal_deps(pkg) {
            if (HTTP_SERVER_STACK.contains(&dep) && pkg != "server") || (dep == "reqwest" && pkg != "bench") {
                bad.push(format!("cascade-{pkg} → {dep}"));
            }
        }
    }
    check(
        "only cascade-server depends on axum, tower-http, hyper, tower; reqwest only in cascade-bench or as a dev-dependency",
        &bad,
    );
}

#[test]
fn only_binaries_parse_arguments() {
    let ws = workspace();
    let uses_clap =
        |pkg: &&str| ws.get(pkg).deps.iter().any(|(dep, kind)| dep == "clap" && kind.as_deref() != Some("dev"));
    let bad = ws.others(&["cli", "bench"]).filter(uses_clap).map(|pkg| format!("cascade-{pkg} → clap"));
    check("only cascade-cli and cascade-bench depend on clap", &bad.collect::<Vec<_>>());
}

#[test]
fn libraries_do_not_read_the_environment() {
    let ws = workspace();
    let hits: Vec<_> = ws.others(&["cli", "bench"]).flat_map(|p| ws.scan(p, ENV_READS)).collect();
    check(
        "library crates take the environment as a parameter; only cli and bench read it",
        &unallowed(&hits, ENV_ALLOW),
    );
}

#[test]
fn only_node_spawns_long_running_tasks() {
    let ws = workspace();
    let hits: Vec<_> = ws.others(&["node", "cli", "bench"]).flat_map(|p| ws.scan(p, SPAWNS)).collect();
    check(
        "only cascade-node (and the cli/bench binaries) spawn threads or tasks; see SPAWN_ALLOW",
        &unallowed(&hits, SPAWN_ALLOW),
    );
}

/// The first fenced block under `## Code map`, as (package, deps) for each `a ─► b, c` line.
fn code_map(markdown: &str) -> Result<Vec<(String, BTreeSet<String>)>, &'static str> {
    let mut lines = markdown.lines().skip_while(|l| l.trim() != "## Code map").skip(1);
    lines
        .by_ref()
        .take_while(|l| !l.starts_with("## "))
        .find(|l| l.trim_start().starts_with("```"))
        .ok_or("no fenced block under `## Code map`")?;
    let block = lines.take_while(|l| !l.trim_start().starts_with("```"));
    let entries = block.filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| l.split_once("─►"));
    let entries = entries.map(|(name, deps)| {
        let deps = deps.split('#').next().unwrap().trim();
        let deps = deps.split(',').map(str::trim).filter(|d| !d.is_empty() && *d != "(none)");
        (name.trim().to_string(), deps.map(String::from).collect())
    });
    Ok(entries.collect())
}

fn expected_code_map(ws: &Workspace) -> String {
    let width = ws.packages.keys().map(|p| p.chars().count()).max().unwrap_or(0);
    let lines = ws.packages.keys().map(|pkg| {
        let deps = ws.internal(pkg).into_iter().collect::<Vec<_>>().join(", ");
        format!("{pkg:<width$} ─► {}", if deps.is_empty() { "(none)" } else { &deps })
    });
    format!("```\n{}\n```", lines.collect::<Vec<_>>().join("\n"))
}

#[test]
fn architecture_code_map_matches_cargo_metadata() {
    let ws = workspace();
    let markdown = std::fs::read_to_string(ws.root.join("ARCHITECTURE.md")).unwrap();
    let (entries, mut bad) = match code_map(&markdown) {
        Ok(entries) => (entries, Vec::new()),
        Err(e) => (Vec::new(), vec![e.to_string()]),
    };
    let mut documented = BTreeMap::new();
    for (pkg, deps) in entries {
        if documented.insert(pkg.clone(), deps).is_some() {
            bad.push(format!("{pkg}: listed twice"));
        }
    }
    for pkg in ws.packages.keys().filter(|p| !documented.contains_key(*p)) {
        bad.push(format!("{pkg}: missing"));
    }
    for (pkg, deps) in &documented {
        if !ws.packages.contains_key(pkg) {
            bad.push(format!("{pkg}: not a workspace package"));
        } else if ws.internal(pkg).into_iter().ne(deps.iter().map(String::as_str)) {
            bad.push(format!("{pkg}: documented ─► {deps:?}, actual ─► {:?}", ws.internal(pkg)));
        }
    }
    let expected = expected_code_map(ws);
    assert!(
        bad.is_empty(),
        "ARCHITECTURE.md `## Code map` is out of date:\n  {}\n\nExpected block:\n{expected}\n",
        bad.join("\n  ")
    );
}
