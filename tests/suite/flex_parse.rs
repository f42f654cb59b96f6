//! The pure Flex parsers: envelope, body classifier, streaming statement scan, section
//! policy. Real statements from ../shared/flex/samples (when present) and the project's own
//! fixtures in tests/fixtures/flex.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use runledger::flex::FlexError;
use runledger::flex::{
    self, check, classify_body, classify_code, parse_envelope, scan, scan_bytes, scan_with,
    BodyKind, CodeClass, EnvelopeStatus, Missing, ParseError, RequireRows, RootType, ScanLimits,
    SectionPolicy, StatementReport,
};

use crate::flex_gen::FlexGen;
use crate::flex_mock::fixture;
use crate::{snap_json, snap_text};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/flex/samples");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flex");

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// `CODE: message` of a parse error, for text snapshots.
fn describe(e: &ParseError) -> String {
    format!("{}: {}", e.code(), e)
}

/// Section name -> rows of one statement, for compact assertions.
fn rows_of(report: &StatementReport, i: usize) -> Vec<(String, u64)> {
    report.statements[i]
        .sections
        .iter()
        .map(|s| (s.name.clone(), s.rows))
        .collect()
}

// ---------- real samples (../shared/flex/samples) ----------

#[test]
fn every_sample_statement_scans_and_matches_its_description() {
    let dir = Path::new(SAMPLES);
    if !dir.is_dir() {
        eprintln!("skipping: {SAMPLES} is absent");
        return;
    }
    let mut seen = 0;
    for path in files_in(dir) {
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(classify_body(&bytes), BodyKind::Statement, "{path:?}");
        let report = scan_bytes(&bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        // Streaming through a tiny buffer gives the same report.
        let streamed = scan(BufReader::with_capacity(13, &bytes[..])).unwrap();
        assert_eq!(report, streamed, "{path:?}");
        assert_eq!(report.root_type, RootType::Activity);
        assert_eq!(report.declared_count, Some(1));
        assert_eq!(report.statements.len(), 1);
        // Not an envelope.
        let err = parse_envelope(&bytes).unwrap_err();
        assert_eq!(err.code(), "FLEX_WRONG_ROOT", "{path:?}");
        snap_json!(format!("sample_{}", stem(&path)), &report);
        seen += 1;
    }
    assert_eq!(seen, 7, "the samples folder lists seven statements");
}

#[test]
fn sample_facts_from_sources_md_hold() {
    let dir = Path::new(SAMPLES);
    if !dir.is_dir() {
        return;
    }
    let load = |name: &str| scan_bytes(&std::fs::read(dir.join(name)).unwrap()).unwrap();

    // "everything selected": 44 sections, 29 of them empty.
    let r = load("testIBFlexStatementFile17.xml");
    let st = &r.statements[0];
    assert_eq!(st.sections.len(), 44);
    assert_eq!(st.sections.iter().filter(|s| s.rows == 0).count(), 29);
    assert_eq!(st.rows("AccountInformation"), Some(1));

    // 720 ConversionRates, empty InterestAccruals, no AccountInformation.
    let r = load("testIBFlexStatementFile14.xml");
    let st = &r.statements[0];
    assert_eq!(st.rows("ConversionRates"), Some(720));
    assert_eq!(st.rows("InterestAccruals"), Some(0));
    assert_eq!(st.rows("AccountInformation"), None);

    // 2025 statement with empty Trades and InterestAccruals.
    let r = load("testIBFlexStatementFile24.xml");
    assert_eq!(r.statements[0].rows("Trades"), Some(0));
    assert_eq!(r.statements[0].rows("InterestAccruals"), Some(0));

    // Empty period, whenGenerated with a space separator.
    let r = load("testIBFlexStatementFile01.xml");
    assert_eq!(r.statements[0].period.as_deref(), Some(""));
    assert_eq!(
        r.statements[0].when_generated.as_deref(),
        Some("20130102 01:25:14")
    );

    // A byte-order mark before the root; StmtFunds only.
    let r = load("StatementOfFunds.xml");
    assert_eq!(r.statements[0].sections.len(), 1);
    assert_eq!(r.statements[0].sections[0].name, "StmtFunds");
    assert_eq!(
        r.statements[0].period.as_deref(),
        Some("Last365CalendarDays")
    );

    // CashReport with 5 currencies incl. BASE_SUMMARY.
    let r = load("TestForCoding.xml");
    assert_eq!(r.statements[0].rows("CashReport"), Some(5));
}

#[test]
fn every_sample_reply_parses_as_an_envelope() {
    let dir = Path::new(SAMPLES).join("responses");
    if !dir.is_dir() {
        eprintln!("skipping: {dir:?} is absent");
        return;
    }
    let mut out = Vec::new();
    for path in files_in(&dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(classify_body(&bytes), BodyKind::Envelope, "{path:?}");
        let env = parse_envelope(&bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(env.timestamp.is_some());
        match env.status {
            EnvelopeStatus::Success => {
                assert!(env.reference_code.is_some() && env.url.is_some());
                assert_eq!(env.code_class(), None);
            }
            _ => assert!(env.error_code.is_some() && env.error_message.is_some()),
        }
        assert_eq!(scan_bytes(&bytes).unwrap_err().code(), "FLEX_WRONG_ROOT");
        out.push((
            stem(&path),
            env.status,
            env.error_code.clone(),
            env.code_class(),
        ));
    }
    assert_eq!(out.len(), 4);
    snap_json!("sample_responses", &out);
}

// ---------- the project's own fixtures ----------

#[test]
fn multi_account_statement_reports_every_section_with_rows() {
    let report = scan_bytes(&fixture("multi_account.xml")).unwrap();
    assert_eq!(report.query_name.as_deref(), Some("Daily Ledger"));
    assert_eq!(report.statements.len(), 2);
    assert_eq!(
        rows_of(&report, 0),
        [
            ("AccountInformation", 1),
            ("ChangeInNAV", 1),
            ("EquitySummaryInBase", 1),
            ("CashReport", 2),
            ("OpenPositions", 3),
            ("Trades", 3),
            ("OptionEAE", 2),
            ("TransactionTaxes", 0),
            ("InterestAccruals", 0),
            ("CashTransactions", 1),
            ("FutureSectionNotYetInvented", 1),
            ("ConversionRates", 1),
        ]
        .map(|(n, r)| (n.to_string(), r))
    );
    assert_eq!(
        report.statements[0]
            .other_attributes
            .get("newStatementAttr"),
        Some(&"kept".to_string())
    );
    assert_eq!(
        rows_of(&report, 1),
        [
            ("AccountInformation", 1),
            ("CashReport", 1),
            ("Trades", 0),
            ("CashTransactions", 0)
        ]
        .map(|(n, r)| (n.to_string(), r))
    );
    snap_json!("fixture_multi_account", &report);
}

#[test]
fn empty_sections_in_both_forms_are_present_with_zero_rows() {
    let report = scan_bytes(&fixture("empty_sections.xml")).unwrap();
    let st = &report.statements[0];
    for name in [
        "CashReport",
        "OpenPositions",
        "Trades",
        "TransactionTaxes",
        "CorporateActions",
    ] {
        assert_eq!(st.rows(name), Some(0), "{name}");
    }
    assert_eq!(st.rows("AccountInformation"), Some(1));
    assert_eq!(st.rows("CashTransactions"), None);
    assert_eq!(st.from_date.as_deref(), Some("2026-11-20"));
    snap_json!("fixture_empty_sections", &report);
}

#[test]
fn trade_confirmation_statement_has_its_type() {
    let report = scan_bytes(&fixture("tcf.xml")).unwrap();
    assert_eq!(report.root_type, RootType::TradeConfirmation);
    assert_eq!(report.statements[0].rows("TradeConfirms"), Some(4));
    snap_json!("fixture_tcf", &report);
}

#[test]
fn doctype_entities_are_never_expanded() {
    let bytes = fixture("doctype_entities.xml");
    let report = scan_bytes(&bytes).unwrap();
    // The entity references stay as written: no billion laughs, no file read.
    assert_eq!(report.query_name.as_deref(), Some("&lol9;"));
    assert_eq!(report.statements[0].account_id.as_deref(), Some("&xxe;"));
    assert_eq!(report.statements[0].rows("Trades"), Some(1));
    assert!(report.bytes < 1000);
}

#[test]
fn typed_errors_for_broken_statements() {
    let cases = [
        "count_mismatch.xml",
        "truncated.xml",
        "html_404.html",
        "statement.csv",
        "envelope_warn_1019.xml",
    ];
    let mut out = String::new();
    for name in cases {
        let e = scan_bytes(&fixture(name)).unwrap_err();
        out.push_str(&format!("{name}: {}\n", describe(&e)));
    }
    for (label, body) in [
        ("empty", &b""[..]),
        ("whitespace", b" \r\n\t "),
        ("plain text", b"Service temporarily unavailable"),
        ("binary", b"\x00\x01\x02\xff"),
        ("other root", b"<Statement><Row/></Statement>"),
        ("mismatched end", b"<FlexQueryResponse><FlexStatements></FlexQueryResponse>"),
        ("second root", b"<FlexQueryResponse/><FlexQueryResponse/>"),
        ("text after root", b"<FlexQueryResponse/>trailing"),
        ("cut in a tag", b"<FlexQueryResponse type=\"AF\"><FlexStatements count=\"1\"><FlexSt"),
        ("cut in a value", b"<FlexQueryResponse type=\"AF"),
        ("count not a number", b"<FlexQueryResponse><FlexStatements count=\"one\"></FlexStatements></FlexQueryResponse>"),
        ("bad utf-8 name", b"<FlexQueryResponse><\xff\xfe/></FlexQueryResponse>"),
    ] {
        let e = scan_bytes(body).unwrap_err();
        out.push_str(&format!("{label}: {}\n", describe(&e)));
    }
    snap_text!("statement_errors", out);

    let e = scan_bytes(&fixture("count_mismatch.xml")).unwrap_err();
    assert!(matches!(
        &e,
        ParseError::CountMismatch { declared, actual: 2 } if declared == "3"
    ));
    assert_eq!(scan_bytes(b"").unwrap_err().code(), "FLEX_EMPTY_BODY");
    assert_eq!(
        scan_bytes(&fixture("truncated.xml")).unwrap_err().code(),
        "FLEX_TRUNCATED"
    );
}

#[test]
fn every_prefix_of_a_statement_is_an_error_never_a_report() {
    for name in ["multi_account.xml", "empty_sections.xml", "tcf.xml"] {
        let bytes = fixture(name);
        let end = bytes
            .windows(20)
            .rposition(|w| w == b"</FlexQueryResponse>")
            .unwrap()
            + 20;
        for cut in 0..end {
            let e = scan_bytes(&bytes[..cut]).expect_err("a prefix must not scan");
            assert!(
                ["FLEX_TRUNCATED", "FLEX_EMPTY_BODY"].contains(&e.code()),
                "{name} cut at {cut}: {e}"
            );
        }
        assert!(scan_bytes(&bytes[..end]).is_ok());
    }
}

#[test]
fn envelopes_of_every_shape() {
    let names = [
        "envelope_success.xml",
        "envelope_success_compact.xml",
        "envelope_warn_1019.xml",
        "envelope_throttled_1018.xml",
        "envelope_fail_1015.xml",
        "envelope_fail_unknown.xml",
    ];
    let mut out = Vec::new();
    for name in names {
        let body = fixture(name);
        assert_eq!(classify_body(&body), BodyKind::Envelope);
        let env = parse_envelope(&body).unwrap();
        out.push(serde_json::json!({
            "fixture": name,
            "envelope": env,
            "codeClass": env.code_class(),
        }));
    }
    snap_json!("envelopes", &out);

    let ok = parse_envelope(&fixture("envelope_success.xml")).unwrap();
    assert_eq!(ok.status, EnvelopeStatus::Success);
    assert_eq!(ok.reference_code.as_deref(), Some("1234567890"));
    assert!(ok.url.unwrap().starts_with("https://gdcdyn."));
    let compact = parse_envelope(&fixture("envelope_success_compact.xml")).unwrap();
    assert!(compact.url.unwrap().ends_with("?a=1&b=2"));
    let unknown = parse_envelope(&fixture("envelope_fail_unknown.xml")).unwrap();
    assert_eq!(unknown.error_code.as_deref(), Some("1025"));
    assert_eq!(unknown.code_class(), Some(CodeClass::Fatal));
    let throttled = parse_envelope(&fixture("envelope_throttled_1018.xml")).unwrap();
    assert_eq!(throttled.code_class(), Some(CodeClass::Throttled));
}

#[test]
fn bodies_that_are_not_envelopes_get_their_own_errors() {
    let mut out = String::new();
    for name in [
        "envelope_no_status.xml",
        "envelope_truncated.xml",
        "html_404.html",
        "statement.csv",
        "multi_account.xml",
    ] {
        let body = fixture(name);
        let e = parse_envelope(&body).unwrap_err();
        out.push_str(&format!(
            "{name} [{:?}]: {}\n",
            classify_body(&body),
            describe(&e)
        ));
    }
    for (label, body) in [
        ("empty", &b""[..]),
        ("plain text", b"Service temporarily unavailable"),
        (
            "html without doctype",
            b"<html><body>Bad Gateway</body></html>",
        ),
        (
            "unknown status",
            b"<FlexStatementResponse><Status>Maybe</Status></FlexStatementResponse>",
        ),
        ("self-closed", b"<FlexStatementResponse timestamp='x'/>"),
        (
            "unclosed child",
            b"<FlexStatementResponse><Status>Warn</FlexStatementResponse>",
        ),
    ] {
        out.push_str(&format!(
            "{label} [{:?}]: {}\n",
            classify_body(body),
            describe(&parse_envelope(body).unwrap_err())
        ));
    }
    snap_text!("envelope_errors", out);
}

#[test]
fn envelope_tolerates_quotes_case_whitespace_bom_and_entities() {
    let body = "\u{feff}  \n<FlexStatementResponse timestamp=\"1 May, 2026 9:00 AM EDT\">\n\t<status>\n success\n</status>\n<referencecode> 42 </referencecode>\n<URL><![CDATA[https://x.interactivebrokers.com/a?b=1]]>&amp;c=&#50;</URL><Extra>ignored</Extra></FlexStatementResponse>";
    let env = parse_envelope(body.as_bytes()).unwrap();
    assert_eq!(env.status, EnvelopeStatus::Success);
    assert_eq!(env.timestamp.as_deref(), Some("1 May, 2026 9:00 AM EDT"));
    assert_eq!(env.reference_code.as_deref(), Some("42"));
    assert_eq!(
        env.url.as_deref(),
        Some("https://x.interactivebrokers.com/a?b=1&c=2")
    );
    assert_eq!(env.error_code, None);
}

#[test]
fn error_code_table_classifies_as_protocol_md_says() {
    assert_eq!(classify_code(1019), CodeClass::NotReady);
    assert_eq!(classify_code(1018), CodeClass::Throttled);
    for c in [1001, 1004, 1005, 1006, 1007, 1008, 1009, 1021] {
        assert_eq!(classify_code(c), CodeClass::Transient, "{c}");
    }
    for c in [1003, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 1017, 1020] {
        assert_eq!(classify_code(c), CodeClass::Fatal, "{c}");
    }
    for c in [0, 1002, 1025, 9999] {
        assert_eq!(classify_code(c), CodeClass::Fatal, "{c}");
        assert!(flex::envelope::code_info(c).is_none());
    }
    let table = flex::ERROR_CODES;
    assert!(
        table.windows(2).all(|w| w[0].code < w[1].code),
        "sorted, unique"
    );
    assert_eq!(table.len(), 20);
}

#[test]
fn body_classifier() {
    let cases: [(&[u8], BodyKind); 10] = [
        (b"", BodyKind::Empty),
        (b"  \n ", BodyKind::Empty),
        (
            b"<?xml version=\"1.0\"?><FlexStatementResponse>",
            BodyKind::Envelope,
        ),
        (
            b"\xEF\xBB\xBF<!-- c --><FlexQueryResponse type=\"AF\">",
            BodyKind::Statement,
        ),
        (
            b"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\">",
            BodyKind::Html,
        ),
        (b"<HTML><HEAD>", BodyKind::Html),
        (
            b"\"ClientAccountID\",\"Symbol\"\r\n\"U1\",\"A\"",
            BodyKind::Csv,
        ),
        (b"<Other/>", BodyKind::Other),
        (b"hello", BodyKind::Other),
        (b"<", BodyKind::Other),
    ];
    for (body, kind) in cases {
        assert_eq!(
            classify_body(body),
            kind,
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

// ---------- section policy ----------

#[test]
fn activity_policy_on_the_multi_account_fixture() {
    let report = scan_bytes(&fixture("multi_account.xml")).unwrap();
    let outcome = check(&report, &SectionPolicy::activity());
    // The second account lacks OpenPositions; its Trades is present (empty) and passes.
    assert_eq!(outcome.missing_required.len(), 1);
    assert_eq!(outcome.missing_required[0].account, "U9000002");
    assert_eq!(outcome.missing_required[0].section, "OpenPositions");
    assert!(!outcome.passed());
    snap_json!("policy_activity_multi_account", &outcome);
    let err = outcome.into_result().unwrap_err();
    assert_eq!(err.code(), "MISSING_REQUIRED_SECTION");
    snap_text!("policy_missing_error", err.to_string());
}

#[test]
fn require_rows_flags_present_but_empty_sections() {
    let report = scan_bytes(&fixture("multi_account.xml")).unwrap();
    let policy = SectionPolicy {
        required: vec!["CashReport".into(), "Trades".into()],
        reconcile: vec!["ChangeInNAV".into()],
        require_rows: RequireRows::AllRequired,
    };
    let outcome = check(&report, &policy);
    assert!(outcome.missing_required.is_empty());
    assert_eq!(outcome.empty_required.len(), 1);
    assert_eq!(outcome.empty_required[0].missing, Missing::Empty);
    assert_eq!(outcome.missing_reconcile.len(), 1);
    let err = outcome.into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing required sections: U9000002: Trades (no rows)"
    );

    // `Only` sections are required even when not listed in `required`.
    let policy = SectionPolicy {
        required: vec!["CashReport".into()],
        reconcile: vec![],
        require_rows: RequireRows::Only(vec!["OptionEAE".into()]),
    };
    let err = check(&report, &policy).into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing required sections: U9000002: OptionEAE"
    );

    // Presence-only policy passes, with reconcile warnings kept.
    let policy = SectionPolicy {
        required: vec!["CashReport".into(), "Trades".into()],
        reconcile: vec!["ChangeInNAV".into(), "Transfers".into()],
        require_rows: RequireRows::None,
    };
    let outcome = check(&report, &policy).into_result().unwrap();
    assert_eq!(outcome.missing_reconcile.len(), 3);
}

#[test]
fn a_statement_file_without_statements_misses_everything() {
    let report = scan_bytes(
        b"<FlexQueryResponse type=\"AF\"><FlexStatements count=\"0\"></FlexStatements></FlexQueryResponse>",
    )
    .unwrap();
    let err = check(&report, &SectionPolicy::activity())
        .into_result()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing required sections: *: AccountInformation, CashReport, OpenPositions, Trades"
    );
}

#[test]
fn policy_round_trips_through_json_and_defaults_to_activity() {
    let policy = SectionPolicy {
        required: vec!["Trades".into()],
        reconcile: vec!["ChangeInNAV".into()],
        require_rows: RequireRows::Only(vec!["Trades".into()]),
    };
    let json = serde_json::to_value(&policy).unwrap();
    snap_json!("policy_json", &json);
    let back: SectionPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(back, policy);
    let minimal: SectionPolicy =
        serde_json::from_str(r#"{"required":["A"],"reconcile":[]}"#).unwrap();
    assert_eq!(minimal.require_rows, RequireRows::None);
    assert_eq!(SectionPolicy::default(), SectionPolicy::activity());
    snap_json!("policy_activity_default", &SectionPolicy::activity());
}

#[test]
fn flex_error_delegates_to_the_parse_code() {
    let e: FlexError = scan_bytes(b"<FlexQueryResponse>").unwrap_err().into();
    assert_eq!(e.code(), "FLEX_TRUNCATED");
    assert_eq!(
        e.to_string(),
        "flex xml is truncated at byte 19, inside <FlexQueryResponse>"
    );
    let e: FlexError = parse_envelope(b"<html>").unwrap_err().into();
    assert_eq!(e.code(), "FLEX_HTML_BODY");
}

// ---------- size, limits, streaming ----------

#[test]
fn a_generated_100_mb_statement_streams_with_exact_row_counts() {
    let gen = FlexGen::of_size(100, 2);
    let len = gen.len();
    let (trades, positions) = gen.rows();
    assert!(len >= 99_000_000, "{len}");
    let report = scan(BufReader::with_capacity(64 * 1024, gen)).unwrap();
    assert_eq!(report.bytes, len);
    assert_eq!(report.declared_count, Some(2));
    for (i, st) in report.statements.iter().enumerate() {
        assert_eq!(
            st.account_id.as_deref(),
            Some(&*format!("U{:07}", 9_000_000 + i))
        );
        assert_eq!(st.rows("Trades"), Some(trades));
        assert_eq!(st.rows("OpenPositions"), Some(positions));
        assert_eq!(st.rows("AccountInformation"), Some(1));
        assert_eq!(st.rows("TransactionTaxes"), Some(0));
    }
}

#[test]
fn a_generated_statement_cut_anywhere_is_truncated() {
    let full = {
        let mut v = Vec::new();
        FlexGen::new(2, 50, 5).read_to_end(&mut v).unwrap();
        v
    };
    assert_eq!(
        scan_bytes(&full).unwrap().statements[1].rows("Trades"),
        Some(50)
    );
    for cut in (1..full.len() - 1).step_by(97) {
        let e = scan(BufReader::with_capacity(100, &full[..cut])).unwrap_err();
        assert_eq!(e.code(), "FLEX_TRUNCATED", "cut at {cut}: {e}");
    }
}

/// Endless input of one repeated byte pattern.
struct Repeat(&'static [u8], usize);

impl Read for Repeat {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        for b in out.iter_mut() {
            *b = self.0[self.1 % self.0.len()];
            self.1 += 1;
        }
        Ok(out.len())
    }
}

#[test]
fn hostile_inputs_hit_limits_instead_of_memory() {
    let limits = ScanLimits {
        max_element_bytes: 1 << 20,
        ..ScanLimits::default()
    };
    // One endless attribute value, one endless text run, endless nesting: each stops at a
    // limit after reading about a megabyte, although the source never ends.
    let endless_attr = Read::chain(&b"<FlexQueryResponse type=\""[..], Repeat(b"A", 0));
    let e = scan_with(BufReader::new(endless_attr), &limits).unwrap_err();
    assert_eq!(
        e.to_string(),
        "flex document exceeds the limit on element size in bytes (1048576)"
    );
    let endless_text = Read::chain(&b"<FlexQueryResponse>"[..], Repeat(b"text ", 0));
    let e = scan_with(BufReader::new(endless_text), &limits).unwrap_err();
    assert_eq!(e.code(), "FLEX_LIMIT_EXCEEDED");
    let e = scan_with(BufReader::new(Repeat(b"<a>", 0)), &limits).unwrap_err();
    assert!(matches!(e, ParseError::WrongRoot { .. }), "{e}");
    let deep = Read::chain(&b"<FlexQueryResponse>"[..], Repeat(b"<a>", 0));
    let e = scan_with(BufReader::new(deep), &limits).unwrap_err();
    assert_eq!(
        e.to_string(),
        "flex document exceeds the limit on nesting depth (32)"
    );
    let many = Read::chain(
        &b"<FlexQueryResponse><FlexStatements>"[..],
        Repeat(b"<FlexStatement/>", 0),
    );
    let small = ScanLimits {
        max_statements: 1000,
        ..ScanLimits::default()
    };
    let e = scan_with(BufReader::new(many), &small).unwrap_err();
    assert_eq!(
        e.to_string(),
        "flex document exceeds the limit on statements (1000)"
    );
}

// ---------- seeded mutations ----------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = b"<>/=\"'&;!?[]- \n\x00\xff\xc3\xef";

fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 => v.truncate(at),
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 => {
                let end = (at + rng.below(40)).min(v.len());
                v.drain(at..end);
            }
            4 => {
                let end = (at + rng.below(200)).min(v.len());
                let piece = v[at..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, piece);
            }
            _ if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn seeded_mutations_never_panic_and_stream_like_slices() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let inputs: Vec<Vec<u8>> = files_in(Path::new(FIXTURES))
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let (mut reports, mut errors, mut envelopes) = (0, 0, 0);
    for case in 0..6000 {
        let input = &inputs[case % inputs.len()];
        let body = mutate(&mut rng, input);
        let _ = classify_body(&body);
        match parse_envelope(&body) {
            Ok(_) => envelopes += 1,
            Err(e) => assert!(e.code().starts_with("FLEX_"), "{e}"),
        }
        let whole = scan_bytes(&body);
        let chunked = scan(BufReader::with_capacity(1 + rng.below(17), &body[..]));
        match (&whole, &chunked) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "case {case}");
                reports += 1;
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.code(), b.code(), "case {case}: {a} / {b}");
                let wrapped: FlexError = scan_bytes(&body).unwrap_err().into();
                assert_eq!(wrapped.code(), a.code());
                errors += 1;
            }
            _ => panic!("case {case}: slice {whole:?} vs stream {chunked:?}"),
        }
    }
    // The mutations reach both outcomes of both parsers.
    assert!(
        reports > 100 && errors > 3000 && envelopes > 100,
        "{reports} {errors} {envelopes}"
    );
}

#[test]
fn a_failing_reader_is_a_read_error() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let e = scan(BufReader::new(Failing)).unwrap_err();
    assert_eq!(e.code(), "FLEX_READ_FAILED");
    let late = Read::chain(&b"<FlexQueryResponse><FlexStatements>"[..], Failing);
    let e = scan(BufReader::with_capacity(8, late)).unwrap_err();
    assert_eq!(e.code(), "FLEX_READ_FAILED");
}
