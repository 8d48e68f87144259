//! Query work runs below the priority of the threads that answer HTTP.
//!
//! An export keeps every core busy for seconds; status polls and submissions need a core for
//! microseconds at a time. On Linux each thread has its own nice value, so the engine's threads
//! (Spool's encoder threads, see `spool_formats::priority`, and, when asked, Polars' own) run at
//! `ENGINE_NICE` and the
//! scheduler prefers the service's threads whenever both are ready. Elsewhere this is a no-op.

/// Name prefixes of the threads Polars starts: its streaming executor, its Tokio runtime for I/O
/// (Tokio's default thread name, shortened by the kernel) and its compute pool.
const POLARS_THREADS: &[&str] = &[
    "async-executor",
    "tokio-rt-worker",
    "tokio-runtime-w",
    "polars",
];

/// Lowers every thread of this process that Polars started (found by name) to `spool_formats::priority::ENGINE_NICE`.
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
            if let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            {
                spool_formats::priority::lower_thread(tid);
            }
        }
    }
}
