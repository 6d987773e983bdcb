//! One source each: every config key, metric family, reason code, outcome class and module has
//! its entry in one docs page, the README stays a first read, and no link in the docs leads
//! nowhere. Each list is taken from the code itself (the config loader's own errors, a real
//! exposition, the enums' `ALL`, the files in `src/`), never from a list kept by hand beside the
//! docs, so a new key, family, code or module fails here until it is written down.
//!
//! Fast and offline: nothing here starts a server or a process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines of `page` that are not inside a fenced code block: what a reader sees as prose,
/// tables and headings.
fn prose_lines(page: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push(line);
        }
    }
    out
}

/// The section of `page` under the heading whose text is exactly `heading` (after the `#`s), up
/// to the next heading of any level.
fn section<'a>(page: &'a str, heading: &str) -> Vec<&'a str> {
    let lines = prose_lines(page);
    let start = lines
        .iter()
        .position(|l| heading_text(l) == Some(heading))
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    lines[start + 1..]
        .iter()
        .take_while(|l| heading_text(l).is_none())
        .copied()
        .collect()
}

fn heading_text(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches('#');
    let level = line.len() - rest.len();
    ((1..=6).contains(&level) && rest.starts_with(' ')).then(|| rest.trim())
}

/// The names a table row gives itself: every `` `code` `` in its first cell. An entry is a row
/// of its own, not a mention in someone else's prose.
fn entries<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lines {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or("");
        out.extend(
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|s| s.trim().to_string()),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Config keys

/// Where an unknown key is planted to make a table list its keys, and the heading of that
/// table's section in docs/configuration.md. `zz_unknown` is on the line the loader must point
/// at, so a probe that lands in another table than meant fails instead of reading its keys.
const TABLES: &[(&str, &str, &str)] = &[
    ("the file", "The file", "zz_unknown = 1\n"),
    ("[agent]", "`[agent]`", "[agent]\nzz_unknown = 1\n"),
    ("[cloudwatch]", "`[cloudwatch]`", "[cloudwatch]\nzz_unknown = 1\n"),
    ("[discovery]", "`[discovery]`", "[discovery]\nzz_unknown = 1\n"),
    (
        "[gateway_logs]",
        "`[gateway_logs]`",
        "[gateway_logs]\nzz_unknown = 1\n",
    ),
    ("[[chain]]", "`[[chain]]`", "[[chain]]\nzz_unknown = 1\n"),
    (
        "[[chain.hop]]",
        "`[[chain.hop]]`",
        "[[chain]]\nname = \"c\"\nkind = \"custom\"\n[[chain.hop]]\nzz_unknown = 1\n",
    ),
    (
        "auth",
        "`auth` of a hop",
        "[[chain]]\nname = \"c\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"h\"\n[chain.hop.auth]\nzz_unknown = 1\n",
    ),
    (
        "auth.sigv4",
        "`auth.sigv4`",
        "[[chain]]\nname = \"c\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"h\"\n[chain.hop.auth.sigv4]\nzz_unknown = 1\n",
    ),
    (
        "auth.oauth2",
        "`auth.oauth2`",
        "[[chain]]\nname = \"c\"\nkind = \"custom\"\n[[chain.hop]]\nname = \"h\"\n[chain.hop.auth.oauth2]\nzz_unknown = 1\n",
    ),
];

/// The keys the loader accepts in the table `toml` plants `zz_unknown` in, read from its
/// problem for the unknown key ("unknown key `zz_unknown`, expected one of `a`, `b`, ...",
/// from serde's `deny_unknown_fields`).
fn accepted_keys(name: &str, toml: &str) -> Vec<String> {
    let line = toml
        .lines()
        .position(|l| l.starts_with("zz_unknown"))
        .expect("a planted key")
        + 1;
    let problems = match hopwatch::config::load_str("probe.toml", toml, &|_| None) {
        Ok(_) => panic!("{name}: an unknown key was accepted"),
        Err(hopwatch::config::ConfigError::Invalid(problems)) => problems,
        Err(other) => panic!("{name}: {other}"),
    };
    let problem = problems
        .iter()
        .find(|p| p.message.contains("`zz_unknown`") && p.message.contains("expected"))
        .unwrap_or_else(|| panic!("{name}: no unknown-key problem in {problems:?}"));
    assert_eq!(
        problem.line, line,
        "{name}: the unknown key was reported elsewhere than planted: {problem}"
    );
    let expected = problem
        .message
        .split_once("expected")
        .unwrap_or_else(|| panic!("{name}: no key list in {problem}"))
        .1;
    let keys: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "{name}: no key list in {problem}");
    keys
}

