//! A cache host of the demo lab: its namespace, nftables interception, Squid and swcache.

use anyhow::Result;
use netlab::squid::Squid;
use netlab::{Lab, Ns, ProcHandle};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// A cache host: swcache joins the router and hands decapsulated packets to the TUN `wccp0`,
/// nftables DNATs them to Squid's intercept port, Squid (`visible_hostname` = `name`, which its
/// `Via:` header shows) fetches from the origin.
pub(crate) struct Cache {
    pub(crate) name: &'static str,
    pub(crate) addr: Ipv4Addr,
    ns: Ns,
    pub(crate) dir: PathBuf,
    /// Squid, under a service name of its own (it names Squid's shared-memory segments, which
    /// network namespaces do not separate); the guard removes the segments.
    squid: Option<Squid>,
    swcache: Option<ProcHandle>,
}

impl Cache {
    /// Creates the namespace `short` linked to the router's `rtr_if` on 10.0.`net`.0/24 and
    /// writes the nft rule, Squid's config and swcache's; nothing runs yet.
    pub(crate) fn new(
        lab: &mut Lab,
        rtr: &Ns,
        rtr_if: &str,
        short: &str,
        net: u8,
    ) -> Result<Cache> {
        let name = if net == 3 { "cache-a" } else { "cache-b" };
        let (addr, router) = (Ipv4Addr::new(10, 0, net, 2), Ipv4Addr::new(10, 0, net, 1));
        let ns = lab.add_ns(short)?;
        lab.link(rtr, rtr_if, &ns, "eth0")?;
        ns.add_addr("eth0", &format!("{addr}/24"))?;
        ns.add_route("default", &router.to_string())?;
        let dir = lab.dir().join(name);
        std::fs::create_dir_all(&dir)?;
        // Squid drops to its own user: let it write its logs and pid file.
        for d in [lab.dir(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
        }
        // The TUN has no address, so nft's `redirect` (which needs one) would drop: DNAT.
        let nft = format!(
            "add table ip nat\nadd chain ip nat prerouting {{ type nat hook prerouting priority -100; }}\n\
             add rule ip nat prerouting iifname \"wccp0\" ip daddr != {addr} tcp dport 80 dnat to {addr}:3129\n"
        );
        std::fs::write(dir.join("cache.nft"), nft)?;
        ns.run_ok("nft", &["-f", &dir.join("cache.nft").to_string_lossy()])?;
        // Squid's DNS stays inside the namespace: the lab has no route to the host's resolver.
        let squid_conf = format!(
            "pid_filename {d}/squid.pid\ncache_log {d}/cache.log\naccess_log {d}/access.log\n\
             cache_store_log none\ncoredump_dir {d}\ncache_mem 8 MB\nshutdown_lifetime 1 seconds\n\
             visible_hostname {name}\nhttp_port {addr}:3128\nhttp_port 3129 intercept\n\
             acl lab src 10.0.0.0/8\nhttp_access allow lab\nhttp_access deny all\ndns_nameservers 127.0.0.1\n",
            d = dir.display()
        );
        std::fs::write(dir.join("squid.conf"), squid_conf)?;
        // swcache joins the router for the standard web-cache service, with the defaults:
        // GRE forwarding and return, hash assignment, TUN wccp0.
        let cache_conf = format!(
            "# swcache on {name}\n[cache]\naddress = \"{addr}\"\n\n[wccp]\nrouters = [\"{router}\"]\n\n\
             [[wccp.service]]\nid = 0\n"
        );
        std::fs::write(dir.join("cache.conf"), cache_conf)?;
        Ok(Cache {
            name,
            addr,
            ns,
            dir,
            squid: None,
            swcache: None,
        })
    }

    pub(crate) fn start(&mut self, lab: &mut Lab, swcache: &str) -> Result<()> {
        self.squid = Some(Squid::spawn(lab, &self.ns, &self.dir.join("squid.conf"))?);
        let conf = self.dir.join("cache.conf").to_string_lossy().to_string();
        self.swcache = Some(lab.spawn(&self.ns, swcache, &["-c", &conf])?);
        Ok(())
    }

    pub(crate) fn squid_ready(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cache.log"))
            .is_ok_and(|l| l.contains("Accepting NAT intercepted"))
    }

    /// A crash: SIGKILL to Squid's process group (its port refuses at once), swcache stopped.
    pub(crate) fn crash(&mut self, lab: &mut Lab) {
        if let Some(squid) = self.squid.take() {
            let _ = squid.crash(lab);
        }
        if let Some(h) = self.swcache.take() {
            let _ = lab.stop(&h, Duration::from_secs(5));
        }
    }
}
