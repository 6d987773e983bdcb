//! `explain`'s table: one block per chain, one line per edge, port and check.

use std::fmt::Write as _;

use super::Explained;

/// The human table.
pub fn table(explained: &Explained) -> String {
    let mut out = String::new();
    for chain in &explained.chains {
        let missing = chain.edges.iter().filter(|e| !e.allowed).count();
        let _ = writeln!(
            out,
            "chain {} ({})  {}",
            chain.name,
            chain.kind,
            match missing {
                0 if chain.edges.is_empty() => "nothing to check".to_string(),
                0 => "every edge allowed".to_string(),
                n => format!("{n} check(s) fail"),
            }
        );
        let edge_w = chain
            .edges
            .iter()
            .map(|e| e.from.len() + e.to.len() + 4)
            .max()
            .unwrap_or(4)
            .max(4);
        if !chain.edges.is_empty() {
            let _ = writeln!(
                out,
                "  {:<edge_w$}  {:>5}  {:<12}  {:<7}  {:<7}  SOURCE / RULE OR FIX",
                "EDGE", "PORT", "PURPOSE", "CHECK", "VERDICT"
            );
        }
        for e in &chain.edges {
            let edge = format!("{} -> {}", e.from, e.to);
            let _ = writeln!(
                out,
                "  {edge:<edge_w$}  {:>5}  {:<12}  {:<7}  {:<7}  {}",
                e.port,
                e.purpose.as_str(),
                e.direction.as_str(),
                e.verdict(),
                e.source
            );
            let pad = " ".repeat(edge_w + 2 + 5 + 2 + 12 + 2 + 7 + 2 + 7 + 2 + 2);
            if let Some(rule) = &e.rule {
                let _ = writeln!(out, "{pad}{rule}");
            }
            if let Some(fix) = &e.fix {
                let _ = writeln!(out, "{pad}fix: {fix}");
            }
        }
        for note in &chain.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out.push('\n');
    }
    out
}
