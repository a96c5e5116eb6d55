//! The CPU share Lambda gives a memory size: CPU time in proportion to memory, one vCPU's worth at 1,769 MB, spread
//! over the two vCPUs a function sees from 128 to 3,008 MB. Here that is a cgroup CPU quota (CFS bandwidth control):
//! `quota = period x memory / 1769` over the kernel's default 100 ms period. Lambda does not publish its period; a
//! shorter one spreads the same share more evenly, it does not change it.
//!
//! Works with cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`), as root or wherever the hierarchy is writable;
//! [`CpuShare::create`] says why when it cannot confine, and the benchmark prints that plainly.

use std::path::{Path, PathBuf};

/// Memory at which Lambda allocates one full vCPU.
pub const MB_PER_VCPU: u64 = 1769;
const PERIOD_US: u64 = 100_000;

/// A cgroup confining its processes to the CPU share of `memory_mb`; removed on drop.
pub struct CpuShare {
    pub memory_mb: u64,
    dir: PathBuf,
    /// The files a process writes "0" to, to move itself in: the cpu cgroup, and on cgroup v1 the cpuacct one
    /// that counts its CPU time.
    procs: Vec<PathBuf>,
    /// Cumulative CPU time of the cgroup's processes: (file, its unit in nanoseconds, the `cpu.stat` key if any).
    usage: (PathBuf, u64, Option<&'static str>),
    accounting_dir: Option<PathBuf>,
}

impl CpuShare {
    pub fn create(memory_mb: u64) -> Result<CpuShare, String> {
        let quota_us = PERIOD_US * memory_mb / MB_PER_VCPU;
        let name = format!("lambda-share-{}-{memory_mb}mb", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v1 = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
        let (dir, settings, accounting_dir): (PathBuf, Vec<(&str, String)>, Option<PathBuf>) = if v2.exists() {
            // The cpu controller must be enabled for the children of the parent first.
            let parent = Path::new("/sys/fs/cgroup");
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu");
            (
                parent.join(&name),
                vec![("cpu.max", format!("{quota_us} {PERIOD_US}"))],
                None,
            )
        } else if v1.exists() {
            let settings = vec![
                ("cpu.cfs_period_us", PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota_us.to_string()),
            ];
            let accounting = Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage")
                .exists()
                .then(|| Path::new("/sys/fs/cgroup/cpuacct").join(&name));
            (Path::new("/sys/fs/cgroup/cpu").join(&name), settings, accounting)
        } else {
            return Err("no cgroup CPU controller is mounted at /sys/fs/cgroup".into());
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let mut procs = vec![dir.join("cgroup.procs")];
        let usage = match &accounting_dir {
            Some(accounting) => {
                std::fs::create_dir_all(accounting)
                    .map_err(|e| format!("cannot create the cgroup {}: {e}", accounting.display()))?;
                procs.push(accounting.join("cgroup.procs"));
                (accounting.join("cpuacct.usage"), 1, None)
            }
            None => (dir.join("cpu.stat"), 1000, Some("usage_usec")),
        };
        let share = CpuShare {
            memory_mb,
            procs,
            usage,
            accounting_dir,
            dir,
        };
        for (file, value) in settings {
            std::fs::write(share.dir.join(file), &value)
                .map_err(|e| format!("cannot set {file} = {value} in {}: {e}", share.dir.display()))?;
        }
        Ok(share)
    }

    /// The share as a fraction of one vCPU.
    pub fn vcpu(&self) -> f64 {
        self.memory_mb as f64 / MB_PER_VCPU as f64
    }

    /// Moves the calling process into the cgroup: for a child, between fork and exec, so it is confined from its
    /// first instruction.
    pub fn enter_on_exec(&self, command: &mut std::process::Command) {
        enter_cgroups_on_exec(command, &self.procs);
    }

    /// The `cgroup.procs` files a process joins the share through.
    pub fn procs(&self) -> &[PathBuf] {
        &self.procs
    }

    /// CPU time the cgroup's processes have used so far: the difference between two readings is what a process
    /// spent in between, whatever the quota stretched it to in wall time.
    pub fn cpu_time(&self) -> Option<std::time::Duration> {
        let (file, unit_ns, key) = &self.usage;
        let text = std::fs::read_to_string(file).ok()?;
        let value: u64 = match key {
            Some(key) => text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok())?,
            None => text.trim().parse().ok()?,
        };
        Some(std::time::Duration::from_nanos(value * unit_ns))
    }
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        // Only an empty cgroup can be removed; its processes are gone by the time the benchmark drops it.
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(accounting) = &self.accounting_dir {
            let _ = std::fs::remove_dir(accounting);
        }
    }
}

/// Moves a child into the cgroups of these `cgroup.procs` files between fork and exec, so it is confined from its
/// first instruction.
pub fn enter_cgroups_on_exec(command: &mut std::process::Command, procs: &[PathBuf]) {
    use std::os::unix::process::CommandExt;
    let procs: Vec<std::ffi::CString> = procs
        .iter()
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("a path without NUL"))
        .collect();
    // SAFETY: only open, write and close, which are async-signal-safe, on memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            for file in &procs {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
