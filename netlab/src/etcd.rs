//! Real etcd members (Debian's `etcd-server`, 3.4) inside lab namespaces, for the router
//! cluster's tests (issue 16).
//!
//! Each member listens on `IP:2379` (clients) and `IP:2380` (peers) in its namespace; several
//! members may share one namespace on different addresses, e.g. 127.0.0.1–3 on its loopback.
//! Data dirs live in [`Lab::dir`]; the processes are the lab's, so teardown kills them. The
//! flags are those of the issue 16 design note: `--unsafe-no-fsync` (tests only: a SIGKILLed
//! member's writes are still in the page cache) and, with more than one member, 50 ms
//! heartbeats and a 500 ms election timeout so a killed leader is replaced in about 1 s.
//! Readiness is `GET /health` answering `"health":"true"` (a member of a cluster without a
//! leader answers false), polled every 10 ms.

use crate::{Lab, LabError, Ns, ProcHandle};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's `etcd-server` installs the daemon.
pub const ETCD: &str = "/usr/bin/etcd";
/// The client port every member listens on (at its own address).
pub const CLIENT_PORT: u16 = 2379;
/// The peer port every member listens on (at its own address).
pub const PEER_PORT: u16 = 2380;
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(10);

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// Fails with a clear message unless [`ETCD`] is installed.
pub fn require_etcd() -> Result<(), LabError> {
    if Path::new(ETCD).is_file() {
        Ok(())
    } else {
        Err(LabError::NotInstalled {
            program: ETCD.to_string(),
            hint: "the etcd tests need Debian's etcd-server: run scripts/setup-debian.sh \
                   (apt-get install etcd-server etcd-client)"
                .to_string(),
        })
    }
}

/// One member: where it runs and, while it runs, its process.
#[derive(Debug)]
pub struct EtcdMember {
    /// Its etcd name (`e1`, `e2`, ...).
    pub name: String,
    /// The namespace it runs in.
    pub ns: Ns,
    /// Its address in that namespace (client and peer URLs).
    pub ip: Ipv4Addr,
    /// The process while it runs (`None` after [`EtcdCluster::kill`]).
    pub handle: Option<ProcHandle>,
    args: Vec<String>,
}

impl EtcdMember {
    /// `http://IP:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CLIENT_PORT))
    }
}

