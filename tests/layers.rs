//! The data flows one way: config → schedule → probe → record/diagnose → export, with the
//! commands on top. This test reads every path into the crate in `src/` (outside test code) and
//! fails on an import that points up the stack or closes a circle, between the top-level modules
//! and between the modules of `export/` and of `discover/`. It also writes the import graph to
//! `target/layers/imports.dot` (render it with `dot -Tsvg`) and prints it, so the picture is
//! always the code's own.
//!
//! What counts as a path into the crate: `crate::a::b`, grouped (`crate::{a::X, b::{Y, Z}}`, to
//! any depth), `super::…` and `self::…` resolved from the module the code is in (a file's own
//! module, and any inline `mod m { … }` it sits in), and a path that starts with a child module
//! the same module declares (`mod read;` … `read::Clients`). Comments, strings and test code
//! (`#[cfg(test)]` items wherever they are, files such an item declares, files named `tests.rs`
//! or under a `tests/` directory) are not read.

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
    ("auth", 1),   // the agent's own credentials (SigV4, OAuth 2.0 tokens), handed to the probe
    ("source", 1), // what a target saw, read from an echo reply
    ("probe", 2),  // one HTTP(S) probe
    ("schedule", 3),
    ("ecs", 3),  // task metadata, read with the prober
    ("echo", 3), // the responder
    ("diagnose", 4),
    ("record", 5),
    ("export", 6),
    ("discover", 7),   // walks AWS into an estate, a config and facts
    ("gatewaylog", 7), // what API Gateway logged of a request, read from CloudWatch Logs
    ("agent", 8),
    ("check", 8),
    ("demo", 8),
    ("cli", 9),
];

/// Inside `export`, sinks may read each other's plain data in one direction only: the
/// Prometheus endpoint shows the CloudWatch publisher's counters, never the reverse.
/// (`export/mod.rs` has no layer here: it holds the `Sink` trait the sinks implement.)
const EXPORT_LAYERS: &[(&str, u8)] = &[
    ("log", 0),
    ("cloudwatch", 0),
    ("prometheus", 1),
    ("server", 2),
];

/// Inside `discover`: a module may import siblings of a lower layer only, so two modules of
/// one layer never import each other. The pure steps sit at 1, beside the protocol and the
/// budget, because "lower" is then `model` alone: nothing that calls AWS is theirs to import.
/// `"mod"` is `discover/mod.rs` and anything declared there.
const DISCOVER_LAYERS: &[(&str, u8)] = &[
    // Plain data every other piece shares (estate, chains, the network, errors): imports no
    // sibling, so the readers, the pure steps and the walk can all meet on it.
    ("model", 0),
    // EC2's Query API spoken directly (the form body, filters, the XML answer), below the EC2
    // reader that uses it.
    ("ec2", 1),
    // The budget, the paging loop and the one error mapping every read goes through; its
    // errors are model's `WalkError`.
    ("call", 1),
    // Pure: from what the services said to chains, model in and model out (and the crate's
    // config and facts). It must be testable from tables, so it may not reach a reader.
    ("assemble", 1),
    // Pure: judges the rules along a path from model's network, for the walk and the
    // `explain` command.
    ("explain", 1),
    // Pure: chains as a commented config, from model's chains.
    ("render", 1),
    // One reader per service: calls through `call`'s budget, EC2 through `ec2`, answers as
    // model's data.
    ("read", 2),
    // The readers in order, then assemble and explain on what they read: everything below.
    ("walk", 3),
    // `discover/mod.rs` re-exports for the rest of the crate; nothing inside imports from it.
    ("mod", 4),
];

/// The stacks inside a top-level module, by that module's name.
const INNER: &[(&str, &[(&str, u8)])] = &[("export", EXPORT_LAYERS), ("discover", DISCOVER_LAYERS)];

/// The pure pieces of `discover` do no I/O: of the rest of the crate they read plain data only.
const DISCOVER_PURE: &[&str] = &["model", "assemble", "explain", "render"];
const PURE_MAY_READ: &[&str] = &["config", "facts"];

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

