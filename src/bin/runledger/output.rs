//! How the CLI prints: aligned tables (coloured only on a terminal without NO_COLOR), JSON
//! with `--json`, durations, and errors with their exit codes.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

use runledger::Timestamp;
use serde::Serialize;

/// Set once stdout's reader has gone (a closed pipe): later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout (what the CLI's `print!`/`println!` expand to). When the reader
/// has closed the pipe (`runledger flex check F | head -1`), the write fails with
/// `BrokenPipe` (Rust ignores SIGPIPE, so the process is not killed): instead of std's
/// panic, the rest of the output is dropped and the command finishes its work and exits
/// with its own status. Any other write error is reported once on stderr.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = written {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("runledger: stdout: {e}; further output dropped");
        }
    }
}

/// Where output goes and how it looks.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Print JSON instead of tables.
    pub json: bool,
    /// Colour status words and headers.
    pub color: bool,
}

impl Out {
    /// JSON when asked; colour only on a terminal and never with `NO_COLOR` set.
    pub fn new(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Out {
            json,
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// Prints `value` as pretty JSON.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("values serialize")
        );
    }

    /// Prints `table`, or `value` as JSON with `--json`.
    pub fn listing<T: Serialize + ?Sized>(&self, table: &Table, value: &T) {
        if self.json {
            self.json(value);
        } else {
            print!("{}", table.render(self.color));
        }
    }

    /// `text` in bold (headings), when colour is on.
    pub fn bold(&self, text: &str) -> String {
        paint(self.color, "1", text)
    }
}

fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The colour of a status word, if it is one.
fn status_color(cell: &str) -> Option<&'static str> {
    match cell {
        "success" | "completed" | "ok" | "fired" | "ready" | "yes" => Some("32"),
        "failed" | "cancelled" | "error" | "not ready" => Some("31"),
        "started" | "running" | "paused" | "pending" | "claimed" | "skipped" | "warning" => {
            Some("33")
        }
        _ => None,
    }
}

/// An aligned text table.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text: columns padded to their widest cell, two spaces apart, no
    /// trailing blanks; `(none)` under the header when there are no rows.
    pub fn render(&self, color: bool) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(width(c));
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String], header: bool| {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w - width(cell);
                let shown = if header {
                    paint(color, "1", cell)
                } else {
                    match status_color(cell) {
                        Some(code) => paint(color, code, cell),
                        None => cell.to_string(),
                    }
                };
                text.push_str(&shown);
                if i + 1 < n {
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&mut out, &self.headers, true);
        for r in &self.rows {
            line(&mut out, r, false);
        }
        if self.rows.is_empty() {
            out.push_str("(none)\n");
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// `-` for nothing.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A timestamp cell.
pub fn ts(t: Option<Timestamp>) -> String {
    opt(t)
}

/// A duration in milliseconds as `420ms`, `1.25s`, `2m05s`, `3h02m`.
pub fn duration(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    match ms {
        ..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{}.{:02}s", ms / 1000, (ms % 1000) / 10),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

/// `text` cut to `max` characters with an ellipsis.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A CLI failure: what to print and which exit code to end with.
#[derive(Debug)]
pub struct Failure {
    /// Stable code printed in `error [CODE]: message`.
    pub code: String,
    /// The message.
    pub message: String,
    /// The process exit code.
    pub exit: u8,
}

impl Failure {
    /// A failure with its own code and exit 1.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            message: message.into(),
            exit: 1,
        }
    }
}

/// Codes of a statement that failed validation (the parsers' `flex::ParseError` codes).
const STATEMENT_INVALID: &[&str] = &[
    "FLEX_EMPTY_BODY",
    "FLEX_HTML_BODY",
    "FLEX_CSV_BODY",
    "FLEX_NOT_XML",
    "FLEX_MALFORMED_XML",
    "FLEX_TRUNCATED",
    "FLEX_WRONG_ROOT",
    "FLEX_COUNT_MISMATCH",
    "FLEX_BAD_ENVELOPE",
    "FLEX_LIMIT_EXCEEDED",
];

/// The exit code of a library error: 3 validation failure (a statement without a required
/// section, an unreadable statement), 4 run already active, 2 arguments the library
/// rejected, 1 anything else (a Flex transport or service failure included).
pub fn exit_code(code: &str) -> u8 {
    match code {
        "MISSING_REQUIRED_SECTION" => 3,
        c if STATEMENT_INVALID.contains(&c) => 3,
        "RUN_ALREADY_ACTIVE" => 4,
        "INVALID_INPUT" => 2,
        _ => 1,
    }
}

impl From<runledger::Error> for Failure {
    fn from(e: runledger::Error) -> Self {
        let code = e.code();
        Failure {
            code: code.into(),
            message: e.to_string(),
            exit: exit_code(code),
        }
    }
}

impl From<runledger::flex::FlexError> for Failure {
    fn from(e: runledger::flex::FlexError) -> Self {
        let code = e.code();
        Failure {
            code: code.into(),
            message: e.to_string(),
            exit: exit_code(code),
        }
    }
}

/// Result of a command.
pub type CliResult<T = ()> = Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Some(420)), "420ms");
        assert_eq!(duration(Some(1_250)), "1.25s");
        assert_eq!(duration(Some(125_000)), "2m05s");
        assert_eq!(duration(Some(3 * 3_600_000 + 120_000)), "3h02m");
        assert_eq!(duration(None), "-");
    }

    #[test]
    fn tables_align_and_colour_only_when_asked() {
        let mut t = Table::new(&["id", "status"]);
        t.row(vec!["1".into(), "success".into()]);
        t.row(vec!["12".into(), "failed".into()]);
        assert_eq!(t.render(false), "id  status\n1   success\n12  failed\n");
        assert!(t.render(true).contains("\x1b[32msuccess\x1b[0m"));
        assert_eq!(Table::new(&["a"]).render(false), "a\n(none)\n");
    }
}
