//! Local stand-ins for the alert vendors: real HTTP (axum) and SMTP servers on 127.0.0.1
//! that check what the real services check (method, path, auth, content type, required
//! fields, value rules, size limits) and answer with their status codes and bodies.
//!
//! Each records what it accepted and the time of every request, and can be told to answer
//! the next requests with a rate limit, a server error or any other answer, so retries are
//! tested against real network behaviour.

pub mod pagerduty;
pub mod slack;
pub mod smtp;
pub mod teams;
pub mod twilio;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// An answer forced on a coming request, before any validation (as a vendor's edge would).
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// 500.
    ServerError,
    /// Any status and body (e.g. 400 with the vendor's error body, or Slack's 200 with an
    /// error word).
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
    },
}

/// What a receiver keeps: accepted messages, every request's arrival, pending faults.
pub struct Recorder<T> {
    accepted: Mutex<Vec<T>>,
    hits: Mutex<Vec<Instant>>,
    faults: Mutex<VecDeque<Fault>>,
}

impl<T: Clone> Recorder<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder {
            accepted: Mutex::new(Vec::new()),
            hits: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
        })
    }

    /// Count a request; the fault to answer it with, if one is queued.
    fn hit(&self) -> Option<Fault> {
        self.hits.lock().unwrap().push(Instant::now());
        self.faults.lock().unwrap().pop_front()
    }

    fn accept(&self, v: T) {
        self.accepted.lock().unwrap().push(v);
    }

    pub fn accepted(&self) -> Vec<T> {
        self.accepted.lock().unwrap().clone()
    }

    /// Arrival times of all requests, faulted and rejected ones included.
    pub fn hits(&self) -> Vec<Instant> {
        self.hits.lock().unwrap().clone()
    }

    /// Answer the next `n` requests with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut q = self.faults.lock().unwrap();
        q.extend(std::iter::repeat_n(fault, n));
    }
}

impl Fault {
    fn into_response(self) -> Response {
        match self {
            Fault::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                "rate_limited",
            )
                .into_response(),
            Fault::ServerError => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
            }
            Fault::Answer {
                status,
                content_type,
                body,
            } => (
                StatusCode::from_u16(status).expect("valid status"),
                [(header::CONTENT_TYPE, content_type)],
                body,
            )
                .into_response(),
        }
    }
}

/// A running HTTP receiver: its address and its recorder. The server stops when dropped.
pub struct HttpReceiver<T> {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder<T>>,
    server: tokio::task::JoinHandle<()>,
}

impl<T> HttpReceiver<T> {
    async fn serve(router: Router, recorder: Arc<Recorder<T>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("receiver serves");
        });
        HttpReceiver {
            addr,
            recorder,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl<T> std::ops::Deref for HttpReceiver<T> {
    type Target = Recorder<T>;
    fn deref(&self) -> &Recorder<T> {
        &self.recorder
    }
}

impl<T> Drop for HttpReceiver<T> {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The media type of a request, without parameters, lower case.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}
