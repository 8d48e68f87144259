//! Query work runs below the priority of the threads that answer HTTP.
//!
//! An export keeps every core busy for seconds; status polls and submissions need a core for
//! microseconds at a time. On Linux each thread has its own nice value, so the engine's threads
//! (Spool's encoder threads and, when asked, Polars' own) run at [`ENGINE_NICE`] and the
//! scheduler prefers the service's threads whenever both are ready. Elsewhere this is a no-op.

/// The nice value of engine threads (0 is normal, 19 the lowest priority).
pub(crate) const ENGINE_NICE: i32 = 10;

/// Name prefixes of the threads Polars starts: its streaming executor, its Tokio runtime for I/O
/// (Tokio's default thread name, shortened by the kernel) and its compute pool.
const POLARS_THREADS: &[&str] = &[
    "async-executor",
    "tokio-rt-worker",
    "tokio-runtime-w",
    "polars",
];

/// Lowers the calling thread's priority to [`ENGINE_NICE`].
pub(crate) fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    set_nice(rustix::thread::gettid());
}

/// Lowers every thread of this process that Polars started (found by name) to [`ENGINE_NICE`].
/// Only for a process whose own threads carry other names (the Spool server names its runtime's
/// threads `spool`): an embedder's Tokio threads with default names would be lowered too.
pub(crate) fn lower_polars_threads() {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !POLARS_THREADS.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            if let Some(pid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            {
                set_nice(pid);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn set_nice(thread: rustix::process::Pid) {
    // On Linux, `setpriority(PRIO_PROCESS, tid)` sets the nice value of that one thread.
    if let Err(e) = rustix::process::setpriority_process(Some(thread), ENGINE_NICE) {
        tracing::debug!(error = %e, "lowering an engine thread's priority failed");
    }
}
