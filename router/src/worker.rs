//! Worker threads: each polls its own socket on every interface, runs bursts through its own
//! pipeline, and transmits. Workers share nothing but read-mostly snapshots and the neighbour
//! table; with `workers > 1` the kernel spreads flows over them (PACKET_FANOUT_HASH).

use crate::io::Port;
use crate::outbox::{Outbox, OutboxReceiver};
use crate::pipeline::counters::WorkerCounters;
use crate::pipeline::drop::DropReason;
use crate::pipeline::packet::Pool;
use crate::pipeline::{build_arp, Pipeline, StageKind};
use crate::tables::neighbours::Neighbours;
use crate::tables::{IfId, Tables};
use crate::wire::ethernet::MacAddr;
use arc_swap::ArcSwap;
use conf::IoBackend;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames read from one socket before the burst is processed.
pub const BURST: usize = 32;
/// Buffers pre-allocated per worker.
const POOL_BUFFERS: usize = 512;
/// How often worker 0 ages the neighbour table.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// State shared by the workers and the control plane.
pub struct Shared {
    /// Interfaces and routes; replaced as a whole on reload.
    pub tables: ArcSwap<Tables>,
    /// ARP bindings.
    pub neighbours: Neighbours,
    /// Set to stop the workers.
    pub stop: AtomicBool,
    /// One entry per worker.
    pub counters: Vec<Arc<WorkerCounters>>,
    /// Where the control plane sends its own datagrams (worker 0 transmits them).
    pub outbox: Outbox,
    /// The packet trace (`swrouter trace`): armed by the control plane, marked and recorded
    /// by the workers.
    pub trace: Arc<crate::pipeline::trace::Tracer>,
    /// Where state owners publish records for the HA peer (`[ha.sync]`; disabled without it).
    pub sync: crate::statesync::SyncFeed,
}

/// Opens every worker's sockets (so errors surface before anything runs), then starts the threads.
pub fn start(shared: Arc<Shared>, outbox: OutboxReceiver) -> std::io::Result<Vec<JoinHandle<()>>> {
    let tables = shared.tables.load_full();
    let workers = shared.counters.len();
    let mut all_ports = Vec::new();
    let mut fell_back: Vec<IfId> = Vec::new();
    for _ in 0..workers {
        let (ports, fallbacks) = open_ports(&tables, workers)?;
        for (iface, backend, why) in fallbacks {
            if !fell_back.contains(&iface) {
                let name = &tables.ifaces[usize::from(iface)].name;
                tracing::warn!(interface = %name, error = %why, "the packet ring could not be set up: this interface runs on the {backend} backend");
                fell_back.push(iface);
            }
        }
        all_ports.push(ports);
    }
    if !fell_back.is_empty() {
        // Status shows what each interface runs, not what was asked for.
        let mut t = (*tables).clone();
        for i in t.ifaces.iter_mut().filter(|i| fell_back.contains(&i.id)) {
            i.backend = IoBackend::Pnet;
        }
        shared.tables.store(Arc::new(t));
    }
    let mut handles = Vec::new();
    let mut outbox = Some(outbox);
    for (id, ports) in all_ports.into_iter().enumerate() {
        let shared = shared.clone();
        let outbox = outbox.take();
        let h = std::thread::Builder::new()
            .name(format!("swrouter-w{id}"))
            .spawn(move || supervise(id, ports, outbox, &shared))?;
        handles.push(h);
    }
    Ok(handles)
}

/// One worker's sockets, one per interface, with the interfaces that fell back to pnet.
type Opened_ = (Vec<Port>, Vec<(IfId, IoBackend, std::io::Error)>);

/// Opens one worker's socket on every interface.
fn open_ports(tables: &Tables, workers: usize) -> std::io::Result<Opened_> {
    let mut ports = Vec::new();
    let mut fallbacks = Vec::new();
    for iface in &tables.ifaces {
        // Fanout group ids are per network namespace and device; derive them from our pid so
        // two routers in one namespace never join each other's group.
        let group = (workers > 1).then(|| {
            (std::process::id() as u16)
                .wrapping_mul(31)
                .wrapping_add(iface.id)
        });
        let (port, running) = open_with_fallback(iface.backend, |b| Port::open(iface, b, group))
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("opening a packet socket on {}: {e}", iface.name),
                )
            })?;
        if let Some((backend, why)) = running.fallback {
            fallbacks.push((iface.id, backend, why));
        }
        ports.push(port);
    }
    Ok((ports, fallbacks))
}

/// How a worker's run ended.
enum RunEnd {
    /// The router is stopping.
    Stopped,
    /// The NAT watchdog declared it failed (or a test hook stopped it): restart it.
    Fenced,
}

