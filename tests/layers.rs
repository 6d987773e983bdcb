//! The data flows one way: config → schedule → probe → record/diagnose → export, with the
//! commands on top. This test reads every `crate::…` path in `src/` (outside test code) and
//! fails on an import that points up the stack or closes a circle between the modules of
//! `export/`. It also writes the import graph to `target/layers/imports.dot` (render it with
//! `dot -Tsvg`) and prints it, so the picture is always the code's own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom of the stack up. A module may import modules of a lower
/// layer only. The schedule fires probes, so it sits above `probe` (it hands hops to the
/// prober); everything downstream reads what the stages before it produced.
const LAYERS: &[(&str, u8)] = &[
    ("config", 0), // the checked config, and the names it must keep dimensions off
    ("aws", 0),    // the AWS SDK config every client loads
    ("wire", 0),   // the echo's reply, shared by the responder and the reader
    ("facts", 0),  // what AWS says of a chain: plain data discovery writes, the record reads
    ("probe", 1),  // one HTTP(S) probe
    ("source", 1), // what a target saw, read from an echo reply
    ("schedule", 2),
    ("ecs", 2),  // task metadata, read with the prober
    ("echo", 2), // the responder
    ("diagnose", 3),
    ("record", 4),
    ("export", 5),
    ("discover", 6),   // walks AWS into an estate, a config and facts
    ("gatewaylog", 6), // what API Gateway logged of a request, read from CloudWatch Logs
    ("agent", 7),
    ("check", 7),
    ("demo", 7),
    ("cli", 8),
];

/// Inside `export`, sinks may read each other's plain data in one direction only: the
/// Prometheus endpoint shows the CloudWatch publisher's counters, never the reverse.
const EXPORT_LAYERS: &[(&str, u8)] = &[
    ("log", 0),
    ("cloudwatch", 0),
    ("prometheus", 1),
    ("server", 2),
];

fn layer(of: &[(&str, u8)], name: &str) -> Option<u8> {
    of.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its test module (by convention the last item) and without
/// comments, so neither doc text nor tests count as imports.
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b` paths: (a, b), b empty when the path stops at `a`.
fn crate_paths(code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let first = ident(after);
        let second = after[first.len()..]
            .strip_prefix("::")
            .map(ident)
            .unwrap_or_default();
        out.push((first, second));
        rest = after;
    }
    out
}

#[test]
fn imports_only_point_down_the_stack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let module = parts[0].clone();
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        // Test-only modules (hand-made rounds) may use anything.
        if rel.ends_with("testing.rs") {
            continue;
        }
        let Some(own) = layer(LAYERS, &module) else {
            wrong.push(format!(
                "{}: module {module} has no layer in tests/layers.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for (to, sub) in crate_paths(&production_code(&text)) {
            if to == module {
                if module == "export" && parts.len() > 1 {
                    let from_sub = &parts[1];
                    if from_sub != &sub {
                        if let (Some(a), Some(b)) =
                            (layer(EXPORT_LAYERS, from_sub), layer(EXPORT_LAYERS, &sub))
                        {
                            if b >= a {
                                wrong.push(format!(
                                    "{}: export::{from_sub} imports export::{sub}",
                                    rel.display()
                                ));
                            }
                        }
                    }
                }
                continue;
            }
            let Some(theirs) = layer(LAYERS, &to) else {
                continue; // a macro path or a name that is not a module
            };
            edges
                .entry((module.clone(), to.clone()))
                .or_default()
                .insert(rel.display().to_string());
            if theirs >= own {
                wrong.push(format!(
                    "{}: {module} (layer {own}) imports crate::{to}{} (layer {theirs})",
                    rel.display(),
                    if sub.is_empty() {
                        String::new()
                    } else {
                        format!("::{sub}")
                    }
                ));
            }
        }
    }

    let mut dot = String::from("digraph imports {\n  rankdir=LR;\n");
    for (l, _) in LAYERS
        .iter()
        .map(|(n, l)| (*l, *n))
        .collect::<BTreeMap<_, _>>()
    {
        let same: Vec<&str> = LAYERS
            .iter()
            .filter(|(_, x)| *x == l)
            .map(|(n, _)| *n)
            .collect();
        dot.push_str(&format!("  {{ rank=same; {} }}\n", same.join("; ")));
    }
    for (from, to) in edges.keys() {
        dot.push_str(&format!("  {from} -> {to};\n"));
    }
    dot.push_str("}\n");
    let out = root.join("target/layers");
    std::fs::create_dir_all(&out).expect("target/layers");
    std::fs::write(out.join("imports.dot"), &dot).expect("write dot");
    println!("{dot}");

    assert!(
        wrong.is_empty(),
        "imports that point up the stack:\n{}",
        wrong.join("\n")
    );
    // The graph is read from the code: a stack this size has a few dozen edges. Far fewer
    // means the scan stopped seeing imports.
    assert!(
        edges.len() >= 20,
        "only {} edges found: {edges:?}",
        edges.len()
    );
}

#[test]
fn the_scan_sees_an_upward_import() {
    // The scanner itself: a path to a higher layer is found, comments are not.
    let code = production_code(
        "use crate::export::prometheus::Metrics;\n// crate::agent in a comment\nfn f() { crate::config::load(); }\n#[cfg(test)]\nmod tests { use crate::cli; }\n",
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths,
        [
            ("export".to_string(), "prometheus".to_string()),
            ("config".to_string(), "load".to_string())
        ]
    );
}
