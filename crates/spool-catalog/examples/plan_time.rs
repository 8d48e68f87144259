//! What Spool's SQL front end costs per query: parse, bind against a project's snapshot and
//! run the passes, timed over many runs (the star-join levers are left out: the facts they ask
//! the engine for are found once per version of a project and cached).
//!
//! ```text
//! cargo run --release -p spool-catalog --example plan_time -- PROJECTS PROJECT QUERIES [RUNS]
//! ```
//!
//! `PROJECTS` is a data root (`<data dir>/projects`), `QUERIES` a folder of `.sql` files.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, project, queries, rest @ ..] = args.as_slice() else {
        return Err("usage: plan_time PROJECTS PROJECT QUERIES [RUNS]".into());
    };
    let runs: u32 = rest.first().map_or(Ok(1_000), |r| r.parse())?;
    let snapshot = spool_catalog::open(root.as_ref(), project)?;
    let mut files: Vec<_> = std::fs::read_dir(queries)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "sql"));
    files.sort();
    let mut total = 0.0;
    for path in &files {
        let sql = std::fs::read_to_string(path)?;
        spool_planner::plan_query(&sql, &snapshot.catalog)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let started = Instant::now();
        for _ in 0..runs {
            let plan = spool_planner::plan_query(&sql, &snapshot.catalog)?;
            std::hint::black_box(plan);
        }
        let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
        total += micros;
        println!(
            "{:<12} {micros:8.1} µs",
            path.file_stem().unwrap_or_default().to_string_lossy()
        );
    }
    if !files.is_empty() {
        println!("{:<12} {:8.1} µs", "mean", total / files.len() as f64);
    }
    Ok(())
}
