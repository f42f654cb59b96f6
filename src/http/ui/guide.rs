//! The error guide (`docs/errors.md`, the one source of every code's explanation), parsed
//! once into plain-words explanations the pages show next to a code.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

/// The guide's text, embedded at build time.
pub const ERRORS_MD: &str = include_str!("../../../docs/errors.md");

/// What the guide says about one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The code.
    pub code: String,
    /// The guide's section (`Recorded on failed runs (ingest_runs.error_code)`...).
    pub section: String,
    /// What it means, in plain words.
    pub meaning: String,
    /// What to do, when the guide says.
    pub action: Option<String>,
}

/// Every code the guide's tables explain, and the paragraphs that mention a code outside a
/// table (host codes given as examples), parsed from `text`. Pure.
pub fn parse(text: &str) -> BTreeMap<String, Explanation> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    let mut header: Vec<String> = Vec::new();
    let mut prose: Vec<(String, String)> = Vec::new();
    let mut in_code = false;
    let mut paragraph = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(title) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
        {
            section = plain(title);
            header.clear();
            continue;
        }
        if line.starts_with('|') {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if header.is_empty() {
                header = cells.iter().map(|c| c.to_lowercase()).collect();
            } else if !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                let code = cells[0].trim_matches('`');
                let col = |name: &str| {
                    header
                        .iter()
                        .position(|h| h.starts_with(name))
                        .and_then(|i| cells.get(i))
                        .map(|c| plain(c))
                };
                if let Some(meaning) = col("meaning") {
                    let status = col("status").map(|s| format!("slot {s}: "));
                    out.entry(code.to_string()).or_insert(Explanation {
                        code: code.to_string(),
                        section: section.clone(),
                        meaning: format!("{}{meaning}", status.unwrap_or_default()),
                        action: col("what"),
                    });
                }
            }
            continue;
        }
        header.clear();
        if line.trim().is_empty() {
            if !paragraph.is_empty() {
                prose.push((section.clone(), std::mem::take(&mut paragraph)));
            }
        } else {
            if !paragraph.is_empty() {
                paragraph.push(' ');
            }
            paragraph.push_str(line.trim());
        }
    }
    if !paragraph.is_empty() {
        prose.push((section.clone(), paragraph));
    }
    for (section, para) in prose {
        for code in para.split('`').skip(1).step_by(2) {
            let is_code = code.len() >= 3
                && code
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_code && !out.contains_key(code) {
                out.insert(
                    code.to_string(),
                    Explanation {
                        code: code.to_string(),
                        section: section.clone(),
                        meaning: plain(&para),
                        action: None,
                    },
                );
            }
        }
    }
    out
}

/// Markdown cell text as plain words: links keep their text, backticks go.
fn plain(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut rest = md;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace('`', "")
}

/// The explanation of `code` from the embedded guide, if it has one.
pub fn explain(code: &str) -> Option<&'static Explanation> {
    static GUIDE: OnceLock<BTreeMap<String, Explanation>> = OnceLock::new();
    GUIDE.get_or_init(|| parse(ERRORS_MD)).get(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_give_meaning_and_action() {
        let e = explain("RUN_ALREADY_ACTIVE").unwrap();
        assert!(
            e.meaning.contains("another run holds the lock key"),
            "{e:?}"
        );
        assert!(e
            .action
            .as_deref()
            .unwrap()
            .contains("wait for the active run"));
        let stalled = explain("STALLED").unwrap();
        assert!(stalled.action.as_deref().unwrap().starts_with("restart it"));
        assert!(!stalled.action.as_deref().unwrap().contains("crate::"));
    }

    #[test]
    fn slot_codes_carry_their_status_and_prose_codes_their_paragraph() {
        assert!(explain("MISFIRE_SKIPPED")
            .unwrap()
            .meaning
            .starts_with("slot skipped: "));
        let host = explain("MODULE_NOT_READY").unwrap();
        assert!(host.meaning.contains("readiness gate"), "{host:?}");
        assert_eq!(host.action, None);
        assert!(explain("not a code").is_none());
    }

    #[test]
    fn a_code_block_is_not_read_as_prose() {
        let md = "## A\n\n```rust\nlet x = `FAKE_CODE`;\n```\n\n| code | meaning |\n|---|---|\n| `real.code` | it is [real](crate::x) |\n";
        let g = parse(md);
        assert_eq!(g.keys().collect::<Vec<_>>(), ["real.code"]);
        assert_eq!(g["real.code"].meaning, "it is real");
    }
}
