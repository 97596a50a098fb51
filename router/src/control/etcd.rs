//! The etcd client of the router cluster (issue 16): etcd's JSON gRPC gateway (`/v3/...`) over
//! HTTP/1.1 on the control plane's tokio runtime.
//!
//! Why the gateway and not gRPC: it works on Debian's etcd 3.4 through 3.7 and costs 11 small
//! crates (hyper's HTTP/1.1 client) instead of tonic, prost and a `protoc` at build time (see
//! the issue 16 design note). The gateway speaks proto3 JSON: keys and values are base64,
//! int64 fields are JSON strings, and fields holding their default value are left out (a failed
//! txn has no `succeeded`, a PUT event no `type`, a keepalive of a gone lease no `TTL`).
//!
//! Every request is bounded by the client's own timeout: an etcd member without quorum answers
//! a write only after about 6 s, and the cluster treats "no answer in time" as "etcd
//! unreachable", never as "expired". Within that deadline a request that cannot reach an
//! endpoint (refused, reset, closed) or that the member answers with gRPC `Unavailable` moves
//! on to the next endpoint at once; a request that runs out of time fails with
//! [`EtcdError::Unreachable`] and the next request starts at the next endpoint. A write whose
//! answer was lost may have been applied: a retried CAS then fails and returns the value it
//! wrote, which the caller recognises.
//!
//! Unary requests share keep-alive connections (one per request in flight, idle ones reused);
//! each watch has its own connection and task, resumes after the last revision it delivered
//! when its stream breaks, and reports a compaction instead of skipping events.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

/// gRPC status code `NOT_FOUND` (an unknown lease, for example).
pub const GRPC_NOT_FOUND: i32 = 5;
/// gRPC status code `UNAVAILABLE` (the member has no leader or is stopping): try another one.
pub const GRPC_UNAVAILABLE: i32 = 14;

/// Idle keep-alive connections kept per endpoint; more concurrent requests open their own.
const MAX_IDLE_PER_ENDPOINT: usize = 4;
/// First pause before a broken watch reconnects; it doubles up to [`WATCH_BACKOFF_MAX`].
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between watch reconnection attempts.
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Watch messages buffered for a slow reader before the watch task waits for it.
const WATCH_QUEUE: usize = 256;

/// Everything an etcd request can fail with; each names the endpoint it concerns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint given to [`EtcdClient::new`] is not `http://IP:PORT` (or `IP:PORT`).
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer in time, or the connection could not be made or broke: etcd is unreachable
    /// (which says nothing about leases expiring).
    #[error("etcd unreachable (last tried {endpoint}): {reason}")]
    Unreachable {
        /// The endpoint tried last.
        endpoint: String,
        /// Connect error, reset, or the timeout that ran out.
        reason: String,
    },
    /// etcd answered with an error status.
    #[error("etcd at {endpoint} refused the request: HTTP {http}, gRPC code {code}: {message}")]
    Status {
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status code (the gateway's mapping of the gRPC code).
        http: u16,
        /// The gRPC status code (5 not found, 14 unavailable, ...).
        code: i32,
        /// etcd's message, e.g. `etcdserver: requested lease not found`.
        message: String,
    },
    /// etcd's answer could not be decoded (not JSON, bad base64, a missing field).
    #[error("etcd at {endpoint} sent an answer we cannot decode: {reason}")]
    Protocol {
        /// The endpoint that answered.
        endpoint: String,
        /// What could not be decoded.
        reason: String,
    },
}

impl EtcdError {
    /// True for [`EtcdError::Unreachable`]: no answer, as opposed to an answer we did not like.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, EtcdError::Unreachable { .. })
    }
}

/// One key as stored in etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in a delete event's `kv`).
    pub value: Vec<u8>,
    /// Revision of the key's creation (0: the key does not exist).
    pub create_revision: i64,
    /// Revision of the key's last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// The answer to a range: the store revision it was read at and the keys found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The store revision the read saw (watch from `revision + 1` to miss nothing).
    pub revision: i64,
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
}

/// The answer to a delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteResult {
    /// The store revision after the delete.
    pub revision: i64,
    /// How many keys were deleted (0 or 1 for one key).
    pub deleted: i64,
}

/// A compare-and-swap of one key, optionally fenced by a lease on another key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cas<'a> {
    /// The key to write.
    pub key: &'a [u8],
    /// The key's `mod_revision` the new value was computed from; 0 means "the key is absent".
    pub expect_mod_revision: i64,
    /// The value to put when the compares hold.
    pub value: &'a [u8],
    /// The lease to attach the new value to.
    pub lease: Option<i64>,
    /// `(key, lease)`: also require that `key` is attached to `lease` (a proposer whose member
    /// key expired with its lease cannot commit).
    pub fence: Option<(&'a [u8], i64)>,
}

