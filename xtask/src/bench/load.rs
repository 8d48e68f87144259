//! The HTTP load phase: many concurrent clients on keep-alive connections, each timing every
//! request, for a fixed time.

use std::time::{Duration, Instant};

use anyhow::bail;

/// What one load run measured.
pub struct LoadResult {
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// One request a client makes; returns whether the server answered as expected.
pub type Request<'a> = dyn Fn(&ureq::Agent) -> bool + Sync + 'a;

/// Runs `clients` threads, each with its own keep-alive connection, calling `request` in a
/// loop for `duration`. Latencies are measured per request on the client.
pub fn run(
    clients: usize,
    duration: Duration,
    request: &Request<'_>,
) -> anyhow::Result<LoadResult> {
    run_spread(clients, duration, &|_, agent| request(agent))
}

/// One request of client number `n`; returns whether the server answered as expected.
pub type ClientRequest<'a> = dyn Fn(usize, &ureq::Agent) -> bool + Sync + 'a;

/// [`run`], with each client's number given to `request` (to spread clients over servers).
pub fn run_spread(
    clients: usize,
    duration: Duration,
    request: &ClientRequest<'_>,
) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let deadline = started + duration;
    let per_client: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(30))
                        .build();
                    let mut latencies = Vec::with_capacity(64 * 1024);
                    let mut errors = 0;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let ok = request(client, &agent);
                        latencies.push(t.elapsed());
                        if !ok {
                            errors += 1;
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let errors = per_client.iter().map(|(_, e)| e).sum();
    let mut all: Vec<Duration> = per_client.into_iter().flat_map(|(l, _)| l).collect();
    if all.is_empty() {
        bail!("the load phase made no requests");
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(LoadResult {
        requests: all.len(),
        errors,
        seconds,
        p50_ms: ms(at(0.50)),
        p99_ms: ms(at(0.99)),
        max_ms: ms(all[all.len() - 1]),
    })
}
