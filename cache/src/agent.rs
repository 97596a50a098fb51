//! The agent: one tokio current-thread loop around the sans-IO cache engine, the raw GRE socket,
//! the status socket and the signals.
//!
//! After every engine input (a WCCP datagram, its deadline) the loop drains the engine until it
//! is quiet: datagrams go out on UDP 2048, events are logged, and the return methods the bypass
//! needs are re-read. Redirected datagrams are read in bounded bursts and each goes to the TUN
//! device or, for a bypassed destination, back to its router.

use crate::bypass::Bypass;
use crate::copy::CopySink;
use crate::decap::{parse_redirected, GreCounters, Redirected};
use crate::status::{serve_status, status_json, StatusRequest};
use crate::sys;
use crate::tun::setup_tun;
use anyhow::{Context, Result};
use conf::cache::CacheConf;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tokio::net::{UdpSocket, UnixListener};
use tokio::sync::mpsc;
use wccp::cache::{CacheEngine, CacheEvent};
use wccp::engine::WCCP_PORT;

/// How often the GRE counters are logged when they changed.
const COUNTER_LOG_EVERY: Duration = Duration::from_secs(10);

/// Multicast mode: what the cache sends to the group leaves through the interface of its
/// own address (the kernel picks it from the bound source) with TTL 15 (reference §1: WCCP
/// multicast TTL ≤ 15) and does not loop back; the returned socket, bound to the group and
/// joined on that interface, receives the routers' I_SEE_YOUs to the group.
async fn join_group(udp: &UdpSocket, group: Ipv4Addr, address: Ipv4Addr) -> Result<UdpSocket> {
    udp.set_multicast_ttl_v4(MULTICAST_TTL)
        .context("setting the multicast TTL")?;
    udp.set_multicast_loop_v4(false)
        .context("turning multicast loopback off")?;
    let m = UdpSocket::bind(SocketAddrV4::new(group, WCCP_PORT))
        .await
        .with_context(|| format!("binding UDP {group}:{WCCP_PORT} (--multicast-group)"))?;
    m.join_multicast_v4(group, address).with_context(|| {
        format!("joining {group} on the interface of {address} (--multicast-group)")
    })?;
    Ok(m)
}

/// TTL of what swcache sends to the multicast group (reference §1: at most 15).
pub const MULTICAST_TTL: u32 = 15;

/// The running agent's state: the engine (if any), GRE termination and the bypass.
struct Agent {
    engine: Option<CacheEngine>,
    udp: Option<UdpSocket>,
    /// Multicast mode: the socket bound to the group (the unicast one does not receive it).
    mcast: Option<UdpSocket>,
    buf: Vec<u8>,
    gre: GreCounters,
    bypass: Bypass,
    tun_name: String,
    address: Option<Ipv4Addr>,
}

impl Agent {
    /// Sends every datagram the engine has queued and logs its events, then refreshes the
    /// negotiated return methods.
    async fn drain(&mut self, now: Instant) {
        let (Some(engine), Some(udp)) = (self.engine.as_mut(), self.udp.as_ref()) else {
            return;
        };
        while let Some(t) = engine.poll_transmit(now, &mut self.buf) {
            let payload = self.buf.get(..t.size).unwrap_or_default();
            let dst = SocketAddrV4::new(t.dst, WCCP_PORT);
            if let Err(e) = udp.send_to(payload, dst).await {
                tracing::warn!(router = %t.dst, error = %e, "sending a WCCP datagram failed");
            }
        }
        while let Some(ev) = engine.poll_event() {
            match ev {
                CacheEvent::RouterUp {
                    service,
                    router,
                    methods,
                } => tracing::info!(service, %router, ?methods, "router up: this cache is usable"),
                CacheEvent::RouterDown { service, router } => {
                    tracing::warn!(service, %router, "router down")
                }
                CacheEvent::Incompatible { service, router } => {
                    tracing::warn!(service, %router, "router offers no method this cache supports")
                }
                CacheEvent::DesignatedChanged {
                    service,
                    designated,
                } => tracing::info!(service, designated, "designated cache changed"),
                CacheEvent::AssignmentSent { service, key } => {
                    tracing::info!(service, ?key, "assignment sent")
                }
            }
        }
        self.bypass.refresh_returns(engine);
    }

    /// The status socket's answer.
    fn status_json(&self) -> serde_json::Value {
        status_json(
            self.engine.as_ref(),
            self.address,
            &self.tun_name,
            &self.gre,
            &self.bypass,
        )
    }

    /// Decapsulated, dropped, bypassed and failed returns: logged again when one changes.
    fn counter_totals(&self) -> (u64, u64, u64, u64) {
        let b = &self.bypass.counters;
        (
            self.gre.decapsulated,
            self.gre.dropped_total(),
            b.gre + b.l2,
            b.errors_total(),
        )
    }

    /// Logs every counter under `msg`.
    fn log_counters(&self, msg: &str) {
        let b = &self.bypass.counters;
        tracing::info!(
            decapsulated = self.gre.decapsulated,
            bytes = self.gre.bytes,
            dropped = ?self.gre.dropped,
            bypassed_gre = b.gre,
            bypassed_l2 = b.l2,
            returns_rewritten = b.rewritten,
            returns_copied = b.copied,
            bypass_errors = ?b.errors,
            "{msg}"
        );
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(conf: CacheConf) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(conf))
}