/// What a [`Cas`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The compares held and the value was written at `revision`.
    Succeeded {
        /// The store revision of the write.
        revision: i64,
    },
    /// A compare failed; nothing was written. The current state comes back in the same round
    /// trip.
    Failed {
        /// The store revision the failure ranges saw.
        revision: i64,
        /// The key's current value (`None`: absent).
        current: Option<KeyValue>,
        /// The fence key's current value when a fence was given (`None`: absent or no fence).
        fence_holder: Option<KeyValue>,
    },
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease id (attach keys with it, keep it alive with it).
    pub id: i64,
    /// The TTL etcd granted in seconds (at least its minimum, 2 s with default timings).
    pub ttl: i64,
}

/// Whether a watch event wrote or deleted its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or modified.
    Put,
    /// The key was deleted (or its lease expired).
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: key and `mod_revision` only).
    pub kv: KeyValue,
    /// The key before the change, when it existed.
    pub prev_kv: Option<KeyValue>,
}

/// What a [`Watch`] delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes in revision order.
    Events {
        /// The store revision when etcd sent them.
        revision: i64,
        /// The changes, oldest first.
        events: Vec<WatchEvent>,
    },
    /// The stream broke; the watch reconnects (next endpoint) and resumes at `resume_from`, so
    /// no event is lost or repeated. Informational: keep reading.
    Reconnecting {
        /// Why the stream broke.
        error: EtcdError,
        /// The first revision the resumed watch asks for.
        resume_from: i64,
    },
    /// The revisions after the last delivered one were compacted away: the watch has ended.
    /// Range again and start a new watch from that range's revision + 1.
    Compacted {
        /// etcd's oldest revision still available.
        compact_revision: i64,
    },
}

/// A running watch of a key prefix; dropping it stops the watch and closes its connection.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<WatchMessage>,
    task: JoinHandle<()>,
}

impl Watch {
    /// The next message; `None` only after [`WatchMessage::Compacted`].
    pub async fn next(&mut self) -> Option<WatchMessage> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client's counters, for `swrouter status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EtcdStats {
    /// Requests made by callers (one per operation).
    pub requests: u64,
    /// HTTP round trips sent (more than `requests` when a request moved to another endpoint).
    pub round_trips: u64,
    /// TCP connections opened (unary and watch).
    pub connects: u64,
    /// Times a request moved on to the next endpoint.
    pub failovers: u64,
    /// Requests that failed with [`EtcdError::Unreachable`].
    pub unreachable: u64,
    /// Requests that failed with [`EtcdError::Status`].
    pub status_errors: u64,
    /// Requests that failed with [`EtcdError::Protocol`].
    pub protocol_errors: u64,
    /// Watch streams that broke and were resumed.
    pub watch_reconnects: u64,
    /// Watch events delivered.
    pub watch_events: u64,
    /// Watches ended by a compaction.
    pub watch_compacted: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    round_trips: AtomicU64,
    connects: AtomicU64,
    failovers: AtomicU64,
    unreachable: AtomicU64,
    status_errors: AtomicU64,
    protocol_errors: AtomicU64,
    watch_reconnects: AtomicU64,
    watch_events: AtomicU64,
    watch_compacted: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn count_error(&self, e: &EtcdError) {
        match e {
            EtcdError::Unreachable { .. } => bump(&self.unreachable),
            EtcdError::Status { .. } => bump(&self.status_errors),
            EtcdError::Protocol { .. } => bump(&self.protocol_errors),
            EtcdError::InvalidEndpoint { .. } => {}
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    /// `IP:PORT`, for the Host header and messages.
    authority: String,
}

type Sender = SendRequest<Full<Bytes>>;

struct Shared {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    /// Where the next request starts: the endpoint that answered last, or the one after an
    /// endpoint that failed.
    preferred: AtomicUsize,
    idle: Mutex<Vec<(usize, Sender)>>,
    counters: Counters,
}

/// The etcd client: cheap to clone (clones share connections and counters). Needs a tokio
/// runtime with I/O and time enabled (the control plane's).
#[derive(Clone)]
pub struct EtcdClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoints())
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

/// How one attempt at one endpoint failed.
enum AttemptError {
    /// Try the next endpoint (if time is left).
    Next(EtcdError),
    /// An answer: give it to the caller.
    Final(EtcdError),
}

/// Parses `http://IP:PORT`, `http://IP:PORT/` or `IP:PORT` (no TLS, no host names: the cluster
/// configuration names its etcd members by address).
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, EtcdError> {
    let bad = |reason: &str| EtcdError::InvalidEndpoint {
        endpoint: s.to_string(),
        reason: reason.to_string(),
    };
    if s.starts_with("https://") {
        return Err(bad(
            "https is not supported; use http:// (etcd's client URL without TLS)",
        ));
    }
    let rest = s.strip_prefix("http://").unwrap_or(s);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse::<SocketAddr>()
        .map_err(|_| bad("expected http://IP:PORT, e.g. http://10.8.0.100:2379"))
}

impl EtcdClient {
    /// A client for the members at `endpoints` (`http://IP:PORT`); every request gives up after
    /// `request_timeout` in all, failing over between endpoints within it.
    pub fn new(endpoints: Vec<String>, request_timeout: Duration) -> Result<EtcdClient, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no etcd endpoints given".to_string(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|s| {
                parse_endpoint(s).map(|addr| Endpoint {
                    addr,
                    authority: addr.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdClient {
            shared: Arc::new(Shared {
                endpoints,
                timeout: request_timeout,
                preferred: AtomicUsize::new(0),
                idle: Mutex::new(Vec::new()),
                counters: Counters::default(),
            }),
        })
    }

