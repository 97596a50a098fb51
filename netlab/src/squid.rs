//! Starting Debian's Squid inside a lab namespace without two instances colliding.
//!
//! Squid keeps its collapsed-forwarding state in POSIX shared memory named after its service
//! name (`/dev/shm/squid-cf__*.shm` by default). Namespaces do not isolate `/dev/shm`, so two
//! Squids started with the default name (two caches in one lab, or two labs at once) open the
//! same segments, and a killed Squid leaves them behind; the next start can then fail before
//! it listens. Every Squid here gets its own service name, and its segments are removed when
//! the guard is dropped. The demo and the end-to-end tests both start their Squids here.

use crate::{Lab, LabError, Ns, ProcHandle};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A running (or stopped) Squid and the shared-memory name it owns.
#[derive(Debug)]
pub struct Squid {
    /// The process, for `Lab::stop`, `Lab::logs` and the like.
    pub handle: ProcHandle,
    service_name: String,
}

impl Squid {
    /// Runs `squid -N -n NAME -f conf` in `ns`, NAME unique to this process and instance (any
    /// segments a crashed earlier run left under that name are removed first).
    pub fn spawn(lab: &mut Lab, ns: &Ns, conf: &Path) -> Result<Squid, LabError> {
        let service_name = format!(
            "swsq{}n{}",
            std::process::id(),
            NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        remove_segments(&service_name);
        let handle = lab.spawn(
            ns,
            "squid",
            &["-N", "-n", &service_name, "-f", &conf.to_string_lossy()],
        )?;
        Ok(Squid {
            handle,
            service_name,
        })
    }

    /// The service name (`-n`), which prefixes its shared-memory segments.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// A proxy crash: SIGKILL to Squid's process group (its ports refuse at once, nothing is
    /// cleaned up by Squid itself); its segments are removed when the guard is dropped.
    pub fn crash(self, lab: &mut Lab) -> Result<ExitStatus, LabError> {
        lab.kill(&self.handle)
    }

    /// Stops Squid (SIGTERM, SIGKILL after `timeout`) and removes its segments.
    pub fn stop(self, lab: &mut Lab, timeout: Duration) -> Result<ExitStatus, LabError> {
        lab.stop(&self.handle, timeout)
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        remove_segments(&self.service_name);
    }
}

/// Removes the `/dev/shm` segments of the Squid whose service name is `service_name`.
pub fn remove_segments(service_name: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_segments_are_removed() {
        let dir = Path::new("/dev/shm");
        if !dir.is_dir() {
            return;
        }
        let name = format!("swsqtest{}", std::process::id());
        let mine = dir.join(format!("{name}-cf__metadata.shm"));
        let other = dir.join(format!("{name}x-cf__metadata.shm"));
        if std::fs::write(&mine, b"x").is_err() || std::fs::write(&other, b"x").is_err() {
            return;
        }
        remove_segments(&name);
        let (mine_left, other_left) = (mine.exists(), other.exists());
        let _ = std::fs::remove_file(&other);
        assert!(!mine_left, "the named segment is removed");
        assert!(other_left, "another Squid's segment is kept");
    }
}
