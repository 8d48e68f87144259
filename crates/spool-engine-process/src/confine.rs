//! A worker process confines itself to one project before it runs that project's first query.
//!
//! Defence in depth behind the SQL sandboxes: should a check ever let SQL name a file, the
//! process that runs it can still open only
//! - its project's folder, to read;
//! - its own scratch folder, to read and write;
//! - a few system files the runtime reads (its own `/proc` entry, CPU and memory facts, time
//!   zones, shared libraries), to read.
//!
//! Other projects, the result store, the job store and the server's files are out of reach,
//! and so are TCP (no bind, no connect), executing programs, abstract Unix sockets and signals
//! to processes outside the sandbox. On Linux this is Landlock, in the strictest form the
//! kernel offers; a kernel without it leaves the worker unconfined, which the worker says in
//! the log. Landlock confines the calling thread and the threads it starts later, so the
//! worker confines itself while it has one thread, and refuses to run queries otherwise.

use std::io;
use std::path::{Path, PathBuf};

/// What a confined worker may reach: given by the server that starts it.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The folder of every project; the worker may read one project's folder beneath it.
    pub projects: PathBuf,
    /// The worker's own scratch folder (created if missing).
    pub scratch: PathBuf,
}

/// How far the kernel enforced the confinement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// Every restriction asked for holds.
    Fully,
    /// Some hold; the kernel lacks the rest (an older Landlock ABI).
    Partly,
    /// None: the kernel has no Landlock (or it is turned off), or this is not Linux.
    Not,
}

/// The folder of `project` beneath `projects`: the exact name first, then ignoring ASCII
/// case (as the engine finds it). Must run before confinement: it lists `projects`.
pub(crate) fn project_folder(projects: &Path, project: &str) -> Option<(String, PathBuf)> {
    let exact = projects.join(project);
    if exact.is_dir() {
        return Some((project.to_owned(), exact));
    }
    std::fs::read_dir(projects)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            (name.eq_ignore_ascii_case(project) && entry.path().is_dir())
                .then(|| (name, entry.path()))
        })
}

/// The number of threads this process has, where the system says.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Confines this process to `project` (its folder, if it has one) and `scratch`.
pub(crate) fn confine(project: Option<&Path>, scratch: &Path) -> io::Result<Enforced> {
    std::fs::create_dir_all(scratch)?;
    if let Some(n) = threads().filter(|&n| n > 1) {
        return Err(io::Error::other(format!(
            "the worker has {n} threads before it confines itself; Landlock would leave all \
             but one unconfined"
        )));
    }
    imp::confine(project, scratch)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::path::Path;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, path_beneath_rules,
    };

    use super::Enforced;

    /// The newest Landlock ABI this code was written for; older kernels get what they have.
    const ABI: ABI = ABI::V6;

    /// System paths a worker reads after confinement: parts of its own `/proc` entry (thread
    /// names for priorities, memory, cgroups; not `environ`, which holds the server's secrets),
    /// CPU and memory facts for Polars' thread pool and memory checks, time zones, and shared
    /// libraries. None holds another user's data.
    const SYSTEM_READ: &[&str] = &[
        "/proc/self/status",
        "/proc/self/stat",
        "/proc/self/statm",
        "/proc/self/task",
        "/proc/self/cgroup",
        "/proc/self/mountinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/cpuinfo",
        "/sys/fs/cgroup",
        "/sys/devices/system/cpu",
        "/sys/kernel/mm/transparent_hugepage",
        "/etc/localtime",
        "/usr/share/zoneinfo",
        "/etc/ld.so.cache",
        "/lib",
        "/lib64",
        "/usr/lib",
        "/dev/null",
        "/dev/urandom",
    ];

    pub(super) fn confine(project: Option<&Path>, scratch: &Path) -> io::Result<Enforced> {
        let failed = |e: landlock::RulesetError| io::Error::other(format!("landlock: {e}"));
        // Reading and writing, never running a program (`Execute` is handled, so it is denied
        // everywhere, scratch included).
        let execute = BitFlags::from(AccessFs::Execute);
        let read = AccessFs::from_read(ABI) & !execute;
        let all = AccessFs::from_all(ABI);
        let write = all & !execute;
        // `/proc/self` is a link to this process's own entry: opened here, before the
        // restriction, its files name this process only.
        let system = SYSTEM_READ.iter().map(Path::new);
        let status = Ruleset::default()
            .handle_access(all)
            .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
            .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(path_beneath_rules(project, read)))
            .and_then(|r| r.add_rules(path_beneath_rules([scratch], write)))
            .and_then(|r| r.add_rules(path_beneath_rules(system, read)))
            .and_then(|r| r.restrict_self())
            .map_err(failed)?;
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => Enforced::Fully,
            RulesetStatus::PartiallyEnforced => Enforced::Partly,
            RulesetStatus::NotEnforced => Enforced::Not,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::path::Path;

    use super::Enforced;

    pub(super) fn confine(_: Option<&Path>, _: &Path) -> io::Result<Enforced> {
        Ok(Enforced::Not)
    }
}

/// A worker's own scratch folder beneath the shared `scratch`: `workers/<pid>`. Folders left by
/// workers that are gone (killed with their query) are removed first.
pub fn own_scratch(scratch: &Path) -> io::Result<PathBuf> {
    let workers = scratch.join("workers");
    std::fs::create_dir_all(&workers)?;
    for entry in std::fs::read_dir(&workers)?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
            rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH)
        });
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let own = workers.join(std::process::id().to_string());
    std::fs::create_dir_all(&own)?;
    Ok(own)
}