    /// The endpoints as `IP:PORT`, in the order given.
    pub fn endpoints(&self) -> Vec<String> {
        self.shared
            .endpoints
            .iter()
            .map(|e| e.authority.clone())
            .collect()
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EtcdStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EtcdStats {
            requests: l(&c.requests),
            round_trips: l(&c.round_trips),
            connects: l(&c.connects),
            failovers: l(&c.failovers),
            unreachable: l(&c.unreachable),
            status_errors: l(&c.status_errors),
            protocol_errors: l(&c.protocol_errors),
            watch_reconnects: l(&c.watch_reconnects),
            watch_events: l(&c.watch_events),
            watch_compacted: l(&c.watch_compacted),
        }
    }

    /// The key `key`, if it exists (a linearizable read).
    pub async fn range(&self, key: &[u8]) -> Result<RangeResult, EtcdError> {
        self.call("kv/range", json!({ "key": B64.encode(key) }), decode_range)
            .await
    }

    /// Every key starting with `prefix`, in key order (an empty prefix: every key).
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<RangeResult, EtcdError> {
        let body = json!({ "key": B64.encode(key_or_zero(prefix)), "range_end": B64.encode(prefix_end(prefix)) });
        self.call("kv/range", body, decode_range).await
    }

    /// Writes `key = value`, attached to `lease` if given; returns the store revision.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<i64, EtcdError> {
        self.call("kv/put", put_body(key, value, lease), |v| {
            header_revision(&v)
        })
        .await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<DeleteResult, EtcdError> {
        self.call("kv/deleterange", json!({ "key": B64.encode(key) }), |v| {
            Ok(DeleteResult {
                revision: header_revision(&v)?,
                deleted: int(&v, "deleted")?,
            })
        })
        .await
    }