/// The module a file under `src/` is: `x.rs` and `x/mod.rs` are `x`, `x/y.rs` is `x::y`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Test code by its file's name: `tests.rs`, or anything under a `tests/` directory.
fn named_as_tests(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n == "tests.rs")
        || rel.parent().is_some_and(|d| d.iter().any(|c| c == "tests"))
}

/// One token of Rust code: comments are dropped, every literal is `<lit>`, a lifetime `'_`.
#[derive(Debug)]
struct Tok {
    text: String,
    line: usize,
}

fn is_ident(text: &str) -> bool {
    text == "$crate"
        || text
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let ident_char = |x: char| x.is_alphanumeric() || x == '_';
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Counts the lines a skipped stretch spans.
    let skip = |from: usize, to: usize, line: &mut usize| {
        *line += c[from..to.min(c.len())]
            .iter()
            .filter(|x| **x == '\n')
            .count();
        to
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        let push = |out: &mut Vec<Tok>, text: &str, line: usize| {
            out.push(Tok {
                text: text.to_string(),
                line,
            })
        };
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest.
            let (start, mut depth) = (i, 0);
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            skip(start, i, &mut line);
        } else if ch == '"' {
            let start = i;
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            let at = line;
            i = skip(start, i + 1, &mut line);
            push(&mut out, "<lit>", at);
        } else if ch == '\'' {
            if next == Some('\\') {
                // An escaped char: '\n', '\'', '\u{1F600}'.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                push(&mut out, "<lit>", line);
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                push(&mut out, "<lit>", line);
            } else {
                // A lifetime or a label.
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                push(&mut out, "'_", line);
            }
        } else if ch.is_alphabetic() || ch == '_' || (ch == '$' && next.is_some_and(ident_char)) {
            let start = i;
            i += 1;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            if matches!(word.as_str(), "r" | "br" | "cr") {
                let hashes = c[i..].iter().take_while(|x| **x == '#').count();
                if c.get(i + hashes) == Some(&'"') {
                    // A raw string: it ends at a quote followed by as many hashes.
                    let start = i;
                    i += hashes + 1;
                    while i < c.len()
                        && !(c[i] == '"'
                            && c[i + 1..].iter().take_while(|x| **x == '#').count() >= hashes)
                    {
                        i += 1;
                    }
                    let at = line;
                    i = skip(start, i + 1 + hashes, &mut line);
                    push(&mut out, "<lit>", at);
                    continue;
                }
                if word == "r" && hashes == 1 && c.get(i + 1).is_some_and(|x| x.is_alphabetic()) {
                    // A raw identifier, r#type: the name is the identifier.
                    i += 1;
                    let start = i;
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                    let name: String = c[start..i].iter().collect();
                    push(&mut out, &name, line);
                    continue;
                }
            }
            push(&mut out, &word, line);
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            push(&mut out, "<lit>", line);
        } else if ch == ':' && next == Some(':') {
            i += 2;
            push(&mut out, "::", line);
        } else {
            i += 1;
            push(&mut out, &ch.to_string(), line);
        }
    }
    out
}

/// The index of the bracket that closes the one at `open`.
fn closing(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Where the item starting at `i` ends: after its `;` or its closing brace, or at the bracket
/// that closes the scope it sits in.
fn item_end(toks: &[Tok], i: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t.text.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                if depth == 0 {
                    return j;
                }
                depth -= 1;
                if depth == 0 && t.text == "}" {
                    return j + 1;
                }
            }
            ";" if depth == 0 => return j + 1,
            _ => {}
        }
    }
    toks.len()
}

