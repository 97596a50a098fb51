//! Starting Debian's Squid inside a lab namespace without two instances colliding.
//!
//! Squid keeps its collapsed-forwarding state in POSIX shared memory named after its service
//! name (`/dev/shm/squid-cf__*.shm` by default). Namespaces do not isolate `/dev/shm`, so two
//! Squids started with the default name (two caches in one lab, or two labs at once) open the
//! same segments, and a killed Squid leaves them behind; the next start can then fail before
//! it listens. Every Squid here gets its own service name, and its segments are removed when
//! the guard is dropped.

use anyhow::{Context, Result};
use netlab::{Lab, Ns, ProcHandle};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A running (or stopped) Squid and the shared-memory name it owns.
pub struct Squid {
    /// The process, for `Lab::stop` and logs.
    pub handle: ProcHandle,
    service_name: String,
}

impl Squid {
    /// Runs `squid -N -n NAME -f conf` in `ns`, NAME unique to this process and instance.
    pub fn spawn(lab: &mut Lab, ns: &Ns, conf: &Path) -> Result<Squid> {
        let service_name = format!(
            "swt{}n{}",
            std::process::id(),
            NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        remove_segments(&service_name);
        let handle = lab
            .spawn(
                ns,
                "squid",
                &["-N", "-n", &service_name, "-f", &conf.to_string_lossy()],
            )
            .context("starting squid")?;
        Ok(Squid {
            handle,
            service_name,
        })
    }

    /// The service name (`-n`), which prefixes its shared-memory segments.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        remove_segments(&self.service_name);
    }
}

fn remove_segments(service_name: &str) {
    let prefix = format!("{service_name}-");
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
