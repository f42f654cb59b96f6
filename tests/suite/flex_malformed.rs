//! Malformed XML is refused the same way everywhere (issue 14): by the statement scan, the
//! envelope parser and the body classifier, as `FLEX_MALFORMED_XML` with the byte offset.
//! Each regression test is named after the bug it pins; the fixtures are
//! `activity_ok.xml` with one defect each.

use runledger::flex::{classify_body, parse_envelope, scan, scan_bytes, BodyKind, ParseError};

use crate::flex_mock::fixture;

/// The byte offset of a malformed-XML error (panics on any other error).
fn malformed_at(e: &ParseError) -> u64 {
    match e {
        ParseError::Malformed { position, .. } => *position,
        other => panic!("expected FLEX_MALFORMED_XML, got {}: {other}", other.code()),
    }
}

fn offset_of(bytes: &[u8], needle: &str) -> u64 {
    bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("needle in fixture") as u64
}

/// Scanned from a slice and as a stream read one byte at a time: the same error.
fn refused(bytes: &[u8]) -> u64 {
    let whole = scan_bytes(bytes).unwrap_err();
    let streamed =
        scan(std::io::BufReader::with_capacity(1, bytes)).expect_err("streamed scan refuses too");
    assert_eq!(whole.to_string(), streamed.to_string());
    assert_eq!(whole.code(), "FLEX_MALFORMED_XML", "{whole}");
    // The body classifier still sees a statement, so `flex run` (which classifies the
    // GetStatement body first) reports the same error instead of FLEX_NOT_XML.
    assert_eq!(classify_body(bytes), BodyKind::Statement);
    malformed_at(&whole)
}

#[test]
fn typographic_quote_in_query_name_is_malformed_xml_not_truncated() {
    let bytes = fixture("malformed_query_name_quote.xml");
    let at = refused(&bytes);
    assert_eq!(at, offset_of(&bytes, "\u{201c}Daily"));
    let e = scan_bytes(&bytes).unwrap_err();
    assert!(e.to_string().contains("ascii quotes"), "{e}");
}

#[test]
fn typographic_quotes_around_an_attribute_value_are_malformed_xml_not_a_missing_account() {
    let bytes = fixture("malformed_typographic_quotes.xml");
    let at = refused(&bytes);
    assert_eq!(at, offset_of(&bytes, "\u{201c}U9000001"));
}

#[test]
fn a_bare_ampersand_in_a_row_value_is_malformed_xml_not_accepted() {
    let bytes = fixture("malformed_bare_ampersand.xml");
    let at = refused(&bytes);
    assert_eq!(at, offset_of(&bytes, "& Ledger"));
}

#[test]
fn an_undefined_entity_like_nbsp_is_malformed_xml_not_kept_verbatim() {
    let bytes = fixture("malformed_undefined_entity.xml");
    let at = refused(&bytes);
    assert_eq!(at, offset_of(&bytes, "&nbsp;Ledger"));
    let e = scan_bytes(&bytes).unwrap_err();
    assert!(e.to_string().contains("undefined entity &nbsp;"), "{e}");
}

#[test]
fn an_undefined_entity_or_bare_ampersand_in_text_is_malformed_xml() {
    for (text, needle) in [
        ("<Trades>&nbsp;</Trades>", "&nbsp;"),
        ("<Trades>&#xD800;</Trades>", "&#xD800;"),
        ("<Trades>a & b</Trades>", "&"),
    ] {
        let xml = format!(
            "<FlexQueryResponse type=\"AF\"><FlexStatements count=\"1\"><FlexStatement accountId=\"U1\">{text}</FlexStatement></FlexStatements></FlexQueryResponse>"
        );
        let e = scan_bytes(xml.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "FLEX_MALFORMED_XML", "{text}: {e}");
        let at = malformed_at(&e);
        assert!(at <= xml.len() as u64, "{text}: offset {at} past the end");
        if needle != "&" {
            assert_eq!(at, offset_of(xml.as_bytes(), needle), "{text}");
        }
    }
}

#[test]
fn predefined_character_and_doctype_declared_references_stay_accepted() {
    let xml = "<FlexQueryResponse queryName=\"A&amp;B &#x41;&#66; &lt;&gt;&quot;&apos;\" type=\"AF\"><FlexStatements count=\"1\"><FlexStatement accountId=\"U1\"><Trades>&amp;</Trades></FlexStatement></FlexStatements></FlexQueryResponse>";
    let report = scan_bytes(xml.as_bytes()).unwrap();
    assert_eq!(report.query_name.as_deref(), Some("A&B AB <>\"'"));
    // A typographic quote inside a properly quoted value is well-formed XML.
    let ok = "<FlexQueryResponse queryName=\"The \u{201c}Daily\u{201d} query\" type=\"AF\"><FlexStatements count=\"0\"></FlexStatements></FlexQueryResponse>";
    let report = scan_bytes(ok.as_bytes()).unwrap();
    assert_eq!(
        report.query_name.as_deref(),
        Some("The \u{201c}Daily\u{201d} query")
    );
    // The DOCTYPE fixture's entities are declared, so referencing them is well-formed
    // (and they are still never expanded: see flex_parse::doctype_entities_are_never_expanded).
    scan_bytes(&fixture("doctype_entities.xml")).unwrap();
}

