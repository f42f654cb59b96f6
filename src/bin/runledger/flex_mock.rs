//! A loopback mock of the Flex Web Service for the demo: `tiny_http` on 127.0.0.1 (an
//! ephemeral port). SendRequest answers with a reference code; GetStatement answers
//! "not ready" (1019) a given number of times, then the bundled synthetic statement.
//! It checks the token it receives and never prints it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The demo's synthetic activity statement (one account, written for runledger).
pub const STATEMENT: &str = include_str!("assets/demo_statement.xml");

const ACCEPTED: &str = "<FlexStatementResponse timestamp='21 November, 2026 06:31 AM EST'>\n<Status>Success</Status>\n<ReferenceCode>4242424242</ReferenceCode>\n<Url>https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement</Url>\n</FlexStatementResponse>\n";
const NOT_READY: &str = "<FlexStatementResponse timestamp='21 November, 2026 06:31 AM EST'>\n<Status>Warn</Status>\n<ErrorCode>1019</ErrorCode>\n<ErrorMessage>Statement generation in progress. Please try again shortly.</ErrorMessage>\n</FlexStatementResponse>\n";
const BAD_TOKEN: &str = "<FlexStatementResponse timestamp='21 November, 2026 06:31 AM EST'>\n<Status>Fail</Status>\n<ErrorCode>1015</ErrorCode>\n<ErrorMessage>Token is invalid.</ErrorMessage>\n</FlexStatementResponse>\n";

/// A running mock; stops when dropped.
pub struct FlexMock {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// Requests served so far.
    pub requests: Arc<AtomicUsize>,
}

impl FlexMock {
    /// Starts the mock; `not_ready` GetStatement replies precede the statement, and only
    /// `token` is accepted.
    pub fn start(token: &str, not_ready: usize) -> std::io::Result<FlexMock> {
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0")
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let (srv, count, token) = (server.clone(), requests.clone(), format!("t={token}"));
        let thread = std::thread::spawn(move || {
            let mut polls = 0;
            for req in srv.incoming_requests() {
                count.fetch_add(1, Ordering::SeqCst);
                let url = req.url().to_owned();
                let authorized = url.split(['?', '&']).any(|p| p == token);
                let body = if !authorized {
                    BAD_TOKEN
                } else if url.contains("/SendRequest") {
                    ACCEPTED
                } else if polls < not_ready {
                    polls += 1;
                    NOT_READY
                } else {
                    STATEMENT
                };
                let header = tiny_http::Header::from_bytes("Content-Type", "text/xml")
                    .expect("static header");
                let _ = req.respond(tiny_http::Response::from_string(body).with_header(header));
            }
        });
        Ok(FlexMock {
            server,
            thread: Some(thread),
            requests,
        })
    }

    /// The base URL to give the Flex client.
    pub fn base_url(&self) -> String {
        format!("http://{}/FlexWebService", self.server.server_addr())
    }
}

impl Drop for FlexMock {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
