//! A loopback mock of the Flex Web Service (tiny_http on 127.0.0.1, ephemeral port) that
//! replays a script of replies, one per request, and logs each request.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use runledger::flex::FlexToken;
use runledger::{Clock, ManualClock, Timestamp};

/// Distinctive enough that finding it anywhere is a leak.
pub const TOKEN: &str = "918273645546372819283746";

/// The test token.
pub fn token() -> FlexToken {
    FlexToken::new(TOKEN).unwrap()
}

/// Where the fixtures live.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/flex/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A `Fail` envelope with `code`.
pub fn fail_envelope(code: u32) -> Vec<u8> {
    format!(
        "<FlexStatementResponse timestamp='22 November, 2026 06:40 AM EST'>\n<Status>Fail</Status>\n<ErrorCode>{code}</ErrorCode>\n<ErrorMessage>Scripted failure {code}.</ErrorMessage>\n</FlexStatementResponse>\n"
    )
    .into_bytes()
}

/// One scripted reply.
#[derive(Clone)]
pub enum Reply {
    /// A complete HTTP reply.
    Body {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Announces `announced` bytes, sends `body`, then closes the connection.
    Cut { announced: usize, body: Vec<u8> },
    /// Closes the connection without replying.
    Drop,
    /// Waits (real time) before `then`.
    Slow { delay: Duration, then: Box<Reply> },
}

impl Reply {
    /// 200 with an XML body.
    pub fn xml(body: Vec<u8>) -> Reply {
        Reply::Body {
            status: 200,
            content_type: "text/xml",
            body,
        }
    }
    /// 200 with a fixture.
    pub fn fixture(name: &str) -> Reply {
        Reply::xml(fixture(name))
    }
    /// SendRequest success (reference 1234567890).
    pub fn accepted() -> Reply {
        Reply::fixture("envelope_success.xml")
    }
    /// GetStatement 1019.
    pub fn not_ready() -> Reply {
        Reply::fixture("envelope_warn_1019.xml")
    }
    /// A fail envelope with `code`.
    pub fn fail(code: u32) -> Reply {
        Reply::xml(fail_envelope(code))
    }
}

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query, verbatim (it carries the token).
    pub url: String,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// The manual clock's time when it arrived.
    pub at: Timestamp,
}

impl Seen {
    /// `SendRequest` or `GetStatement`.
    pub fn call(&self) -> &str {
        let path = self.url.split('?').next().unwrap_or("");
        path.rsplit('/').next().unwrap_or("")
    }
    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<String> {
        let query = self.url.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

/// The running mock; stops when dropped.
pub struct MockFlex {
    server: Arc<tiny_http::Server>,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl MockFlex {
    /// Starts a mock that answers requests with `script`, in order; when the script is
    /// exhausted it answers 500. `clock` stamps each request.
    pub fn start(clock: &ManualClock, script: Vec<Reply>) -> MockFlex {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let thread = {
            let server = server.clone();
            let seen = seen.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    let user_agent = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("User-Agent"))
                        .map(|h| h.value.to_string());
                    seen.lock().unwrap().push(Seen {
                        url: req.url().to_string(),
                        user_agent,
                        at: clock.now(),
                    });
                    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Body {
                        status: 500,
                        content_type: "text/plain",
                        body: b"script exhausted".to_vec(),
                    });
                    // Each reply may sleep: answer on its own thread so the next
                    // request (after a client timeout) is not held up.
                    std::thread::spawn(move || answer(req, reply));
                }
            })
        };
        MockFlex {
            server,
            port,
            seen,
            thread: Some(thread),
        }
    }

    /// The base URL to configure the client with.
    pub fn base_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/AccountManagement/FlexWebService",
            self.port
        )
    }

    /// Its port (to replace it with a placeholder in snapshots).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(req: tiny_http::Request, reply: Reply) {
    match reply {
        Reply::Body {
            status,
            content_type,
            body,
        } => {
            let header =
                tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
                    .unwrap();
            let _ = req.respond(
                tiny_http::Response::from_data(body)
                    .with_status_code(status)
                    .with_header(header),
            );
        }
        Reply::Cut { announced, body } => {
            let mut w = req.into_writer();
            let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
            );
            let _ = w.write_all(&body);
            let _ = w.flush();
        }
        Reply::Drop => drop(req.into_writer()),
        Reply::Slow { delay, then } => {
            std::thread::sleep(delay);
            answer(req, *then);
        }
    }
}

impl Drop for MockFlex {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