#[test]
fn the_envelope_parser_refuses_the_same_defects() {
    for (label, body, needle) in [
        (
            "typographic quotes",
            "<FlexStatementResponse timestamp=\u{201c}26 August, 2023\u{201d}>\n<Status>Success</Status>\n<ReferenceCode>1</ReferenceCode>\n</FlexStatementResponse>",
            "\u{201c}26",
        ),
        (
            "one typographic quote",
            "<FlexStatementResponse timestamp=\u{201c}26 August, 2023'>\n<Status>Success</Status>\n<ReferenceCode>1</ReferenceCode>\n</FlexStatementResponse>",
            "\u{201c}26",
        ),
        (
            "undefined entity",
            "<FlexStatementResponse timestamp='x'>\n<Status>Fail</Status>\n<ErrorCode>1020</ErrorCode>\n<ErrorMessage>Invalid&nbsp;request</ErrorMessage>\n</FlexStatementResponse>",
            "&nbsp;",
        ),
        (
            "bare ampersand",
            "<FlexStatementResponse timestamp='a & b'>\n<Status>Success</Status>\n<ReferenceCode>1</ReferenceCode>\n</FlexStatementResponse>",
            "& b",
        ),
    ] {
        let e = parse_envelope(body.as_bytes()).unwrap_err();
        assert_eq!(e.code(), "FLEX_MALFORMED_XML", "{label}: {e}");
        assert_eq!(
            malformed_at(&e),
            offset_of(body.as_bytes(), needle),
            "{label}: {e}"
        );
        assert_eq!(classify_body(body.as_bytes()), BodyKind::Envelope, "{label}");
    }
}

/// What a mutated byte was in the original document, from a small lexer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    /// Markup: a tag's `<`, name, `=`, quotes, spaces between attributes, `/`, `>`.
    Markup,
    /// Inside a quoted attribute value.
    Value,
    /// Character data, comments, the prolog: anything outside a tag.
    Other,
}

fn places(bytes: &[u8]) -> Vec<Place> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_tag, mut quote, mut special) = (false, None::<u8>, false);
    for (i, &b) in bytes.iter().enumerate() {
        if special {
            // `<?...?>` and `<!--...-->`: not elements.
            out.push(Place::Other);
            if b == b'>' {
                special = false;
            }
            continue;
        }
        if !in_tag {
            if b == b'<' && matches!(bytes.get(i + 1), Some(b'?' | b'!')) {
                special = true;
                out.push(Place::Other);
            } else if b == b'<' {
                in_tag = true;
                out.push(Place::Markup);
            } else {
                out.push(Place::Other);
            }
            continue;
        }
        match quote {
            Some(q) if b == q => {
                quote = None;
                out.push(Place::Markup);
            }
            Some(_) => out.push(Place::Value),
            None => {
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                } else if b == b'>' {
                    in_tag = false;
                }
                out.push(Place::Markup);
            }
        }
    }
    out
}

/// Property: a statement with any one byte replaced by `&` is parsed identically or refused
/// `FLEX_MALFORMED_XML` with an offset inside the file; replaced by `“`, a byte of markup
/// always makes it refused that way, and a byte of a value or of text leaves it accepted
/// (a typographic quote is an ordinary character there) or refused that way. (Only the
/// very first `<` is different: without it the body is not XML at all, `FLEX_NOT_XML`.)
#[test]
fn any_byte_mutated_into_an_ampersand_or_a_typographic_quote_is_parsed_identically_or_malformed_xml(
) {
    for name in ["activity_ok.xml", "multi_account.xml", "empty_sections.xml"] {
        let original = fixture(name);
        let expected = scan_bytes(&original).unwrap();
        let place = places(&original);
        for i in 0..original.len() {
            for replacement in ["&", "\u{201c}"] {
                let mut mutated = original[..i].to_vec();
                mutated.extend_from_slice(replacement.as_bytes());
                mutated.extend_from_slice(&original[i + 1..]);
                let ctx = || {
                    format!(
                        "{name}: byte {i} ({:?}, {:?}) -> {replacement}",
                        original[i] as char, place[i]
                    )
                };
                match scan_bytes(&mutated) {
                    Ok(report) => {
                        if replacement == "&" {
                            assert_eq!(report, expected, "{}", ctx());
                        } else {
                            assert_ne!(place[i], Place::Markup, "accepted: {}", ctx());
                            assert_eq!(
                                report.statements.len(),
                                expected.statements.len(),
                                "{}",
                                ctx()
                            );
                        }
                    }
                    // The first byte no longer `<`: the body does not start like XML at
                    // all, which has its own code.
                    Err(e) if i == 0 => assert_eq!(e.code(), "FLEX_NOT_XML", "{}", ctx()),
                    // A typographic quote in the `count` value: well-formed, but no count.
                    Err(e) if e.code() == "FLEX_COUNT_MISMATCH" => {
                        assert_eq!(
                            (place[i], replacement),
                            (Place::Value, "\u{201c}"),
                            "{}",
                            ctx()
                        )
                    }
                    Err(e) => {
                        assert_eq!(e.code(), "FLEX_MALFORMED_XML", "{}: {e}", ctx());
                        assert!(
                            malformed_at(&e) <= mutated.len() as u64,
                            "{}: offset past the end: {e}",
                            ctx()
                        );
                    }
                }
            }
        }
    }
}
