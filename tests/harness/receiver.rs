//! A real HTTP receiver on 127.0.0.1 (actix-web in its own thread and runtime). It records every
//! request and answers from a script: per CRM object id (the body's `id`), a queue of statuses to
//! answer in turn, then 200.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
    pub delay: Option<Duration>,
}

/// A `Retry-After` header to answer with.
#[derive(Clone, Copy, Debug)]
pub enum RetryAfter {
    Seconds(u64),
    /// An HTTP date this long after the moment of the answer.
    DateIn(Duration),
    /// Exactly this text (e.g. something unparsable).
    Text(&'static str),
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Received>>,
    /// By body `id` (as its JSON text).
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// By path: every request to it gets this (after the per-id script).
    per_path: Mutex<HashMap<String, Reply>>,
    /// By path: the share of requests answered 500 at random.
    flaky: Mutex<HashMap<String, f64>>,
    /// By path: each answer waits a random time up to this long.
    jitter: Mutex<HashMap<String, Duration>>,
    /// By path: requests being answered now, and the most at once so far.
    open: Mutex<HashMap<String, (usize, usize)>>,
    /// The same over every path (shared with the receivers started with [`Receiver::start_counting_with`]).
    open_total: Arc<Mutex<(usize, usize)>>,
}

pub struct Receiver {
    pub base: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_with(Shared::default())
    }

    /// A second receiver (another port, so another host for the server) whose requests count with
    /// `other`'s in [`Self::most_at_once_total`].
    pub fn start_counting_with(other: &Receiver) -> Receiver {
        Self::start_with(Shared {
            open_total: other.shared.open_total.clone(),
            ..Shared::default()
        })
    }

    fn start_with(shared: Shared) -> Receiver {
        let shared = Arc::new(shared);
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        std::thread::spawn(move || {
            let sys = actix_rt::System::new();
            sys.block_on(async move {
                let data = web::Data::new(s);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handle))
                })
                .workers(2)
                .bind(("127.0.0.1", 0))
                .unwrap();
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                server.await.unwrap();
            });
        });
        let (addr, handle) = rx.recv().unwrap();
        Receiver {
            base: format!("http://{addr}"),
            shared,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Answers requests whose body `id` is `object_id` with these replies in turn (then 200).
    pub fn script(&self, object_id: Value, replies: Vec<Reply>) {
        self.shared
            .script
            .lock()
            .insert(object_id.to_string(), replies.into());
    }

    /// Every request to `path` gets `reply` (unless a per-id script says otherwise).
    pub fn answer_path(&self, path: &str, reply: Reply) {
        self.shared.per_path.lock().insert(path.to_owned(), reply);
    }

    /// Requests to `path` fail (500) at random with probability `p` (after the per-id script).
    pub fn fail_randomly(&self, path: &str, p: f64) {
        self.shared.flaky.lock().insert(path.to_owned(), p);
    }

    /// Every answer to `path` waits a random time from 0 to `max` (after any scripted delay).
    pub fn delay_randomly(&self, path: &str, max: Duration) {
        self.shared.jitter.lock().insert(path.to_owned(), max);
    }

    /// The most requests to `path` that were being answered at the same time.
    pub fn most_at_once(&self, path: &str) -> usize {
        self.shared
            .open
            .lock()
            .get(path)
            .map_or(0, |&(_, most)| most)
    }

    /// Requests to `path` being answered now (a request whose sender died is counted until its answer
    /// is done).
    pub fn open_now(&self, path: &str) -> usize {
        self.shared.open.lock().get(path).map_or(0, |&(now, _)| now)
    }

    /// The most requests being answered at the same time, over every path (and the receivers counting
    /// with this one).
    pub fn most_at_once_total(&self) -> usize {
        self.shared.open_total.lock().1
    }

    pub fn all(&self) -> Vec<Received> {
        self.shared.log.lock().clone()
    }

    pub fn at(&self, path: &str) -> Vec<Received> {
        self.shared
            .log
            .lock()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.shared
            .log
            .lock()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let h = self.handle.clone();
        std::thread::spawn(move || actix_rt::System::new().block_on(h.stop(false)));
    }
}

/// A request being answered (counted until dropped, even when the server drops the connection).
struct Open(Arc<Shared>, String);

impl Open {
    fn new(shared: Arc<Shared>, path: &str) -> Self {
        {
            let mut open = shared.open.lock();
            let (now, most) = open.entry(path.to_owned()).or_default();
            *now += 1;
            *most = (*most).max(*now);
        }
        {
            let mut total = shared.open_total.lock();
            total.0 += 1;
            total.1 = total.1.max(total.0);
        }
        Open(shared, path.to_owned())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some((now, _)) = self.0.open.lock().get_mut(&self.1) {
            *now -= 1;
        }
        self.0.open_total.lock().0 -= 1;
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    let at = Instant::now();
    let text = String::from_utf8_lossy(&body).into_owned();
    let object_id = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("id").cloned());
    let path = req.path().to_owned();
    let reply = object_id
        .and_then(|id| {
            shared
                .script
                .lock()
                .get_mut(&id.to_string())
                .and_then(VecDeque::pop_front)
        })
        .or_else(|| shared.per_path.lock().get(&path).copied())
        .or_else(|| {
            let p = shared.flaky.lock().get(&path).copied()?;
            (rand::random::<f64>() < p).then_some(Reply::status(500))
        })
        .unwrap_or(Reply::status(200));
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let _open = Open::new(shared.get_ref().clone(), &path);
    let jitter = shared
        .jitter
        .lock()
        .get(&path)
        .map(|max| max.mul_f64(rand::random::<f64>()));
    shared.log.lock().push(Received {
        path: path.clone(),
        headers,
        body: text,
        at,
        status: reply.status,
    });
    if let Some(d) = reply.delay {
        actix_rt::time::sleep(d).await;
    }
    if let Some(d) = jitter {
        actix_rt::time::sleep(d).await;
    }

    let mut res = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    match reply.retry_after {
        Some(RetryAfter::Seconds(n)) => {
            res.insert_header(("Retry-After", n.to_string()));
        }
        Some(RetryAfter::DateIn(d)) => {
            let when = std::time::SystemTime::now() + d;
            res.insert_header(("Retry-After", httpdate::fmt_http_date(when)));
        }
        Some(RetryAfter::Text(t)) => {
            res.insert_header(("Retry-After", t));
        }
        None => {}
    }
    res.body("received")
}
