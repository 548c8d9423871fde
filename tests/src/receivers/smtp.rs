//! A real SMTP server on 127.0.0.1: the `mailin` crate speaks the protocol (EHLO, MAIL,
//! RCPT, DATA, dot-unstuffing), a small tokio loop carries its lines. It records each
//! message and parses it (mail-parser) so tests can check subject, text and HTML parts.
//! Without TLS: it stands for a loopback relay. It can answer the next messages with a 4xx
//! or 5xx. (mailin-embedded would do the I/O, but forces a TLS backend that pulls aws-lc.)

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mail_parser::{MessageParser, MimeHeaders};
use mailin::response::{INTERNAL_ERROR, OK, START_DATA, TRANSACTION_FAILED};
use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One received message, parsed.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    pub raw: Vec<u8>,
    pub subject: String,
    /// `multipart/alternative` etc.
    pub content_type: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// A refusal given as the reply to DATA (mailin 0.6 stays in its data state after an error
/// reply at the end of the data, so refusing there would wedge the session).
#[derive(Debug, Clone, Copy)]
pub enum SmtpFault {
    /// 451: try again later.
    Transient,
    /// 554: refused.
    Permanent,
}

#[derive(Default)]
struct Shared {
    accepted: Vec<ReceivedMail>,
    hits: Vec<Instant>,
    faults: VecDeque<SmtpFault>,
}

/// One SMTP session's state (one per connection), sharing the recorder.
#[derive(Clone)]
struct Recording {
    shared: Arc<Mutex<Shared>>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Recording {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut s = self.shared.lock().unwrap();
        s.hits.push(Instant::now());
        match s.faults.pop_front() {
            Some(SmtpFault::Transient) => return INTERNAL_ERROR,
            Some(SmtpFault::Permanent) => return TRANSACTION_FAILED,
            None => {}
        }
        self.from = from.to_string();
        self.to = to.to_vec();
        self.data.clear();
        START_DATA
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut s = self.shared.lock().unwrap();
        match parse(&self.from, &self.to, std::mem::take(&mut self.data)) {
            Some(mail) => {
                s.accepted.push(mail);
                OK
            }
            None => Response::custom(554, "Message could not be parsed".into()),
        }
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        OK
    }
}

fn parse(from: &str, to: &[String], raw: Vec<u8>) -> Option<ReceivedMail> {
    let msg = MessageParser::default().parse(&raw)?;
    let content_type = msg
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
        .unwrap_or_default();
    // Only real parts of each type count (mail-parser would otherwise derive text from HTML).
    let mut text = None;
    let mut html = None;
    for part in msg.parts.iter() {
        let Some(ct) = part.content_type() else {
            continue;
        };
        if ct.ctype() != "text" {
            continue;
        }
        match ct.subtype() {
            // SMTP carries CRLF line ends; tests compare with \n.
            Some("plain") => text = part.text_contents().map(|t| t.replace("\r\n", "\n")),
            Some("html") => html = part.text_contents().map(|t| t.replace("\r\n", "\n")),
            _ => {}
        }
    }
    Some(ReceivedMail {
        envelope_from: from.to_string(),
        envelope_to: to.to_vec(),
        subject: msg.subject().unwrap_or_default().to_string(),
        content_type,
        text,
        html,
        raw: raw.clone(),
    })
}

/// A running SMTP receiver; the server stops when dropped.
pub struct SmtpReceiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: tokio::task::JoinHandle<()>,
}

pub async fn start() -> SmtpReceiver {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    serve(listener)
}

/// A receiver on a listener bound elsewhere (e.g. inside a network namespace, `Netns::bind_tcp`).
pub fn start_on(listener: std::net::TcpListener) -> SmtpReceiver {
    serve(TcpListener::from_std(listener).expect("a non-blocking listener"))
}

fn serve(listener: TcpListener) -> SmtpReceiver {
    let addr = listener.local_addr().expect("local addr");
    let shared = Arc::new(Mutex::new(Shared::default()));
    let sessions = SessionBuilder::new("receiver.agog.test");
    let recorder = shared.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let handler = Recording {
                shared: recorder.clone(),
                from: String::new(),
                to: Vec::new(),
                data: Vec::new(),
            };
            let session = sessions.build(peer.ip(), handler);
            tokio::spawn(serve_session(session, stream));
        }
    });
    SmtpReceiver {
        addr,
        shared,
        server,
    }
}

/// Feed the client's lines to the protocol machine and write back its answers.
async fn serve_session(
    mut session: mailin::Session<Recording>,
    stream: TcpStream,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(&session.greeting().buffer()?).await?;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let res = session.process(&line);
        match res.action {
            Action::NoReply => {}
            Action::Reply => write.write_all(&res.buffer()?).await?,
            // No TLS here: a STARTTLS request is not offered, so it cannot be asked for.
            Action::Close | Action::UpgradeTls => {
                write.write_all(&res.buffer()?).await?;
                return Ok(());
            }
        }
    }
}

impl Drop for SmtpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SmtpReceiver {
    pub fn accepted(&self) -> Vec<ReceivedMail> {
        self.shared.lock().unwrap().accepted.clone()
    }
    pub fn hits(&self) -> Vec<Instant> {
        self.shared.lock().unwrap().hits.clone()
    }
    pub fn fail_next(&self, n: usize, fault: SmtpFault) {
        self.shared
            .lock()
            .unwrap()
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }
}