/// A cluster of one or more members started together.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts one member per `(namespace, address)` at once (a new cluster; data dirs
    /// `<lab dir>/etcd-eN`), without waiting: see [`EtcdCluster::wait_healthy`].
    pub fn start(lab: &mut Lab, at: &[(Ns, Ipv4Addr)]) -> Result<EtcdCluster, LabError> {
        require_etcd()?;
        let peer_url = |ip: &Ipv4Addr| format!("http://{ip}:{PEER_PORT}");
        let initial_cluster = at
            .iter()
            .enumerate()
            .map(|(i, (_, ip))| format!("e{}={}", i + 1, peer_url(ip)))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "{}-etcd{}",
            lab.prefix(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            members: Vec::new(),
        };
        for (i, (ns, ip)) in at.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let data_dir = lab.dir().join(format!("{token}-{name}"));
            let client_url = format!("http://{ip}:{CLIENT_PORT}");
            let mut args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url(ip),
                "--initial-advertise-peer-urls",
                &peer_url(ip),
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-token",
                &token,
                "--initial-cluster-state",
                "new",
                "--unsafe-no-fsync",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if at.len() > 1 {
                args.extend(
                    ["--heartbeat-interval", "50", "--election-timeout", "500"]
                        .iter()
                        .map(|s| s.to_string()),
                );
            }
            let mut member = EtcdMember {
                name,
                ns: ns.clone(),
                ip: *ip,
                handle: None,
                args,
            };
            member.handle = Some(spawn(lab, &member)?);
            cluster.members.push(member);
        }
        Ok(cluster)
    }

    /// [`EtcdCluster::start`], then [`EtcdCluster::wait_healthy`].
    pub fn start_healthy(
        lab: &mut Lab,
        at: &[(Ns, Ipv4Addr)],
        timeout: Duration,
    ) -> Result<EtcdCluster, LabError> {
        let cluster = EtcdCluster::start(lab, at)?;
        cluster.wait_healthy(lab, timeout)?;
        Ok(cluster)
    }

    /// The members, in the order given to [`EtcdCluster::start`].
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Every member's client URL (`http://IP:2379`), running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::client_url).collect()
    }

    /// Waits until every running member answers `/health` with true (polled every 10 ms);
    /// the error has the last answer and the member's log.
    pub fn wait_healthy(&self, lab: &Lab, timeout: Duration) -> Result<(), LabError> {
        let start = Instant::now();
        let deadline = start + timeout;
        for m in self.members.iter().filter(|m| m.handle.is_some()) {
            let addr = m.client_addr();
            let last = m.ns.within(|| loop {
                let last = match http(addr, "GET", "/health", "") {
                    Ok(body) if body.contains("\"health\":\"true\"") => return None,
                    Ok(body) => body,
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Some(last);
                }
                std::thread::sleep(POLL);
            })?;
            if let Some(last) = last {
                let log = m.handle.as_ref().map(|h| lab.logs(h)).unwrap_or_default();
                return Err(LabError::NotReady {
                    what: format!("etcd member {} at {}", m.name, m.client_url()),
                    waited: start.elapsed(),
                    detail: format!("last /health: {last}\n--- its log ---\n{log}"),
                });
            }
        }
        Ok(())
    }

    /// SIGKILLs member `i` (a crash: its sockets close at once) and reaps it.
    pub fn kill(&mut self, lab: &mut Lab, i: usize) -> Result<(), LabError> {
        if let Some(h) = self.member_mut(i)?.handle.take() {
            lab.kill(&h)?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data dir (after [`EtcdCluster::kill`]); it rejoins
    /// without waiting.
    pub fn restart(&mut self, lab: &mut Lab, i: usize) -> Result<(), LabError> {
        let m = self.member_mut(i)?;
        if m.handle.is_none() {
            let h = spawn(lab, m)?;
            self.members[i].handle = Some(h);
        }
        Ok(())
    }

    /// The index of the current leader, as the running members report it
    /// (`/v3/maintenance/status`); `None` if none of them knows one.
    pub fn leader(&self) -> Option<usize> {
        for m in self.members.iter().filter(|m| m.handle.is_some()) {
            let addr = m.client_addr();
            let Ok(Ok(body)) =
                m.ns.within(|| http(addr, "POST", "/v3/maintenance/status", "{}"))
            else {
                continue;
            };
            let (Some(me), Some(leader)) =
                (json_str(&body, "member_id"), json_str(&body, "leader"))
            else {
                continue;
            };
            if leader == "0" {
                continue;
            }
            if me == leader {
                return self.members.iter().position(|x| x.name == m.name);
            }
        }
        None
    }

    fn member_mut(&mut self, i: usize) -> Result<&mut EtcdMember, LabError> {
        let n = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| LabError::InvalidName {
                what: "etcd member index",
                name: i.to_string(),
                reason: format!("the cluster has {n} members"),
            })
    }
}

fn spawn(lab: &mut Lab, m: &EtcdMember) -> Result<ProcHandle, LabError> {
    let args: Vec<&str> = m.args.iter().map(String::as_str).collect();
    lab.spawn(&m.ns, ETCD, &args)
}

/// One HTTP/1.0 request (the server closes the connection after the answer); the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    let timeout = Duration::from_millis(500);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The string value of the first `"field":"..."` in `json` (enough for etcd's status ids).
fn json_str<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let key = format!("\"{field}\":\"");
    let start = json.find(&key)? + key.len();
    let len = json.get(start..)?.find('"')?;
    json.get(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ids_are_found() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"42","revision":"3"},"leader":"42"}"#;
        assert_eq!(json_str(body, "member_id"), Some("42"));
        assert_eq!(json_str(body, "leader"), Some("42"));
        assert_eq!(json_str(body, "raftTerm"), None);
    }
}
