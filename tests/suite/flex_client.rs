//! The Flex transport against the loopback mock: what it sends, and how every HTTP-level
//! fault maps to a typed error.

use std::time::Duration;

use runledger::flex::{ClientConfig, FlexClient, FlexTransport, StatementPeriod, USER_AGENT};
use runledger::ManualClock;
use serde_json::json;

use crate::common::*;
use crate::flex_mock::*;
use crate::snap_json;

fn client(mock: &MockFlex) -> FlexClient {
    FlexClient::new(ClientConfig {
        base_url: mock.base_url(),
        read_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
    .unwrap()
}

#[test]
fn requests_speak_v3_with_the_user_agent_and_the_period() {
    let clock = ManualClock::new(t0());
    let mock = MockFlex::start(
        &clock,
        vec![
            Reply::accepted(),
            Reply::fixture("envelope_success_compact.xml"),
            Reply::accepted(),
            Reply::fixture("multi_account.xml"),
        ],
    );
    let c = client(&mock);
    let t = token();
    let r = c.send_request(&t, "777", &StatementPeriod::Query).unwrap();
    assert_eq!(r.reference, "1234567890");
    assert_eq!(
        r.url.as_deref(),
        Some("https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement")
    );
    c.send_request(
        &t,
        "777",
        &StatementPeriod::range("20261101", "20261120").unwrap(),
    )
    .unwrap();
    c.send_request(&t, "777", &StatementPeriod::Days { days: 7 })
        .unwrap();
    let body = c
        .get_statement(&t, &r.reference, r.url.as_deref())
        .unwrap()
        .read_to_end()
        .unwrap();
    assert_eq!(body, fixture("multi_account.xml"));

    let seen = mock.seen();
    let calls: Vec<_> = seen
        .iter()
        .map(|s| {
            json!({
                "call": s.call(),
                "t_is_token": s.param("t").as_deref() == Some(TOKEN),
                "q": s.param("q"),
                "v": s.param("v"),
                "fd": s.param("fd"),
                "td": s.param("td"),
                "p": s.param("p"),
                "userAgent": s.user_agent,
            })
        })
        .collect();
    assert!(seen
        .iter()
        .all(|s| s.user_agent.as_deref() == Some(USER_AGENT)));
    snap_json!("client_requests", calls);
}

#[test]
fn ib_url_is_followed_only_when_allowed() {
    let clock = ManualClock::new(t0());
    let mock = MockFlex::start(&clock, vec![Reply::fixture("activity_ok.xml")]);
    // Not following: IB's URL is ignored, the configured base is used.
    let c = client(&mock);
    c.get_statement(&token(), "1", Some("https://evil.example/GetStatement"))
        .unwrap();
    assert_eq!(mock.seen()[0].call(), "GetStatement");
    // Following: only https hosts under interactivebrokers.com.
    let follow = FlexClient::new(ClientConfig {
        follow_url: true,
        ..c.config().clone()
    })
    .unwrap();
    for url in [
        format!("{}/GetStatement", mock.base_url()),
        "https://interactivebrokers.com.evil.example/GetStatement".to_string(),
    ] {
        let e = follow.get_statement(&token(), "1", Some(&url)).unwrap_err();
        assert_eq!(e.code(), "FLEX_URL_REFUSED", "{url}");
    }
    assert_eq!(mock.seen().len(), 1, "a refused url is never requested");
}

#[test]
fn a_plain_http_base_is_refused_unless_loopback() {
    let e = FlexClient::new(ClientConfig {
        base_url: "http://flex.example.com/FlexWebService".into(),
        ..ClientConfig::default()
    })
    .unwrap_err();
    assert_eq!(e.code(), "FLEX_BAD_URL");
}

/// Every HTTP-level fault, as the transport reports it (port replaced by `<port>`).
#[test]
fn http_faults_map_to_typed_errors() {
    let statement = fixture("activity_ok.xml");
    let big = {
        let mut s = statement.clone();
        s.truncate(statement.len() - "</FlexQueryResponse>\n".len());
        s.extend(std::iter::repeat_n(b' ', 4096));
        s.extend(b"</FlexQueryResponse>\n");
        s
    };
    let cases: Vec<(&str, Reply, Option<u64>)> = vec![
        ("not_ready_1019", Reply::not_ready(), None),
        ("expired_1012", Reply::fail(1012), None),
        (
            "unknown_code_1025",
            Reply::fixture("envelope_fail_unknown.xml"),
            None,
        ),
        (
            "html_404",
            Reply::Body {
                status: 404,
                content_type: "text/html",
                body: fixture("html_404.html"),
            },
            None,
        ),
        (
            "html_200",
            Reply::Body {
                status: 200,
                content_type: "text/html",
                body: fixture("html_404.html"),
            },
            None,
        ),
        (
            "csv_body",
            Reply::Body {
                status: 200,
                content_type: "text/csv",
                body: fixture("statement.csv"),
            },
            None,
        ),
        ("empty_body", Reply::xml(Vec::new()), None),
        (
            "http_503",
            Reply::Body {
                status: 503,
                content_type: "text/plain",
                body: b"Service Unavailable".to_vec(),
            },
            None,
        ),
        (
            "http_500_with_envelope_1009",
            Reply::Body {
                status: 500,
                content_type: "text/xml",
                body: fail_envelope(1009),
            },
            None,
        ),
        (
            "statement_cut_off",
            Reply::Cut {
                announced: statement.len(),
                body: statement[..statement.len() / 2].to_vec(),
            },
            None,
        ),
        (
            "envelope_cut_off",
            Reply::Cut {
                announced: 500,
                body: fixture("envelope_warn_1019.xml")[..60].to_vec(),
            },
            None,
        ),
        ("connection_dropped", Reply::Drop, None),
        (
            "slow_past_timeout",
            Reply::Slow {
                delay: Duration::from_millis(1500),
                then: Box::new(Reply::not_ready()),
            },
            None,
        ),
        (
            "oversized_body",
            Reply::xml(big.clone()),
            Some(statement.len() as u64),
        ),
    ];
    let clock = ManualClock::new(t0());
    let mock = MockFlex::start(&clock, cases.iter().map(|(_, r, _)| r.clone()).collect());
    let port = mock.port().to_string();
    let mut out = Vec::new();
    for (name, _, cap) in &cases {
        let mut config = client(&mock).config().clone();
        if let Some(cap) = cap {
            config.max_body_bytes = *cap;
        }
        let c = FlexClient::new(config).unwrap();
        let err = c
            .get_statement(&token(), "1234567890", None)
            .and_then(|b| b.read_to_end())
            .expect_err(name);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "{name}: {shown}");
        out.push(json!({
            "case": name,
            "code": err.code(),
            "message": err.to_string().replace(&port, "<port>"),
        }));
    }
    // Nothing listens: connection refused.
    let refused = closed_port().to_string();
    let c = FlexClient::new(ClientConfig {
        base_url: format!("http://127.0.0.1:{refused}/FlexWebService"),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = c
        .send_request(&token(), "777", &StatementPeriod::Query)
        .unwrap_err();
    out.push(json!({
        "case": "connection_refused",
        "code": err.code(),
        "message": err.to_string().replace(&refused, "<port>"),
    }));
    assert!(!format!("{err} {err:?}").contains(TOKEN));
    snap_json!("client_faults", out);
}