/// Reads the path (or use tree) starting at `i`: every leaf, each with its segments from the
/// start of the path and the line it is on. Returns where the path ends.
fn use_tree(
    toks: &[Tok],
    mut i: usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let base = prefix.len();
    while let Some(t) = toks.get(i) {
        if t.text == "{" {
            i += 1;
            while let Some(t) = toks.get(i) {
                if t.text == "}" {
                    i += 1;
                    break;
                }
                if is_ident(&t.text) || t.text == "*" {
                    i = use_tree(toks, i, prefix, leaves);
                    // `as name`, up to the next member.
                    while toks.get(i).is_some_and(|t| t.text != "," && t.text != "}") {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
            break;
        }
        if is_ident(&t.text) || t.text == "*" {
            prefix.push(t.text.clone());
            i += 1;
            if toks.get(i).is_some_and(|t| t.text == "::") {
                i += 1;
                continue;
            }
            leaves.push((prefix.clone(), t.line));
        } else if prefix.len() > base {
            // `::<` of a turbofish: the path is what came before.
            leaves.push((prefix.clone(), toks[i - 1].line));
        }
        break;
    }
    prefix.truncate(base);
    i
}

/// The module (and item) a path names, from the module `scope` it is written in; `children`
/// are the modules `scope` declares. None for a path that leaves the crate.
fn resolve(
    scope: &[String],
    segments: &[String],
    children: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let first = segments.first()?;
    let mut path = Vec::new();
    let mut rest = segments;
    if first == "crate" || first == "$crate" {
        rest = &segments[1..];
    } else if first == "self" || first == "super" {
        path = scope.to_vec();
        while let Some(s) = rest.first() {
            match s.as_str() {
                "self" => {}
                "super" => {
                    path.pop()?;
                }
                _ => break,
            }
            rest = &rest[1..];
        }
    } else if children.contains(first) {
        path = scope.to_vec();
    } else {
        return None;
    }
    path.extend(rest.iter().filter(|s| *s != "self" && *s != "*").cloned());
    Some(path)
}

/// A path into the crate: where it is written, as written, and the module path (and item) it
/// names from the crate root.
#[derive(Debug)]
struct Import {
    line: usize,
    written: String,
    target: Vec<String>,
}

#[derive(Debug, Default)]
struct Scanned {
    /// Every path into the crate outside test code.
    imports: Vec<Import>,
    /// The modules a `#[cfg(test)] mod name;` (or `{ … }`) declares: test code, whatever the
    /// file is named.
    test_modules: Vec<Vec<String>>,
    /// `#![cfg(test)]` at the top: the whole file is test code.
    test_only: bool,
}

/// Reads one file's code as the module `module`.
fn scan(code: &str, module: &[String]) -> Scanned {
    let toks = tokens(code);
    let mut out = Scanned::default();
    // The module the code at `i` is in, and the brace depth each inline module opened at.
    let mut scope = module.to_vec();
    let mut opened: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut paths: Vec<(Vec<String>, Vec<String>, usize)> = Vec::new();
    let mut test_next = false;
    let text = |j: usize| toks.get(j).map_or("", |t| t.text.as_str());
    let mut i = 0;
    while i < toks.len() {
        let t = text(i);
        if t == "#" {
            let inner = text(i + 1) == "!";
            let open = i + 1 + usize::from(inner);
            if text(open) == "[" {
                let close = closing(&toks, open);
                let attr: Vec<&str> = toks[open + 1..close.min(toks.len())]
                    .iter()
                    .map(|t| t.text.as_str())
                    .collect();
                i = close + 1;
                if attr == ["cfg", "(", "test", ")"] {
                    if !inner {
                        test_next = true;
                    } else if opened.is_empty() {
                        out.test_only = true;
                        return out;
                    } else {
                        // The rest of this inline module is test code.
                        i = item_end(&toks, i);
                    }
                }
                continue;
            }
        }
        if test_next {
            test_next = false;
            let end = item_end(&toks, i);
            let mut j = i;
            if text(j) == "pub" {
                j += 1;
                if text(j) == "(" {
                    j = closing(&toks, j) + 1;
                }
            }
            if text(j) == "mod" && is_ident(text(j + 1)) {
                let mut m = scope.clone();
                m.push(text(j + 1).to_string());
                out.test_modules.push(m);
            }
            i = end.max(i + 1);
            continue;
        }
        match t {
            "mod" if is_ident(text(i + 1)) && matches!(text(i + 2), "{" | ";") => {
                let name = text(i + 1).to_string();
                children
                    .entry(scope.clone())
                    .or_default()
                    .insert(name.clone());
                if text(i + 2) == "{" {
                    scope.push(name);
                    opened.push(depth);
                    depth += 1;
                }
                i += 3;
            }
            "{" => {
                depth += 1;
                i += 1;
            }
            "}" => {
                depth = depth.saturating_sub(1);
                if opened.last() == Some(&depth) {
                    opened.pop();
                    scope.pop();
                }
                i += 1;
            }
            _ if is_ident(t) && text(i + 1) == "::" && (i == 0 || text(i - 1) != "::") => {
                let mut leaves = Vec::new();
                i = use_tree(&toks, i, &mut Vec::new(), &mut leaves);
                for (segments, line) in leaves {
                    paths.push((scope.clone(), segments, line));
                }
            }
            _ => i += 1,
        }
    }
    let none = BTreeSet::new();
    for (scope, segments, line) in paths {
        let children = children.get(&scope).unwrap_or(&none);
        if let Some(target) = resolve(&scope, &segments, children) {
            out.imports.push(Import {
                line,
                written: segments.join("::"),
                target,
            });
        }
    }
    out
}

/// The import graph, each edge with the files that draw it.
#[derive(Debug, Default)]
struct Graph {
    /// Between top-level modules.
    top: BTreeMap<(String, String), BTreeSet<String>>,
    /// Inside one top-level module with a stack of its own: (that module, from, to).
    inner: BTreeMap<(String, String, String), BTreeSet<String>>,
}

/// Judges the imports of the file `file` (a name for messages) of module `module`; `modules`
/// are the crate's modules (from its files), so that `discover::x` is known as a module or
/// as an item of `discover/mod.rs`. Returns what is wrong, and draws the edges in `graph`.
fn judge(
    file: &str,
    module: &[String],
    imports: &[Import],
    modules: &BTreeSet<Vec<String>>,
    graph: &mut Graph,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let top = module[0].as_str();
    let Some(own) = layer(LAYERS, top) else {
        return vec![format!(
            "{file}: module {top} has no layer in tests/layers.rs"
        )];
    };
    let stack = INNER.iter().find(|(n, _)| *n == top).map(|(_, s)| *s);
    let from = module.get(1).map_or("mod", |s| s.as_str());
    if let Some(stack) = stack {
        if from != "mod" && layer(stack, from).is_none() {
            wrong.push(format!(
                "{file}: module {top}::{from} has no layer inside {top} in tests/layers.rs"
            ));
        }
    }
    for Import {
        line,
        written,
        target,
    } in imports
    {
        let Some(to) = target.first().map(|s| s.as_str()) else {
            continue; // the crate root itself
        };
        if to != top {
            let Some(theirs) = layer(LAYERS, to) else {
                continue; // a macro path or a name that is not a module
            };
            graph
                .top
                .entry((top.to_string(), to.to_string()))
                .or_default()
                .insert(file.to_string());
            if theirs >= own {
                wrong.push(format!(
                    "{file}:{line}: {top} (layer {own}) imports {to} (layer {theirs}): {written}"
                ));
            }
            if top == "discover" && DISCOVER_PURE.contains(&from) && !PURE_MAY_READ.contains(&to) {
                wrong.push(format!(
                    "{file}:{line}: discover::{from} is pure but imports {to}: {written}"
                ));
            }
            continue;
        }
        let Some(stack) = stack else { continue };
        let to_sub = match target.get(1) {
            Some(s) if modules.contains(&vec![top.to_string(), s.clone()]) => s.as_str(),
            _ => "mod",
        };
        if to_sub == from {
            continue;
        }
        let (Some(a), Some(b)) = (layer(stack, from), layer(stack, to_sub)) else {
            continue;
        };
        graph
            .inner
            .entry((top.to_string(), from.to_string(), to_sub.to_string()))
            .or_default()
            .insert(file.to_string());
        if b >= a {
            wrong.push(format!(
                "{file}:{line}: {top}::{from} (layer {a}) imports {top}::{to_sub} (layer {b}): {written}"
            ));
        }
    }
    wrong
}

/// A circle in a graph, as the nodes along it (the first again at the end), if there is one.
fn cycle<'a>(edges: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == n) {
            let mut circle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            circle.push(n.to_string());
            return Some(circle);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for m in next.get(n).into_iter().flatten() {
            if let Some(circle) = visit(m, next, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let mut done = BTreeSet::new();
    let starts: Vec<&str> = next.keys().copied().collect();
    starts
        .into_iter()
        .find_map(|n| visit(n, &next, &mut Vec::new(), &mut done))
}

/// Every circle in the graph, top-level and inside each stack.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut wrong = Vec::new();
    if let Some(c) = cycle(graph.top.keys().map(|(a, b)| (a.as_str(), b.as_str()))) {
        wrong.push(format!("a circle: {}", c.join(" -> ")));
    }
    for (name, _) in INNER {
        let edges = graph
            .inner
            .keys()
            .filter(|(m, _, _)| m == name)
            .map(|(_, a, b)| (a.as_str(), b.as_str()));
        if let Some(c) = cycle(edges) {
            wrong.push(format!("a circle inside {name}: {}", c.join(" -> ")));
        }
    }
    wrong
}

fn dot(graph: &Graph) -> String {
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
    for (from, to) in graph.top.keys() {
        dot.push_str(&format!("  {from} -> {to};\n"));
    }
    for (name, stack) in INNER {
        dot.push_str(&format!(
            "  subgraph cluster_{name} {{\n    label=\"{name}/\";\n"
        ));
        let layers: BTreeSet<u8> = stack.iter().map(|(_, l)| *l).collect();
        for l in layers {
            let same: Vec<String> = stack
                .iter()
                .filter(|(_, x)| *x == l)
                .map(|(n, _)| format!("\"{name}::{n}\""))
                .collect();
            dot.push_str(&format!("    {{ rank=same; {} }}\n", same.join("; ")));
        }
        for (_, from, to) in graph.inner.keys().filter(|(m, _, _)| m == name) {
            dot.push_str(&format!("    \"{name}::{from}\" -> \"{name}::{to}\";\n"));
        }
        dot.push_str("  }\n");
    }
    dot.push_str("}\n");
    dot
}

#[test]
fn imports_only_point_down_the_stack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut read = Vec::new();
    let mut modules = BTreeSet::new();
    let mut test_modules = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let module = module_of(rel);
        if matches!(module[0].as_str(), "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        let scanned = scan(&text, &module);
        test_modules.extend(scanned.test_modules.iter().cloned());
        modules.insert(module.clone());
        read.push((rel.to_path_buf(), module, scanned));
    }

    let mut graph = Graph::default();
    let mut wrong = Vec::new();
    let mut skipped = Vec::new();
    for (rel, module, scanned) in &read {
        // Test-only modules (hand-made rounds, table tests) may use anything.
        if scanned.test_only
            || named_as_tests(rel)
            || test_modules.iter().any(|t| module.starts_with(t))
        {
            skipped.push(rel.display().to_string());
            continue;
        }
        let name = format!("src/{}", rel.display());
        wrong.extend(judge(&name, module, &scanned.imports, &modules, &mut graph));
    }
    wrong.extend(cycles(&graph));

    let dot = dot(&graph);
    let out = root.join("target/layers");
    std::fs::create_dir_all(&out).expect("target/layers");
    std::fs::write(out.join("imports.dot"), &dot).expect("write dot");
    println!("{dot}");
    println!("test code, not read: {}", skipped.join(", "));

    assert!(
        wrong.is_empty(),
        "imports that point up the stack:\n{}",
        wrong.join("\n")
    );
    // The graph is read from the code: a stack this size has a few dozen edges. Far fewer
    // means the scan stopped seeing imports.
    assert!(
        graph.top.len() >= 20,
        "only {} edges found: {:?}",
        graph.top.len(),
        graph.top.keys()
    );
    let discover = graph
        .inner
        .keys()
        .filter(|(m, _, _)| m == "discover")
        .count();
    assert!(
        discover >= 10,
        "only {discover} edges inside discover: {:?}",
        graph.inner.keys()
    );
}

fn module(path: &str) -> Vec<String> {
    path.split("::").map(str::to_string).collect()
}

fn targets(scanned: &Scanned) -> Vec<String> {
    scanned
        .imports
        .iter()
        .map(|i| i.target.join("::"))
        .collect()
}

/// The modules of a small made-up crate: the real one's top-level modules and the inner
/// stacks' members.
fn made_up_modules() -> BTreeSet<Vec<String>> {
    let mut modules: BTreeSet<Vec<String>> = LAYERS.iter().map(|(n, _)| module(n)).collect();
    for (name, stack) in INNER {
        for (n, _) in stack.iter().filter(|(n, _)| *n != "mod") {
            modules.insert(vec![name.to_string(), n.to_string()]);
        }
    }
    modules
}

/// What is wrong with `code` as the module `path`.
fn judged(code: &str, path: &str) -> Vec<String> {
    let scanned = scan(code, &module(path));
    judge(
        "code",
        &module(path),
        &scanned.imports,
        &made_up_modules(),
        &mut Graph::default(),
    )
}

#[test]
fn the_scan_sees_an_upward_import() {
    // The scanner itself: a path to a higher layer is found, comments are not.
    let code = "use crate::export::prometheus::Metrics;\n// crate::agent in a comment\nfn f() { crate::config::load(); }\n#[cfg(test)]\nmod tests { use crate::cli; }\n";
    assert_eq!(
        targets(&scan(code, &module("probe"))),
        ["export::prometheus::Metrics", "config::load"]
    );
    assert_eq!(
        judged(code, "probe"),
        ["code:1: probe (layer 2) imports export (layer 6): crate::export::prometheus::Metrics"]
    );
}

#[test]
fn the_scan_sees_a_grouped_upward_import() {
    let code = "use crate::{config::Chain, facts::{A, B}, probe};\nuse crate::{\n    wire,\n    export::{prometheus::{self, Metrics as M}, log},\n};\n";
    assert_eq!(
        targets(&scan(code, &module("record"))),
        [
            "config::Chain",
            "facts::A",
            "facts::B",
            "probe",
            "wire",
            "export::prometheus",
            "export::prometheus::Metrics",
            "export::log",
        ]
    );
    assert_eq!(
        judged(code, "record"),
        [
            "code:4: record (layer 5) imports export (layer 6): crate::export::prometheus::self",
            "code:4: record (layer 5) imports export (layer 6): crate::export::prometheus::Metrics",
            "code:4: record (layer 5) imports export (layer 6): crate::export::log",
        ]
    );
}

#[test]
fn the_scan_resolves_super_paths() {
    // src/config/validate/chain.rs: super is config::validate, super::super is config, and a
    // third super is the crate root.
    let code = "use super::super::raw::RawChain;\nuse super::{hop::HopLimits, Checker};\nuse super::super::*;\nfn f() { super::super::super::facts::x(); }\n";
    assert_eq!(
        targets(&scan(code, &module("config::validate::chain"))),
        [
            "config::raw::RawChain",
            "config::validate::hop::HopLimits",
            "config::validate::Checker",
            "config",
            "facts::x",
        ]
    );
    // In src/a/b.rs super::super is the crate root; in src/a/mod.rs super is.
    assert_eq!(
        judged("use super::super::export::Sink;\n", "record::window"),
        ["code:1: record (layer 5) imports export (layer 6): super::super::export::Sink"]
    );
    assert_eq!(
        judged("fn f() { super::export::log::x(); }\n", "record"),
        ["code:1: record (layer 5) imports export (layer 6): super::export::log::x"]
    );
    // Going above the crate root leaves the crate: not a path this test can judge.
    assert!(targets(&scan("use super::super::x;", &module("probe"))).is_empty());
}

#[test]
fn self_paths_stay_in_their_module() {
    // self:: and inline modules: the inline module is the scope of its own super.
    let code = "use self::inner::X;\nimpl S { fn f(&self) -> Self { self.g(); Self::new() } }\nmod inner {\n    pub use super::super::facts::Y;\n    pub use self::deeper::Z;\n    mod deeper {}\n}\nuse inner::W;\n";
    assert_eq!(
        targets(&scan(code, &module("record"))),
        [
            "record::inner::X",
            "facts::Y",
            "record::inner::deeper::Z",
            "record::inner::W",
        ]
    );
    assert!(judged(code, "record").is_empty());
}

#[test]
fn test_code_strings_and_comments_are_not_read() {
    let code = r####"
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod outcome_tests {
    use crate::cli;
}
/* crate::agent /* nested */ crate::agent */
const A: &str = "crate::agent \" crate::agent";
const B: &str = r#"crate::agent " crate::agent"#;
const C: char = '"';
fn f<'a>(x: &'a str) -> char { '\'' }
use crate::config::X;
"####;
    let scanned = scan(code, &module("record"));
    assert_eq!(targets(&scanned), ["config::X"]);
    assert_eq!(scanned.imports[0].line, 13);
    assert_eq!(
        scanned.test_modules,
        [module("record::testing"), module("record::outcome_tests")]
    );
    assert!(scan("#![cfg(test)]\nuse crate::cli;", &module("record")).test_only);
}

#[test]
fn a_discover_internal_upward_import_is_caught() {
    let modules = made_up_modules();
    let mut graph = Graph::default();
    let mut check = |code: &str, path: &str| {
        let scanned = scan(code, &module(path));
        judge(
            "code",
            &module(path),
            &scanned.imports,
            &modules,
            &mut graph,
        )
    };
    // Downward: a reader imports the budget and the data; the walk imports the reader.
    assert!(check(
        "use super::super::call::{from_sdk, Service};\nuse super::super::model::aws::Lb;\n",
        "discover::read::elb"
    )
    .is_empty());
    assert!(check("use super::read::{self, Clients};\n", "discover::walk").is_empty());
    assert!(check("pub use walk::walk;\nmod walk;\n", "discover").is_empty());
    // The pure step reaching for a reader, by super:: and by crate::.
    assert_eq!(
        check(
            "fn f(uri: &str) { let l = super::read::elb::lb_of_listener(uri); }\nuse crate::discover::{model::Estate, call::Budget};\n",
            "discover::assemble"
        ),
        [
            "code:1: discover::assemble (layer 1) imports discover::read (layer 2): super::read::elb::lb_of_listener",
            "code:2: discover::assemble (layer 1) imports discover::call (layer 1): crate::discover::call::Budget",
        ]
    );
    // Model imports nothing of discover, not even what mod.rs declares.
    assert_eq!(
        check("use super::super::Estate;\n", "discover::model::net"),
        ["code:1: discover::model (layer 0) imports discover::mod (layer 4): super::super::Estate"]
    );
    // A pure step reads plain data only of the rest of the crate.
    assert_eq!(
        check(
            "use crate::aws::loader;\nuse crate::config::Kind;\n",
            "discover::render"
        ),
        ["code:1: discover::render is pure but imports aws: crate::aws::loader"]
    );
    assert_eq!(
        graph
            .inner
            .keys()
            .map(|(_, a, b)| format!("{a}->{b}"))
            .collect::<Vec<_>>(),
        [
            "assemble->call",
            "assemble->model",
            "assemble->read",
            "mod->walk",
            "model->mod",
            "read->call",
            "read->model",
            "walk->read",
        ]
    );
    // assemble -> read, read -> call, but model -> mod -> walk -> read -> model closes a circle.
    let circle = cycles(&graph);
    assert_eq!(circle.len(), 1, "{circle:?}");
    assert!(
        circle[0].starts_with("a circle inside discover: "),
        "{circle:?}"
    );
}

#[test]
fn a_circle_is_found() {
    assert_eq!(cycle([("a", "b"), ("b", "c")]), None);
    assert_eq!(
        cycle([("a", "b"), ("b", "c"), ("c", "b")]),
        Some(vec!["b".to_string(), "c".to_string(), "b".to_string()])
    );
}