    /// One compare-and-swap round trip (see [`Cas`]); on failure the current values come back.
    pub async fn txn_cas(&self, cas: Cas<'_>) -> Result<CasOutcome, EtcdError> {
        let mut compare = vec![if cas.expect_mod_revision == 0 {
            json!({ "key": B64.encode(cas.key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0" })
        } else {
            json!({ "key": B64.encode(cas.key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": cas.expect_mod_revision.to_string() })
        }];
        let mut failure = vec![json!({ "request_range": { "key": B64.encode(cas.key) } })];
        if let Some((fence_key, lease)) = cas.fence {
            compare.push(json!({ "key": B64.encode(fence_key), "target": "LEASE",
                                 "result": "EQUAL", "lease": lease.to_string() }));
            failure.push(json!({ "request_range": { "key": B64.encode(fence_key) } }));
        }
        let body = json!({
            "compare": compare,
            "success": [{ "request_put": put_body(cas.key, cas.value, cas.lease) }],
            "failure": failure,
        });
        let fenced = cas.fence.is_some();
        self.call("kv/txn", body, move |v| decode_txn(&v, fenced))
            .await
    }

    /// Grants a lease of `ttl` seconds (etcd may raise it to its minimum).
    pub async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant, EtcdError> {
        self.call("lease/grant", json!({ "TTL": ttl.to_string() }), |v| {
            let error = v.get("error").and_then(Value::as_str).unwrap_or("");
            if !error.is_empty() {
                return Err(format!("lease grant refused: {error}"));
            }
            Ok(LeaseGrant {
                id: int(&v, "ID")?,
                ttl: int(&v, "TTL")?,
            })
        })
        .await
    }

    /// Renews lease `id` once: `Some(ttl)` while it lives, `None` when it is gone (expired or
    /// revoked: the keys attached to it are deleted).
    pub async fn lease_keepalive(&self, id: i64) -> Result<Option<i64>, EtcdError> {
        // A stream in gRPC; the gateway answers our one request with one `result` and ends.
        self.call("lease/keepalive", json!({ "ID": id.to_string() }), |v| {
            let result = v
                .get("result")
                .ok_or_else(|| "keepalive answer without a result".to_string())?;
            let ttl = int(result, "TTL")?;
            Ok((ttl > 0).then_some(ttl))
        })
        .await
    }

    /// Revokes lease `id` (its keys are deleted at once); `false` if it was already gone.
    pub async fn lease_revoke(&self, id: i64) -> Result<bool, EtcdError> {
        match self
            .call("lease/revoke", json!({ "ID": id.to_string() }), |v| {
                header_revision(&v).map(drop)
            })
            .await
        {
            Ok(()) => Ok(true),
            Err(EtcdError::Status { code, .. }) if code == GRPC_NOT_FOUND => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Watches every key under `prefix` from `start_revision` (0: from now), with the previous
    /// values. Runs as its own task on the current runtime until the [`Watch`] is dropped.
    pub fn watch_prefix(&self, prefix: &[u8], start_revision: i64) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let task = tokio::spawn(run_watch(
            self.shared.clone(),
            prefix.to_vec(),
            start_revision,
            tx,
        ));
        Watch { rx, task }
    }

    /// Sends one request, failing over between endpoints within the timeout, and decodes the
    /// answer with `decode` (its error becomes [`EtcdError::Protocol`]).
    async fn call<T>(
        &self,
        path: &'static str,
        body: Value,
        decode: impl FnOnce(Value) -> Result<T, String>,
    ) -> Result<T, EtcdError> {
        let shared = &self.shared;
        bump(&shared.counters.requests);
        let deadline = Instant::now() + shared.timeout;
        let body = Bytes::from(body.to_string());
        let n = shared.endpoints.len();
        let start = shared.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match self.attempt(idx, path, body.clone(), deadline).await {
                Ok(v) => {
                    shared.preferred.store(idx, Ordering::Relaxed);
                    return decode(v).map_err(|reason| {
                        let e = EtcdError::Protocol {
                            endpoint: shared.endpoints[idx].authority.clone(),
                            reason,
                        };
                        shared.counters.count_error(&e);
                        e
                    });
                }
                Err(AttemptError::Final(e)) => {
                    shared.preferred.store(idx, Ordering::Relaxed);
                    shared.counters.count_error(&e);
                    return Err(e);
                }
                Err(AttemptError::Next(e)) => {
                    tracing::debug!("etcd {path}: {e}");
                    shared.preferred.store((idx + 1) % n, Ordering::Relaxed);
                    last = Some(e);
                    if Instant::now() >= deadline {
                        break;
                    }
                    if i + 1 < n {
                        bump(&shared.counters.failovers);
                    }
                }
            }
        }
        let e = match last {
            Some(EtcdError::Status {
                endpoint, message, ..
            }) => EtcdError::Unreachable {
                endpoint,
                reason: format!("no member available: {message}"),
            },
            Some(e) => e,
            None => EtcdError::Unreachable {
                endpoint: String::new(),
                reason: "no endpoint tried".to_string(),
            },
        };
        shared.counters.count_error(&e);
        Err(e)
    }

    /// One endpoint: an idle connection (if it turns out closed, one fresh one) or a new one.
    async fn attempt(
        &self,
        idx: usize,
        path: &'static str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Value, AttemptError> {
        let shared = &self.shared;
        if let Some(mut sender) = take_idle(shared, idx) {
            match exchange(shared, idx, &mut sender, path, body.clone(), deadline).await {
                // etcd may have closed an idle connection (a restart): one fresh try.
                Err(AttemptError::Next(EtcdError::Unreachable { .. }))
                    if Instant::now() < deadline => {}
                r => return keep_if_answered(shared, idx, sender, r),
            }
        }
        let mut sender = connect(shared, idx, deadline)
            .await
            .map_err(AttemptError::Next)?;
        let r = exchange(shared, idx, &mut sender, path, body, deadline).await;
        keep_if_answered(shared, idx, sender, r)
    }
}

/// Keeps the connection for the next request when the exchange ended with a whole answer
/// (good or an error status); after a timeout or a broken read it is in an unknown state.
fn keep_if_answered(
    shared: &Shared,
    idx: usize,
    sender: Sender,
    r: Result<Value, AttemptError>,
) -> Result<Value, AttemptError> {
    let answered = match &r {
        Ok(_) => true,
        Err(AttemptError::Final(e) | AttemptError::Next(e)) => {
            matches!(e, EtcdError::Status { .. } | EtcdError::Protocol { .. })
        }
    };
    if answered {
        put_idle(shared, idx, sender);
    }
    r
}

fn take_idle(shared: &Shared, idx: usize) -> Option<Sender> {
    let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
    idle.retain(|(_, s)| !s.is_closed());
    let pos = idle.iter().position(|(i, _)| *i == idx)?;
    Some(idle.swap_remove(pos).1)
}

fn put_idle(shared: &Shared, idx: usize, sender: Sender) {
    let mut idle = shared.idle.lock().unwrap_or_else(|e| e.into_inner());
    if idle.iter().filter(|(i, _)| *i == idx).count() < MAX_IDLE_PER_ENDPOINT {
        idle.push((idx, sender));
    }
}

fn unreachable(shared: &Shared, idx: usize, reason: impl Into<String>) -> EtcdError {
    EtcdError::Unreachable {
        endpoint: shared.endpoints[idx].authority.clone(),
        reason: reason.into(),
    }
}

fn timed_out(shared: &Shared, idx: usize, what: &str) -> EtcdError {
    unreachable(
        shared,
        idx,
        format!(
            "no {what} within the request timeout of {} ms",
            shared.timeout.as_millis()
        ),
    )
}

/// Opens a connection to endpoint `idx` and spawns its connection task.
async fn connect(shared: &Shared, idx: usize, deadline: Instant) -> Result<Sender, EtcdError> {
    let ep = &shared.endpoints[idx];
    bump(&shared.counters.connects);
    let stream = match timeout_at(deadline, TcpStream::connect(ep.addr)).await {
        Err(_) => return Err(timed_out(shared, idx, "connection")),
        Ok(Err(e)) => return Err(unreachable(shared, idx, format!("connect: {e}"))),
        Ok(Ok(s)) => s,
    };
    // Small requests, answered at once: do not let Nagle hold them.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = match timeout_at(deadline, http1::handshake(TokioIo::new(stream))).await {
        Err(_) => return Err(timed_out(shared, idx, "connection")),
        Ok(Err(e)) => return Err(unreachable(shared, idx, format!("HTTP handshake: {e}"))),
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; errors surface on the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(ep: &Endpoint, path: &str, body: Bytes) -> Result<Request<Full<Bytes>>, EtcdError> {
    Request::post(format!("/v3/{path}"))
        .header(HOST, &ep.authority)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| EtcdError::Protocol {
            endpoint: ep.authority.clone(),
            reason: format!("building the request: {e}"),
        })
}

/// Sends one request on `sender` and reads the whole answer before `deadline`.
async fn exchange(
    shared: &Shared,
    idx: usize,
    sender: &mut Sender,
    path: &'static str,
    body: Bytes,
    deadline: Instant,
) -> Result<Value, AttemptError> {
    let ep = &shared.endpoints[idx];
    let next = |reason: String| AttemptError::Next(unreachable(shared, idx, reason));
    match timeout_at(deadline, sender.ready()).await {
        Err(_) => return Err(AttemptError::Next(timed_out(shared, idx, "answer"))),
        Ok(Err(e)) => return Err(next(format!("connection: {e}"))),
        Ok(Ok(())) => {}
    }
    let req = request(ep, path, body).map_err(AttemptError::Final)?;
    bump(&shared.counters.round_trips);
    let resp: Response<Incoming> = match timeout_at(deadline, sender.send_request(req)).await {
        Err(_) => return Err(AttemptError::Next(timed_out(shared, idx, "answer"))),
        Ok(Err(e)) => return Err(next(format!("request: {e}"))),
        Ok(Ok(r)) => r,
    };
    let (parts, incoming) = resp.into_parts();
    let bytes = match timeout_at(deadline, incoming.collect()).await {
        Err(_) => return Err(AttemptError::Next(timed_out(shared, idx, "answer"))),
        Ok(Err(e)) => return Err(next(format!("reading the answer: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    let protocol = |reason: String| {
        AttemptError::Final(EtcdError::Protocol {
            endpoint: ep.authority.clone(),
            reason,
        })
    };
    // A streaming call's answer is one JSON object per line; unary ones are a single object.
    let first = bytes
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or(&[]);
    let value: Value = serde_json::from_slice(first).map_err(|e| {
        protocol(format!(
            "HTTP {}: not JSON ({e}): {}",
            parts.status.as_u16(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })?;
    if let Some(err) = status_error(parts.status, &value) {
        let (http, code, message) = err;
        let e = EtcdError::Status {
            endpoint: ep.authority.clone(),
            http,
            code,
            message,
        };
        return Err(if code == GRPC_UNAVAILABLE {
            AttemptError::Next(e)
        } else {
            AttemptError::Final(e)
        });
    }
    Ok(value)
}

/// The error in an answer: a non-200 status with `{"error","message","code"}`, or a streaming
/// call's `{"error":{"grpc_code","http_code","message"}}` (sent with status 200).
fn status_error(status: StatusCode, v: &Value) -> Option<(u16, i32, String)> {
    if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        let code = e.get("grpc_code").and_then(Value::as_i64).unwrap_or(2) as i32;
        let http = e
            .get("http_code")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(status.as_u16())) as u16;
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return Some((http, code, message));
    }
    if status == StatusCode::OK {
        return None;
    }
    let message = v
        .get("message")
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let code = v.get("code").and_then(Value::as_i64).unwrap_or(2) as i32;
    Some((status.as_u16(), code, message))
}

fn put_body(key: &[u8], value: &[u8], lease: Option<i64>) -> Value {
    let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
    if let Some(lease) = lease {
        body["lease"] = Value::String(lease.to_string());
    }
    body
}

/// etcd's range end for "every key starting with `prefix`": the prefix with its last byte
/// that is not 0xff incremented (and what follows dropped); `\0` (no end) if there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An empty key means "from the first key" only as `\0` with a range end.
fn key_or_zero(prefix: &[u8]) -> &[u8] {
    if prefix.is_empty() {
        &[0]
    } else {
        prefix
    }
}

/// An int64 field: a JSON string (proto3 JSON), a number, or absent (0).
fn int(v: &Value, field: &str) -> Result<i64, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("field {field}: {s:?} is not an integer")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("field {field}: {n} is not an int64")),
        Some(other) => Err(format!("field {field}: unexpected {other}")),
    }
}

fn bytes_field(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => B64
            .decode(s)
            .map_err(|e| format!("field {field}: bad base64: {e}")),
        Some(other) => Err(format!("field {field}: unexpected {other}")),
    }
}

fn header_revision(v: &Value) -> Result<i64, String> {
    let header = v
        .get("header")
        .ok_or_else(|| "answer without a header".to_string())?;
    int(header, "revision")
}

fn decode_kv(v: &Value) -> Result<KeyValue, String> {
    Ok(KeyValue {
        key: bytes_field(v, "key")?,
        value: bytes_field(v, "value")?,
        create_revision: int(v, "create_revision")?,
        mod_revision: int(v, "mod_revision")?,
        version: int(v, "version")?,
        lease: int(v, "lease")?,
    })
}

fn decode_kvs(v: &Value) -> Result<Vec<KeyValue>, String> {
    match v.get("kvs") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(decode_kv).collect(),
        Some(other) => Err(format!("kvs: unexpected {other}")),
    }
}

fn decode_range(v: Value) -> Result<RangeResult, String> {
    Ok(RangeResult {
        revision: header_revision(&v)?,
        kvs: decode_kvs(&v)?,
    })
}

fn decode_txn(v: &Value, fenced: bool) -> Result<CasOutcome, String> {
    let revision = header_revision(v)?;
    if v.get("succeeded").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(CasOutcome::Succeeded { revision });
    }
    let responses = match v.get("responses") {
        Some(Value::Array(a)) => a.as_slice(),
        _ => &[],
    };
    let mut ranges = responses.iter().map(|r| {
        r.get("response_range")
            .ok_or_else(|| "failed txn without its range".to_string())
            .and_then(decode_kvs)
            .map(|kvs| kvs.into_iter().next())
    });
    let current = ranges
        .next()
        .ok_or_else(|| "failed txn without its range".to_string())??;
    let fence_holder = if fenced {
        ranges
            .next()
            .ok_or_else(|| "failed txn without the fence key's range".to_string())??
    } else {
        None
    };
    Ok(CasOutcome::Failed {
        revision,
        current,
        fence_holder,
    })
}

fn decode_event(v: &Value) -> Result<WatchEvent, String> {
    let kind = match v.get("type").and_then(Value::as_str) {
        None | Some("PUT") => EventKind::Put,
        Some("DELETE") => EventKind::Delete,
        Some(other) => return Err(format!("unknown event type {other:?}")),
    };
    let kv = decode_kv(v.get("kv").ok_or_else(|| "event without kv".to_string())?)?;
    let prev_kv = v.get("prev_kv").map(decode_kv).transpose()?;
    Ok(WatchEvent { kind, kv, prev_kv })
}

/// How one watch stream ended.
enum WatchEnd {
    /// Broken: reconnect.
    Broken(EtcdError),
    /// Compacted past our revision: report and stop.
    Compacted(i64),
    /// Nobody reads the messages any more.
    Closed,
}

async fn run_watch(
    shared: Arc<Shared>,
    prefix: Vec<u8>,
    start_revision: i64,
    tx: mpsc::Sender<WatchMessage>,
) {
    let n = shared.endpoints.len();
    let mut idx = shared.preferred.load(Ordering::Relaxed) % n;
    let mut next_revision = start_revision;
    let mut backoff = WATCH_BACKOFF_MIN;
    loop {
        let mut created = false;
        let end = watch_once(&shared, idx, &prefix, &mut next_revision, &mut created, &tx).await;
        match end {
            WatchEnd::Closed => return,
            WatchEnd::Compacted(compact_revision) => {
                bump(&shared.counters.watch_compacted);
                let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                return;
            }
            WatchEnd::Broken(error) => {
                bump(&shared.counters.watch_reconnects);
                tracing::warn!("etcd watch: {error}; resuming at revision {next_revision}");
                let msg = WatchMessage::Reconnecting {
                    error,
                    resume_from: next_revision,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                if created {
                    backoff = WATCH_BACKOFF_MIN;
                }
                idx = (idx + 1) % n;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
            }
        }
    }
}

/// One watch stream on endpoint `idx`, from `*next_revision`, which it advances past every
/// event delivered.
async fn watch_once(
    shared: &Shared,
    idx: usize,
    prefix: &[u8],
    next_revision: &mut i64,
    created: &mut bool,
    tx: &mpsc::Sender<WatchMessage>,
) -> WatchEnd {
    let deadline = Instant::now() + shared.timeout;
    let mut sender = match connect(shared, idx, deadline).await {
        Ok(s) => s,
        Err(e) => return WatchEnd::Broken(e),
    };
    let mut create = json!({
        "key": B64.encode(key_or_zero(prefix)),
        "range_end": B64.encode(prefix_end(prefix)),
        "prev_kv": true,
    });
    if *next_revision > 0 {
        create["start_revision"] = Value::String(next_revision.to_string());
    }
    let body = Bytes::from(json!({ "create_request": create }).to_string());
    let req = match request(&shared.endpoints[idx], "watch", body) {
        Ok(r) => r,
        Err(e) => return WatchEnd::Broken(e),
    };
    bump(&shared.counters.round_trips);
    let resp = match timeout_at(deadline, sender.send_request(req)).await {
        Err(_) => return WatchEnd::Broken(timed_out(shared, idx, "watch answer")),
        Ok(Err(e)) => return WatchEnd::Broken(unreachable(shared, idx, format!("watch: {e}"))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Until the watch is created its answer is bounded by the timeout; then events may
        // be minutes apart.
        let frame = if *created {
            body.frame().await
        } else {
            match timeout_at(deadline, body.frame()).await {
                Ok(f) => f,
                Err(_) => return WatchEnd::Broken(timed_out(shared, idx, "watch creation")),
            }
        };
        let data = match frame {
            None => {
                return WatchEnd::Broken(unreachable(shared, idx, "watch stream ended"));
            }
            Some(Err(e)) => {
                return WatchEnd::Broken(unreachable(shared, idx, format!("watch stream: {e}")))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let protocol = |reason: String| {
                bump(&shared.counters.protocol_errors);
                WatchEnd::Broken(EtcdError::Protocol {
                    endpoint: shared.endpoints[idx].authority.clone(),
                    reason,
                })
            };
            let v: Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => return protocol(format!("watch message is not JSON: {e}")),
            };
            if let Some((http, code, message)) = status_error(status, &v) {
                return WatchEnd::Broken(EtcdError::Status {
                    endpoint: shared.endpoints[idx].authority.clone(),
                    http,
                    code,
                    message,
                });
            }
            let Some(result) = v.get("result") else {
                return protocol("watch message without a result".to_string());
            };
            match handle_watch_result(result, next_revision, created) {
                Err(reason) => return protocol(reason),
                Ok(WatchStep::Nothing) => {}
                Ok(WatchStep::Compacted(c)) => return WatchEnd::Compacted(c),
                Ok(WatchStep::Canceled(reason)) => {
                    return WatchEnd::Broken(unreachable(
                        shared,
                        idx,
                        format!("watch canceled by etcd: {reason}"),
                    ))
                }
                Ok(WatchStep::Events(revision, events)) => {
                    shared
                        .counters
                        .watch_events
                        .fetch_add(events.len() as u64, Ordering::Relaxed);
                    if tx
                        .send(WatchMessage::Events { revision, events })
                        .await
                        .is_err()
                    {
                        return WatchEnd::Closed;
                    }
                }
            }
        }
    }
}

/// What one watch response means.
enum WatchStep {
    Nothing,
    Events(i64, Vec<WatchEvent>),
    Compacted(i64),
    Canceled(String),
}

fn handle_watch_result(
    result: &Value,
    next_revision: &mut i64,
    created: &mut bool,
) -> Result<WatchStep, String> {
    if result.get("created").and_then(Value::as_bool) == Some(true) {
        *created = true;
    }
    let compact = int(result, "compact_revision")?;
    if compact > 0 {
        return Ok(WatchStep::Compacted(compact));
    }
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        let reason = result
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Ok(WatchStep::Canceled(reason.to_string()));
    }
    let events = match result.get("events") {
        None | Some(Value::Null) => return Ok(WatchStep::Nothing),
        Some(Value::Array(a)) => a.iter().map(decode_event).collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(format!("events: unexpected {other}")),
    };
    if events.is_empty() {
        return Ok(WatchStep::Nothing);
    }
    let revision = header_revision(result)?;
    if let Some(last) = events.iter().map(|e| e.kv.mod_revision).max() {
        *next_revision = (*next_revision).max(last + 1);
    }
    Ok(WatchStep::Events(revision, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_its_futures_can_move_to_tasks() {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<EtcdClient>();
        shared::<Watch>();
        let c = EtcdClient::new(vec!["127.0.0.1:1".into()], Duration::from_secs(1)).unwrap();
        send(&c.put(b"k", b"v", None));
        send(&c.lease_keepalive(1));
        let cas = Cas {
            key: b"k",
            expect_mod_revision: 0,
            value: b"v",
            lease: None,
            fence: Some((b"m", 1)),
        };
        send(&c.txn_cas(cas));
    }

    #[test]
    fn prefix_ends_skip_trailing_ff() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn endpoints_parse_with_or_without_scheme() {
        assert_eq!(
            parse_endpoint("http://10.8.0.1:2379").ok(),
            "10.8.0.1:2379".parse().ok()
        );
        assert_eq!(
            parse_endpoint("127.0.0.1:2379/").ok(),
            "127.0.0.1:2379".parse().ok()
        );
        assert!(parse_endpoint("https://10.8.0.1:2379").is_err());
        assert!(parse_endpoint("http://etcd:2379").is_err());
        assert!(EtcdClient::new(Vec::new(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn int64_fields_are_strings_numbers_or_absent() {
        let v = json!({ "a": "12", "b": 7, "c": "x" });
        assert_eq!(int(&v, "a"), Ok(12));
        assert_eq!(int(&v, "b"), Ok(7));
        assert_eq!(int(&v, "missing"), Ok(0));
        assert!(int(&v, "c").is_err());
    }

    #[test]
    fn failed_txn_returns_current_values() {
        // As etcd 3.4.23's gateway sends it: no `succeeded`, the failure ranges' answers.
        let v = json!({
            "header": { "revision": "9" },
            "responses": [
                { "response_range": { "header": {}, "kvs": [{ "key": "YQ==", "value": "dg==",
                  "create_revision": "3", "mod_revision": "8", "version": "2" }], "count": "1" } },
                { "response_range": { "header": {} } }
            ]
        });
        let out = decode_txn(&v, true).unwrap_or_else(|e| panic!("{e}"));
        let CasOutcome::Failed {
            revision,
            current: Some(kv),
            fence_holder: None,
        } = out
        else {
            panic!("unexpected {out:?}");
        };
        assert_eq!(
            (revision, kv.key, kv.value, kv.mod_revision),
            (9, b"a".to_vec(), b"v".to_vec(), 8)
        );
        let ok = json!({ "header": { "revision": "10" }, "succeeded": true });
        assert_eq!(
            decode_txn(&ok, false),
            Ok(CasOutcome::Succeeded { revision: 10 })
        );
    }

    #[test]
    fn errors_in_streams_and_statuses_are_read() {
        let stream = json!({ "error": { "grpc_code": 5, "http_code": 404, "message": "gone" } });
        assert_eq!(
            status_error(StatusCode::OK, &stream),
            Some((404, 5, "gone".to_string()))
        );
        let unary = json!({ "error": "etcdserver: request timed out", "code": 14,
                            "message": "etcdserver: request timed out" });
        assert_eq!(
            status_error(StatusCode::SERVICE_UNAVAILABLE, &unary),
            Some((503, 14, "etcdserver: request timed out".to_string()))
        );
        assert_eq!(status_error(StatusCode::OK, &json!({ "header": {} })), None);
    }

    #[test]
    fn watch_results_advance_the_resume_revision() {
        let mut next = 5;
        let mut created = false;
        let r = json!({ "header": { "revision": "7" }, "created": true });
        assert!(matches!(
            handle_watch_result(&r, &mut next, &mut created),
            Ok(WatchStep::Nothing)
        ));
        assert!(created);
        let r = json!({ "header": { "revision": "7" }, "events": [
            { "kv": { "key": "YQ==", "value": "MQ==", "mod_revision": "6" } },
            { "type": "DELETE", "kv": { "key": "Yg==", "mod_revision": "7" },
              "prev_kv": { "key": "Yg==", "value": "Mg==", "mod_revision": "4" } }
        ]});
        let Ok(WatchStep::Events(7, events)) = handle_watch_result(&r, &mut next, &mut created)
        else {
            panic!("events expected");
        };
        assert_eq!(next, 8);
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(events[1].kind, EventKind::Delete);
        assert_eq!(
            events[1].prev_kv.as_ref().map(|k| k.value.clone()),
            Some(b"2".to_vec())
        );
        let r = json!({ "header": {}, "canceled": true, "compact_revision": "12" });
        assert!(matches!(
            handle_watch_result(&r, &mut next, &mut created),
            Ok(WatchStep::Compacted(12))
        ));
    }
}
