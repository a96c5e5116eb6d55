//! Lambda's memory limit for a function process: a memory cgroup capped at the function's `MemorySize` (cgroup v2
//! `memory.max`, or v1 `memory.limit_in_bytes`), swap included where the kernel accounts it. A process over it is
//! killed by the kernel, as Lambda's sandbox is. Needs a writable cgroup hierarchy (root, or delegated); where there
//! is none, [`MemoryCap::create`] says why and the process runs uncapped.

use std::path::{Path, PathBuf};

pub struct MemoryCap {
    pub memory_mb: u64,
    dir: PathBuf,
    /// `memory.events` (v2) or `memory.oom_control` (v1): where the kernel counts its kills.
    events: PathBuf,
}

impl MemoryCap {
    pub fn create(memory_mb: u64) -> Result<MemoryCap, String> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "lambda-memory-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let bytes = (memory_mb * 1024 * 1024).to_string();
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes");
        let (dir, settings, optional, events) = if v2.exists() {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
            let dir = Path::new("/sys/fs/cgroup").join(&name);
            (
                dir.clone(),
                vec![("memory.max", bytes.clone())],
                vec![("memory.swap.max", "0".to_owned())],
                dir.join("memory.events"),
            )
        } else if v1.exists() {
            let dir = Path::new("/sys/fs/cgroup/memory").join(&name);
            // memsw (memory and swap) can be set only once the memory limit is.
            (
                dir.clone(),
                vec![("memory.limit_in_bytes", bytes.clone())],
                vec![("memory.memsw.limit_in_bytes", bytes)],
                dir.join("memory.oom_control"),
            )
        } else {
            return Err("no cgroup memory controller is mounted at /sys/fs/cgroup".into());
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let cap = MemoryCap { memory_mb, dir, events };
        for (file, value) in settings {
            std::fs::write(cap.dir.join(file), &value)
                .map_err(|e| format!("cannot set {file} = {value} in {}: {e}", cap.dir.display()))?;
        }
        for (file, value) in optional {
            let _ = std::fs::write(cap.dir.join(file), value);
        }
        Ok(cap)
    }

    /// The file a process writes "0" to, to move itself in.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The cap in bytes as the kernel holds it.
    pub fn limit_bytes(&self) -> Option<u64> {
        ["memory.max", "memory.limit_in_bytes"]
            .iter()
            .find_map(|file| std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok())
    }

    /// Whether the kernel killed a process of the cgroup for going over the cap.
    pub fn oom_killed(&self) -> bool {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .any(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        // Only an empty cgroup can be removed: the process may take a moment to be gone after its kill.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
