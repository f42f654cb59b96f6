//! How the CLI prints: aligned tables (comfy-table; colour through anstyle, when anstream
//! says stdout takes it: a terminal without NO_COLOR), JSON
//! with `--json`, durations, and errors with their exit codes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use anstyle::{AnsiColor, Style};
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
    /// JSON when asked; colour when stdout takes it, as anstream decides: a terminal, and
    /// neither `NO_COLOR` nor `CLICOLOR=0` set (or `CLICOLOR_FORCE` set), not `TERM=dumb`.
    pub fn new(json: bool) -> Self {
        let choice = anstream::AutoStream::choice(&std::io::stdout());
        Out {
            json,
            color: choice != anstream::ColorChoice::Never,
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
        paint(self.color, BOLD, text)
    }
}

const BOLD: Style = Style::new().bold();
const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();

/// `text` in `style` when `on`.
fn paint(on: bool, style: Style, text: &str) -> String {
    if on {
        format!("{style}{text}{style:#}")
    } else {
        text.to_string()
    }
}

/// The style of a status word, if it is one.
fn status_style(cell: &str) -> Option<Style> {
    match cell {
        "success" | "completed" | "ok" | "fired" | "ready" | "yes" => Some(GREEN),
        "failed" | "cancelled" | "error" | "not ready" => Some(RED),
        "started" | "running" | "paused" | "pending" | "claimed" | "skipped" | "warning" => {
            Some(YELLOW)
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

    /// The table as text (laid out by comfy-table, which measures display width and
    /// ignores the escape codes of styled cells): columns padded to their widest cell, two
    /// spaces apart, no borders, no trailing blanks; `(none)` under the header when there
    /// are no rows.
    pub fn render(&self, color: bool) -> String {
        let n = self.headers.len();
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
            .set_header(
                self.headers
                    .iter()
                    .map(|h| paint(color, BOLD, h))
                    .collect::<Vec<_>>(),
            );
        for r in &self.rows {
            let cells = (0..n).map(|i| {
                let cell = r.get(i).map(String::as_str).unwrap_or("");
                match status_style(cell) {
                    Some(style) => paint(color, style, cell),
                    None => cell.to_string(),
                }
            });
            t.add_row(cells.collect::<Vec<_>>());
        }
        for i in 0..n {
            if let Some(column) = t.column_mut(i) {
                column.set_padding((0, if i + 1 < n { 2 } else { 0 }));
            }
        }
        let mut out = String::new();
        for line in t.lines() {
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if self.rows.is_empty() {
            out.push_str("(none)\n");
        }
        out
    }
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
        "INVALID_INPUT" | "UNSUPPORTED_BACKEND" => 2,
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
    fn a_call_the_backend_does_not_serve_is_a_usage_error() {
        assert_eq!(exit_code("UNSUPPORTED_BACKEND"), 2);
        assert_eq!(exit_code("INVALID_INPUT"), 2);
        assert_eq!(exit_code("ILLEGAL_TRANSITION"), 1);
    }

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
        // Styled cells and wide characters keep the columns aligned.
        let coloured = t.render(true);
        let plain: Vec<String> = coloured
            .lines()
            .map(|l| anstream::adapter::strip_str(l).to_string())
            .collect();
        assert_eq!(plain.join("\n") + "\n", t.render(false));
        let mut wide = Table::new(&["name", "n"]);
        wide.row(vec!["東京".into(), "1".into()]);
        wide.row(vec!["abcd".into(), "2".into()]);
        assert_eq!(wide.render(false), "name  n\n東京  1\nabcd  2\n");
        // A short row prints empty cells; the last column has no trailing blanks.
        let mut short = Table::new(&["a", "b", "c"]);
        short.row(vec!["x".into()]);
        short.row(vec!["yy".into(), "z".into(), "w".into()]);
        assert_eq!(short.render(false), "a   b  c\nx\nyy  z  w\n");
    }
}