/// Guards docs/configuration.md: every key the loader accepts, in every table, has a row in
/// that table's section. The keys come from the loader's own error for an unknown key, so a
/// key added to `src/config/raw.rs` fails here until it is documented where a reader of that
/// table looks.
#[test]
fn every_config_key_has_an_entry_in_its_table() {
    let page = read("docs/configuration.md");
    let mut missing = Vec::new();
    for (name, heading, toml) in TABLES {
        let documented = entries(section(&page, heading));
        for key in accepted_keys(name, toml) {
            if !documented.contains(&key) {
                missing.push(format!("{name} `{key}` (section {heading:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys the loader accepts with no row in docs/configuration.md:\n  {}",
        missing.join("\n  ")
    );
}

/// Guards the list above: every table of the file as written (`#[serde(deny_unknown_fields)]`
/// structs in `src/config/raw.rs`) is probed, so a new table cannot slip past the key test.
#[test]
fn every_table_of_the_config_is_probed() {
    let raw = read("src/config/raw.rs");
    let strict = raw.matches("#[serde(deny_unknown_fields)]").count();
    assert!(
        strict > 0,
        "src/config/raw.rs has no strict struct any more"
    );
    let probed: BTreeSet<Vec<String>> = TABLES
        .iter()
        .map(|(name, _, toml)| accepted_keys(name, toml))
        .collect();
    assert_eq!(
        probed.len(),
        strict,
        "src/config/raw.rs has {strict} tables that refuse unknown keys; tests/docs.rs probes {} distinct ones: add the new table to TABLES and its section to docs/configuration.md",
        probed.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// The families a real agent exposes: every family registered, at `[agent] detail = "full"`,
/// with one chain of every per-hop feature, CloudWatch, discovery, gateway log lookups and auth
/// watched. Families whose series only exist in some states (a chain down, a fact known) have
/// no `# TYPE` line until then: [`families_named_in_src`] finds those.
fn exposed_families() -> BTreeSet<String> {
    use hopwatch::export::prometheus::Metrics;
    let config = hopwatch::config::load_str(
        "docs.toml",
        r#"
[[chain]]
name = "orders"
kind = "rest-nlb-alb"
[[chain.hop]]
name = "gateway"
url = "https://example.com/prod/health"
[[chain.hop]]
name = "nlb"
url = "http://10.0.0.1/health"
health_url = "http://10.0.0.1:8080/health"
per_address = true
[[chain.hop]]
name = "alb"
url = "http://10.0.0.2/health"
[[chain.hop]]
name = "target"
url = "http://10.0.0.3/health"
expect_source = ["10.0.0.0/16"]
"#,
        &|_| None,
    )
    .expect("the docs test's config loads");
    let metrics = Metrics::new(Default::default());
    metrics.watch_cloudwatch(Default::default());
    metrics.watch_discovery(Default::default());
    metrics.watch_gateway_logs(Default::default());
    metrics.watch_auth(Default::default());
    metrics.set_detail(hopwatch::config::Detail::Full);
    metrics.set_chains(&config.chains);
    metrics.set_agent("docs", "", &config);
    metrics.config_loaded(true);
    let text = metrics.render();
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    // Without this, a broken render (nothing at all) would make the test vacuous.
    assert!(
        families.contains("hopwatch_probes_total") && families.contains("hopwatch_build_info"),
        "the exposition lacks the families every agent has:\n{text}"
    );
    families
}

/// Every string literal in `src/` that is exactly a metric name (`"hopwatch_..."`), the
/// `_sum`, `_count` and `_bucket` series of a family folded into it. The exposition misses
/// families with no series yet (`hopwatch_chain_broken_reason_info` of a chain that is up,
/// `hopwatch_vpc_link_status` before a walk); this catches them where they are named.
fn families_named_in_src(known: &BTreeSet<String>) -> BTreeSet<String> {
    let name = regex_lite::Regex::new(r#""(hopwatch_[a-z0-9_]+)""#).expect("valid");
    let mut out = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).expect("readable");
        for cap in name.captures_iter(&text) {
            let found = &cap[1];
            let family = ["_sum", "_count", "_bucket"]
                .iter()
                .find_map(|s| {
                    found.strip_suffix(s).filter(|base| {
                        known.contains(*base) || text.contains(&format!("\"{base}\""))
                    })
                })
                .unwrap_or(found);
            out.insert(family.to_string());
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Guards docs/metrics.md: every family the exporter writes (a real exposition at full detail,
/// plus every metric name written in `src/`) has a row of its own there.
#[test]
fn every_metric_family_has_an_entry() {
    let exposed = exposed_families();
    let mut families = exposed.clone();
    families.extend(families_named_in_src(&exposed));
    let documented = entries(prose_lines(&read("docs/metrics.md")));
    let missing: Vec<&String> = families
        .iter()
        .filter(|f| !documented.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "metric families with no row in docs/metrics.md: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reason codes and outcome classes

/// Guards docs/reason-codes.md: every reason code a verdict can carry has a row in the
/// "Reason codes" table.
#[test]
fn every_reason_code_has_an_entry() {
    let page = read("docs/reason-codes.md");
    let documented = entries(section(&page, "Reason codes"));
    let missing: Vec<&str> = hopwatch::diagnose::ReasonCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !documented.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "reason codes with no row in docs/reason-codes.md: {missing:?}"
    );
}

/// Guards docs/reason-codes.md: every outcome class a probe can end in (the `result` label) has
/// a row in the "Outcome classes" table.
#[test]
fn every_outcome_class_has_an_entry() {
    let page = read("docs/reason-codes.md");
    let documented = entries(section(&page, "Outcome classes"));
    let missing: Vec<&str> = hopwatch::probe::Outcome::ALL
        .iter()
        .map(|o| o.as_str())
        .filter(|o| !documented.contains(*o))
        .collect();
    assert!(
        missing.is_empty(),
        "outcome classes with no row in docs/reason-codes.md: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Modules

/// Guards docs/architecture.md: it names every module as `` `src/...` ``: each `src/*.rs`, each
/// directory `src/*/` and `src/*/*/`, and each `src/*/*.rs` but `mod.rs` (its directory stands
/// for it).
#[test]
fn architecture_names_every_module() {
    let page = read("docs/architecture.md");
    let mut wanted = Vec::new();
    let src = root().join("src");
    for path in children(&src) {
        let shown = shown(&path);
        if path.is_dir() {
            wanted.push(format!("{shown}/"));
            for inner in children(&path) {
                let inner_shown = self::shown(&inner);
                if inner.is_dir() {
                    wanted.push(format!("{inner_shown}/"));
                } else if inner.extension().is_some_and(|e| e == "rs")
                    && inner.file_name().is_some_and(|n| n != "mod.rs")
                {
                    wanted.push(inner_shown);
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            wanted.push(shown);
        }
    }
    assert!(wanted.len() > 20, "src/ looks empty: {wanted:?}");
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !page.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "modules docs/architecture.md does not name (as `src/...`): {missing:?}"
    );
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").path())
        .collect();
    out.sort();
    out
}

/// `src/discover/walk.rs`, from the repository's root, with `/` whatever the platform.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("under the root")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// The README

/// Guards the README as a first read: at most 20,000 bytes, and the two commands a newcomer
/// runs first on its first screen (the first 2,000 bytes).
#[test]
fn readme_is_short_and_starts_with_the_two_commands() {
    let readme = read("README.md");
    assert!(
        readme.len() <= 20_000,
        "README.md is {} bytes; move a subject to docs/ (at most 20,000)",
        readme.len()
    );
    let first = &readme.as_bytes()[..readme.len().min(2_000)];
    let first = String::from_utf8_lossy(first);
    for command in ["cargo run --release -- demo", "./scripts/test"] {
        assert!(
            first.contains(command),
            "{command:?} is not in README.md's first 2,000 bytes"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Links

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces made
/// `-`; a repeated heading gets `-1`, `-2`, ...
fn anchors(page: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in prose_lines(page) {
        let Some(text) = heading_text(line) else {
            continue;
        };
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// Every `[text](target)` of a page's prose, inline code left out (a TOML table such as
/// `[[chain]]` is not a link).
fn links(page: &str) -> Vec<String> {
    let link = regex_lite::Regex::new(r"\]\(([^)\s]+)\)").expect("valid");
    let mut out = Vec::new();
    for line in prose_lines(page) {
        let outside_code: String = line
            .split('`')
            .enumerate()
            .map(|(i, part)| if i % 2 == 0 { part } else { "" })
            .collect();
        out.extend(link.captures_iter(&outside_code).map(|c| c[1].to_string()));
    }
    out
}

/// Guards every relative link of README.md and docs/*.md: it points at a file that exists, and
/// an `#anchor` into a Markdown page at one of its headings as GitHub names them.
#[test]
fn every_relative_link_leads_somewhere() {
    let mut pages = vec![root().join("README.md")];
    pages.extend(
        children(&root().join("docs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    assert!(pages.len() > 10, "docs/ has too few pages: {pages:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("readable");
        let dir = page.parent().expect("in a directory");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let from = shown(page);
            if !file.exists() {
                broken.push(format!("{from}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if file.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&file).expect("readable");
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!("{from}: {target}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "links that lead nowhere:\n  {}",
        broken.join("\n  ")
    );
}
