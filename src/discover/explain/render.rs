//! `explain`'s table: one block per chain, one line per edge, port and check.

use std::fmt::Write as _;

use super::Explained;

/// The human table.
pub fn table(explained: &Explained) -> String {
    let mut out = String::new();
    for chain in &explained.chains {
        let blocked = chain.edges.iter().filter(|e| e.state.blocks()).count();
        let unknown = chain
            .edges
            .iter()
            .filter(|e| e.state == crate::facts::EdgeState::Unknown)
            .count();
        let _ = writeln!(
            out,
            "chain {} ({})  {}",
            chain.name,
            chain.kind,
            match (blocked, unknown) {
                (0, 0) if chain.edges.is_empty() => "nothing to check".to_string(),
                (0, 0) => "every edge allowed".to_string(),
                (0, u) => format!("{u} check(s) could not be judged"),
                (n, 0) => format!("{n} check(s) fail"),
                (n, u) => format!("{n} check(s) fail, {u} could not be judged"),
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
            if let Some(why) = &e.unknown {
                let _ = writeln!(out, "{pad}{why}");
            }
            if let Some(stale) = &e.stale {
                let _ = writeln!(out, "{pad}judged on {stale}");
            }
        }
        for note in &chain.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out.push('\n');
    }
    out
}