/// Runs worker `id` and restarts it when it dies (a panic, or fenced by the NAT watchdog):
/// its sockets are reopened, and with NAT it asks the switch processor for a VID again and
/// becomes a backup (seed 000, claims 10 and 15).
fn supervise(id: usize, ports: Vec<Port>, mut outbox: Option<OutboxReceiver>, shared: &Shared) {
    let mut ports = Some(ports);
    loop {
        let first = ports.take();
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ports = match first {
                Some(p) => p,
                None => open_ports(&shared.tables.load(), shared.counters.len())?.0,
            };
            Ok::<_, std::io::Error>(run(id, ports, &mut outbox, shared))
        }));
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        match ended {
            Ok(Ok(RunEnd::Stopped)) => return,
            Ok(Ok(RunEnd::Fenced)) => {
                tracing::error!(
                    worker = id,
                    "worker stopped by the NAT watchdog; restarting it"
                )
            }
            Ok(Err(e)) => {
                tracing::error!(worker = id, error = %e, "worker could not reopen its sockets; retrying")
            }
            Err(_) => tracing::error!(worker = id, "worker panicked; restarting it"),
        }
        let nat = shared.tables.load().nat.clone();
        if let Some(n) = nat {
            if !n.rt.rejoin(id as u16, &shared.stop) {
                return;
            }
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// What [`open_with_fallback`] opened.
#[derive(Debug)]
struct Opened {
    /// The backend it fell back to and why the wanted one failed; `None` when it got the
    /// wanted one.
    fallback: Option<(IoBackend, std::io::Error)>,
}

/// Opens `wanted` with `open`; when the packet ring cannot be set up, opens `pnet` instead
/// (the portable backend every AF_PACKET kernel has).
fn open_with_fallback<P>(
    wanted: IoBackend,
    mut open: impl FnMut(IoBackend) -> std::io::Result<P>,
) -> std::io::Result<(P, Opened)> {
    match open(wanted) {
        Ok(p) => Ok((p, Opened { fallback: None })),
        Err(e) if wanted == IoBackend::Mmap => {
            let p = open(IoBackend::Pnet)?;
            Ok((
                p,
                Opened {
                    fallback: Some((IoBackend::Pnet, e)),
                },
            ))
        }
        Err(e) => Err(e),
    }
}

fn run(
    id: usize,
    mut ports: Vec<Port>,
    outbox: &mut Option<OutboxReceiver>,
    shared: &Shared,
) -> RunEnd {
    let counters = shared.counters[id].clone();
    let n_ifaces = ports.len();
    let mut pool = Pool::new(POOL_BUFFERS);
    let mut pipeline = Pipeline::new(id, n_ifaces, counters.clone());
    pipeline.set_tracer(shared.trace.clone());
    let mut burst = Vec::with_capacity(BURST * n_ifaces);
    let mut injected = Vec::new();
    let mut fds: Vec<RawFd> = ports.iter().map(|p| p.fd()).collect();
    // The control plane's outbox wakes this worker through its eventfd, polled after the ports.
    if let Some(o) = outbox.as_ref() {
        fds.push(o.fd());
    }
    // NAT: this worker's state; its inbox (handoffs, orders) wakes it through another eventfd.
    if let Some(plane) = shared.tables.load().nat.as_ref() {
        let nat =
            crate::natd::WorkerNat::new(id as u16, plane.rt.clone(), crate::probe::random_seed());
        fds.push(plane.rt.inboxes[id].wake.fd());
        pipeline.set_nat(nat);
    }
    // Cluster: the hold queue for packets of moving ids, allocated once.
    if let Some(c) = shared.tables.load().cluster.as_ref() {
        pipeline.reserve_cluster_hold(c.hold_limit());
    }
    let mut handed = Vec::with_capacity(crate::natd::HANDOFF_BATCH);
    let mut pollfds = Vec::with_capacity(fds.len());
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
    let mut next_ring_check = Instant::now() + HOUSEKEEPING;
    let mut probes = Vec::new();

    if id == 0 {
        // Gratuitous ARP: neighbours that cached an older MAC for our addresses update now.
        let tables = shared.tables.load();
        for iface in &tables.ifaces {
            injected.push(build_arp(&mut pool, iface, iface.addr, MacAddr::BROADCAST));
        }
        for p in &mut injected {
            p.meta.stage = StageKind::Tx as u8;
        }
        let neigh = shared.neighbours.load();
        pipeline.run(
            &mut injected,
            &tables,
            &neigh,
            &shared.neighbours,
            &mut pool,
            Instant::now(),
        );
        flush(&mut pipeline, &mut ports, &mut pool, &counters);
        tracing::info!(
            interfaces = tables.ifaces.len(),
            "sent gratuitous ARP on every interface"
        );
    }

    while !shared.stop.load(Ordering::Relaxed) {
        let handoffs_waiting = pipeline.nat_mut().is_some_and(|n| n.has_handoffs());
        let timeout = if handoffs_waiting {
            0
        } else if pipeline.has_pending() {
            10
        } else {
            100
        };
        if let Err(e) = crate::sys::poll_readable(&fds, timeout, &mut pollfds) {
            tracing::error!(worker = id, error = %e, "poll failed");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let now = Instant::now();
        if let Some(n) = pipeline.nat_mut() {
            if !n.begin_loop(now) {
                return RunEnd::Fenced;
            }
        }
        let tables = shared.tables.load();
        let neigh = shared.neighbours.load();
        let mut errored = false;
        for (i, pfd) in pollfds.iter().enumerate().take(ports.len()) {
            if pfd.revents & libc::POLLIN != 0 {
                let port = &mut ports[i];
                let pc = &counters.ports[port.if_id as usize];
                port.recv_burst(&mut pool, &mut burst, BURST, pc);
            } else if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                counters.ports[i].rx_errors.inc();
                errored = true;
            }
        }
        if !burst.is_empty() {
            counters.bursts.inc();
            pipeline.run(
                &mut burst,
                &tables,
                &neigh,
                &shared.neighbours,
                &mut pool,
                now,
            );
        }
        if let Some(n) = pipeline.nat_mut() {
            n.take_handoffs(&mut handed, crate::natd::HANDOFF_BATCH);
            if !handed.is_empty() {
                pipeline.run(
                    &mut handed,
                    &tables,
                    &neigh,
                    &shared.neighbours,
                    &mut pool,
                    now,
                );
            }
        }
        if let Some(o) = outbox.as_ref() {
            if pollfds
                .get(ports.len())
                .is_some_and(|p| p.revents & libc::POLLIN != 0)
            {
                o.drain_into(&mut pool, &mut injected);
                if !injected.is_empty() {
                    pipeline.run(
                        &mut injected,
                        &tables,
                        &neigh,
                        &shared.neighbours,
                        &mut pool,
                        now,
                    );
                }
            }
        }
        pipeline.poll(&tables, &neigh, &shared.neighbours, &mut pool, now);
        if now >= next_ring_check {
            next_ring_check = now + HOUSEKEEPING;
            for port in &ports {
                counters.ports[port.if_id as usize]
                    .rx_ring_full
                    .add(port.take_drops());
            }
        }
        if id == 0 && now >= next_housekeeping {
            next_housekeeping = now + HOUSEKEEPING;
            probes.clear();
            shared.neighbours.age(now, &mut probes);
            for probe in &probes {
                if let Some(iface) = tables.ifaces.get(probe.ifid as usize) {
                    let mut p = build_arp(&mut pool, iface, probe.addr, probe.mac);
                    p.meta.stage = StageKind::Tx as u8;
                    injected.push(p);
                }
            }
            if !injected.is_empty() {
                pipeline.run(
                    &mut injected,
                    &tables,
                    &neigh,
                    &shared.neighbours,
                    &mut pool,
                    now,
                );
            }
        }
        if let Some(n) = pipeline.nat_mut() {
            n.end_loop(now);
        }
        flush(&mut pipeline, &mut ports, &mut pool, &counters);
        if errored {
            // A socket in error (interface deleted or down) would make poll return at once.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    tracing::debug!(worker = id, "worker stopped");
    RunEnd::Stopped
}

/// Sends everything the pipeline queued for transmit and returns the buffers to the pool.
fn flush(pipeline: &mut Pipeline, ports: &mut [Port], pool: &mut Pool, counters: &WorkerCounters) {
    for (if_id, queue) in pipeline.tx_out.iter_mut().enumerate() {
        let Some(port) = ports.get_mut(if_id) else {
            continue;
        };
        if queue.is_empty() {
            continue;
        }
        let failed = port.send_all(queue, pool, &counters.ports[if_id]);
        counters.stages[StageKind::Tx as usize].drops[DropReason::TxError as usize].add(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_ring_that_cannot_be_set_up_falls_back_to_pnet() {
        let mut tried = Vec::new();
        let (got, opened) = open_with_fallback(IoBackend::Mmap, |b| {
            tried.push(b);
            match b {
                IoBackend::Mmap => Err(Error::new(ErrorKind::Unsupported, "no PACKET_RX_RING")),
                IoBackend::Pnet => Ok(b),
            }
        })
        .unwrap();
        assert_eq!(got, IoBackend::Pnet);
        assert_eq!(tried, vec![IoBackend::Mmap, IoBackend::Pnet]);
        let (backend, why) = opened.fallback.unwrap();
        assert_eq!(backend, IoBackend::Pnet);
        assert!(why.to_string().contains("PACKET_RX_RING"));
        // The wanted backend, when it opens, is kept; pnet failing is an error (no fallback).
        let (got, opened) = open_with_fallback(IoBackend::Mmap, Ok).unwrap();
        assert_eq!((got, opened.fallback.is_none()), (IoBackend::Mmap, true));
        let e = open_with_fallback(IoBackend::Pnet, |_| -> std::io::Result<()> {
            Err(Error::new(ErrorKind::PermissionDenied, "not root"))
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    }
}