async fn run_async(conf: CacheConf) -> Result<()> {
    let config = conf.engine_config()?;
    let (tun, tun_name) = setup_tun(&conf.tun)?;
    let raw = sys::open_raw_ip_socket(libc::c_int::from(netwire::ipv4::PROTO_GRE))
        .context("opening the raw GRE socket (swcache needs root: CAP_NET_RAW)")?;
    let raw = sys::async_file(File::from(raw)).context("registering the raw GRE socket")?;

    let mut agent = Agent {
        engine: None,
        udp: None,
        mcast: None,
        buf: Vec::with_capacity(2048),
        gre: GreCounters::default(),
        bypass: Bypass::new(conf.bypass.clone(), config.is_some())?
            .with_rewrites(conf.return_rewrite.clone())?
            .with_copy(conf.return_copy.as_ref().map(CopySink::open).transpose()?),
        tun_name: tun_name.clone(),
        address: conf.address,
    };
    if let Some(config) = config {
        let address = config.address;
        let udp = UdpSocket::bind(SocketAddrV4::new(address, WCCP_PORT))
            .await
            .map_err(|e| {
                let fix = match e.kind() {
                    std::io::ErrorKind::AddrNotAvailable => {
                        "; --address (address in cache.conf) must be an address of this host"
                    }
                    std::io::ErrorKind::AddrInUse => {
                        "; another WCCP speaker holds the port (a Squid with wccp2_router? then run swcache --gre-only)"
                    }
                    _ => "",
                };
                anyhow::anyhow!("binding UDP {address}:{WCCP_PORT}: {e}{fix}")
            })?;
        let group = config.multicast_group;
        if let Some(group) = group {
            agent.mcast = Some(join_group(&udp, group, address).await?);
        }
        let engine = CacheEngine::new(Instant::now(), config)
            .map_err(|e| anyhow::anyhow!("WCCP engine: {e}"))?;
        tracing::info!(
            %address,
            routers = ?conf.routers,
            multicast_group = ?group,
            services = ?conf.services.iter().map(|s| s.service.service_id).collect::<Vec<_>>(),
            md5 = conf.services.iter().any(|s| s.password.is_some()),
            "WCCP cache engine started"
        );
        agent.engine = Some(engine);
        agent.udp = Some(udp);
        agent.drain(Instant::now()).await;
    } else {
        tracing::info!("GRE-only mode: no WCCP engine");
    }

    let (status_tx, mut status_rx) = mpsc::channel::<StatusRequest>(8);
    if let Some(path) = &conf.socket {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| {
                format!(
                    "binding status socket {} (--socket, socket in cache.conf; its directory must exist and be writable)",
                    path.display()
                )
            })?;
        tracing::info!(socket = %path.display(), "status socket ready");
        tokio::spawn(serve_status(listener, status_tx));
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut udp_buf = vec![0u8; 65536];
    let mut mcast_buf = vec![0u8; 65536];
    let mut gre_buf = vec![0u8; 65536];
    let mut tun_w = &tun;
    let mut logged = (0u64, 0u64, 0u64, 0u64);
    let mut log_tick = tokio::time::interval(COUNTER_LOG_EVERY);

    loop {
        let deadline = agent.engine.as_ref().and_then(|e| e.poll_timeout());
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let recv = async {
            match (agent.udp.as_ref(), agent.mcast.as_ref()) {
                (Some(u), Some(m)) => tokio::select! {
                    r = u.recv_from(&mut udp_buf) => r.map(|(n, a)| (n, a, false)),
                    r = m.recv_from(&mut mcast_buf) => r.map(|(n, a)| (n, a, true)),
                },
                (Some(u), None) => u.recv_from(&mut udp_buf).await.map(|(n, a)| (n, a, false)),
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = recv => match r {
                Ok((n, std::net::SocketAddr::V4(src), to_group)) => {
                    let now = Instant::now();
                    let data = if to_group { mcast_buf.get(..n) } else { udp_buf.get(..n) };
                    if let (Some(engine), Some(data)) = (agent.engine.as_mut(), data) {
                        engine.handle_message(now, *src.ip(), data);
                    }
                    agent.drain(now).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WCCP receive failed"),
            },
            () = sleep => {
                let now = Instant::now();
                if let Some(engine) = agent.engine.as_mut() {
                    engine.handle_timeout(now);
                }
                agent.drain(now).await;
            }
            guard = raw.readable() => {
                let mut guard = guard.context("raw GRE socket")?;
                // Drain what is queued, a bounded burst at a time.
                for _ in 0..64 {
                    let n = match guard.try_io(|f| f.get_ref().read(&mut gre_buf)) {
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "GRE receive failed");
                            break;
                        }
                        Err(_would_block) => break,
                    };
                    let pkt = gre_buf.get(..n).unwrap_or_default();
                    match parse_redirected(pkt, agent.address) {
                        Ok(r) if agent.bypass.matches(&r) => {
                            agent.bypass.return_packet(&r, raw.get_ref().as_raw_fd());
                        }
                        Ok(Redirected { inner, .. }) => match tun_w.write(inner) {
                            Ok(_) => {
                                agent.gre.decapsulated += 1;
                                agent.gre.bytes += inner.len() as u64;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "TUN write failed");
                                agent.gre.drop("tun-write-failed");
                            }
                        },
                        Err(reason) => agent.gre.drop(reason),
                    }
                }
            }
            Some(reply) = status_rx.recv() => {
                let _ = reply.send(agent.status_json().to_string());
            }
            _ = log_tick.tick() => {
                agent.bypass.refresh_routes();
                let now = agent.counter_totals();
                if now != logged {
                    logged = now;
                    agent.log_counters("GRE counters");
                }
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
        }
    }
    agent.log_counters("GRE counters at exit");
    if let Some(path) = &conf.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
