//! Query work runs below the priority of the threads that answer HTTP.
//!
//! An export keeps every core busy for seconds; status polls and submissions need a core for
//! microseconds at a time. On Linux each thread has its own nice value, so engine threads (the
//! encoder threads here, and whatever an engine lowers itself) run at [`ENGINE_NICE`] and the
//! scheduler prefers the service's threads whenever both are ready. Elsewhere this is a no-op.

/// The nice value of engine threads (0 is normal, 19 the lowest priority).
pub const ENGINE_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`ENGINE_NICE`].
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    set_nice(rustix::thread::gettid());
}

/// Lowers the thread with kernel id `tid` (a `/proc/self/task` entry) to [`ENGINE_NICE`].
pub fn lower_thread(tid: i32) {
    #[cfg(target_os = "linux")]
    if let Some(pid) = rustix::process::Pid::from_raw(tid) {
        set_nice(pid);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = tid;
}

#[cfg(target_os = "linux")]
fn set_nice(thread: rustix::process::Pid) {
    // On Linux, `setpriority(PRIO_PROCESS, tid)` sets the nice value of that one thread.
    if let Err(e) = rustix::process::setpriority_process(Some(thread), ENGINE_NICE) {
        tracing::debug!(error = %e, "lowering an engine thread's priority failed");
    }
}
