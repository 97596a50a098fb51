//! The status socket: a client sends one line, `status`, and gets one line of JSON back
//! (routers, designated cache, assignment sent, GRE and bypass counters).
//!
//! Each connection is served in its own task with a 2 s limit on the request, so a slow client
//! never holds up the agent; the answer itself is built by the agent's loop (through
//! [`StatusRequest`]), which owns the state.

use crate::bypass::Bypass;
use crate::decap::GreCounters;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use wccp::cache::CacheEngine;

/// Longest request line read from a client, in octets.
const MAX_REQUEST: u64 = 1024;

/// A `status` request from a socket client, answered through the oneshot.
pub type StatusRequest = oneshot::Sender<String>;

/// TRANSMIT_T and the scales as status shows them (swrouter's status uses the same keys).
fn timers_json(t: wccp::timer::TimerConfig) -> serde_json::Value {
    serde_json::json!({
        "transmit_ms": u64::try_from(t.transmit_t.as_millis()).unwrap_or(u64::MAX),
        "timeout_scale": t.timeout_scale,
        "ra_timer_scale": t.ra_timer_scale,
    })
}

/// The agent's status as JSON: the engine's view of every service (`None` in `--gre-only`
/// mode), the GRE termination counters and the bypass.
pub fn status_json(
    engine: Option<&CacheEngine>,
    address: Option<Ipv4Addr>,
    tun: &str,
    gre: &GreCounters,
    bypass: &Bypass,
) -> serde_json::Value {
    let now = Instant::now();
    let services: Vec<serde_json::Value> = engine
        .map(|e| e.services())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.service.service_id,
                "kind": format!("{:?}", s.service.service_type).to_lowercase(),
                "security": format!("{:?}", s.security).to_lowercase(),
                "view_change_number": s.view_change_number,
                "caches": s.caches.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "designated_cache": s.designated_cache.map(|c| c.to_string()),
                "designated": s.designated,
                "sent_key": s.sent_key.map(|k| format!("{}/{}", k.cache_ip, k.change_number)),
                "sent_shares": s.sent_shares.iter()
                    .map(|(c, n)| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
                "routers": s.routers.iter().map(|r| serde_json::json!({
                    "address": r.address.to_string(),
                    "alive": r.alive,
                    "router_id": r.router_id.map(|a| a.to_string()),
                    "usable_here": r.usable_here,
                    "incompatible": r.incompatible,
                    "methods": r.methods.map(|m| format!("{:?}/{:?}/{:?}",
                        m.forwarding, m.packet_return, m.assignment).to_lowercase()),
                    "view_caches": r.view_caches.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                    "timers": r.timers.map(timers_json),
                    "last_heard_secs": r.last_heard.map(|t| now.saturating_duration_since(t).as_secs()),
                })).collect::<Vec<_>>(),
                "timers": timers_json(s.timers),
                "drops": s.counters.drops.iter()
                    .map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    serde_json::json!({
        "address": address.map(|a| a.to_string()),
        "gre_only": engine.is_none(),
        "tun": tun,
        "services": services,
        "gre": {
            "decapsulated": gre.decapsulated,
            "bytes": gre.bytes,
            "dropped": gre.dropped,
        },
        "bypass": {
            "prefixes": bypass.prefixes().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "rewrite": bypass.rewrites().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "copy": bypass.copy_name(),
            "bypassed": {
                "gre": bypass.counters.gre,
                "l2": bypass.counters.l2,
                "rewritten": bypass.counters.rewritten,
                "copied": bypass.counters.copied,
            },
            "errors": bypass.counters.errors,
        },
    })
}

/// Accepts status connections: each sends one line (`status`) and gets one JSON line back.
pub async fn serve_status(listener: UnixListener, tx: mpsc::Sender<StatusRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            // A request is one short word; a client that sends more is cut off, not buffered.
            let mut rd = BufReader::new(rd).take(MAX_REQUEST);
            let read = tokio::time::timeout(Duration::from_secs(2), rd.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let answer = if line.trim() == "status" {
                let (otx, orx) = oneshot::channel();
                if tx.send(otx).await.is_err() {
                    return;
                }
                orx.await.unwrap_or_default()
            } else {
                serde_json::json!({"error": format!("unknown request {:?}", line.trim())})
                    .to_string()
            };
            let _ = wr.write_all(answer.as_bytes()).await;
            let _ = wr.write_all(b"\n").await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn gre_only_status_has_every_section() {
        let mut gre = GreCounters {
            decapsulated: 3,
            bytes: 180,
            ..GreCounters::default()
        };
        gre.drop("not-for-us");
        let bypass = Bypass::new(Vec::new(), false).unwrap();
        let v = status_json(None, None, "wccp0", &gre, &bypass);
        assert_eq!(v["gre_only"], true);
        assert_eq!(v["address"], serde_json::Value::Null);
        assert_eq!(v["tun"], "wccp0");
        assert_eq!(v["services"], serde_json::json!([]));
        assert_eq!(v["gre"]["decapsulated"], 3);
        assert_eq!(v["gre"]["bytes"], 180);
        assert_eq!(v["gre"]["dropped"]["not-for-us"], 1);
        assert_eq!(v["bypass"]["prefixes"], serde_json::json!([]));
        assert_eq!(v["bypass"]["bypassed"]["gre"], 0);
        assert_eq!(v["bypass"]["bypassed"]["l2"], 0);
        assert_eq!(v["bypass"]["errors"], serde_json::json!({}));
    }
}
