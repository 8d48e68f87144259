//! The Spark phase: one server with the SSB data twice, `ssb` on Polars and `ssb_spark` on a
//! local Spark cluster (the one `cargo xtask ci` starts: a standalone master, two one-core
//! workers, a Connect server), the 13 queries and the CSV export through the API on each, in the
//! same run. On one machine with 2 cores Spark pays for its JVMs, task scheduling and shuffles
//! without the cluster's parallelism; the report says so next to the figures.

use std::time::Instant;

use super::{
    Binaries, Data, EXPORT_SQL, Options, fresh_data_dir, mb_per_s, median, queries, result_size,
    spawn_server, submit_to, through_api_on, wait,
};

/// Runs the phase and emits its table.
pub(super) fn phase(
    options: &Options,
    binaries: &Binaries,
    data: &Data,
    emit: &mut impl FnMut(String),
    charts: &mut Vec<super::charts::BarChart>,
) -> anyhow::Result<()> {
    let cluster_dir = data.bench_dir.join("spark-cluster");
    let _ = std::fs::remove_dir_all(&cluster_dir);
    let cluster = crate::spark::Cluster::start(&cluster_dir)?;
    let remote = cluster
        .env()
        .into_iter()
        .find(|(k, _)| *k == "SPOOL_TEST_SPARK_REMOTE")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let data_dir = fresh_data_dir(data, "spark", &format!("spark_remote = \"{remote}\"\n"))?;
    // `ssb_spark`: links to the same files, and the project file that picks Spark.
    let spark_project = data_dir.join("projects/ssb_spark");
    std::fs::create_dir_all(&spark_project)?;
    for entry in std::fs::read_dir(&data.project)? {
        let entry = entry?;
        std::os::unix::fs::symlink(entry.path(), spark_project.join(entry.file_name()))?;
    }
    std::fs::write(spark_project.join("project.toml"), "engine = \"spark\"\n")?;
    let server = spawn_server(&binaries.jemalloc, &data_dir, 2, &[])?;
    let agent = ureq::AgentBuilder::new().build();
    emit(format!(
        "## Spark: the 13 SSB queries through the API (medians of {} runs after a warm-up, seconds)\n\n\
         A local standalone cluster on the same machine: two workers of one core and 2 GiB each (executors of 1.5 GiB), \
         the Connect server's driver beside them, Spark {}.\n\n\
         | query | Polars | Spark | Spark / Polars |\n|---|---:|---:|---:|\n",
        options.runs,
        crate::spark::PYSPARK.trim_start_matches("pyspark=="),
    ));
    let mut sums = [0.0f64; 2];
    let mut chart = super::charts::BarChart {
        name: "spark".into(),
        title: "The 13 SSB queries: Polars and Spark projects through the API (seconds)".into(),
        y_label: "seconds".into(),
        groups: Vec::new(),
        series: vec![("Polars".into(), Vec::new()), ("Spark".into(), Vec::new())],
    };
    for (name, sql) in queries()? {
        let mut row = [0.0f64; 2];
        for (i, project) in ["ssb", "ssb_spark"].into_iter().enumerate() {
            let mut times = Vec::new();
            for run in 0..=options.runs {
                let (t, _) = through_api_on(&agent, &server.base, project, &sql)?;
                if run > 0 {
                    times.push(t);
                }
            }
            row[i] = median(times);
            sums[i] += row[i];
        }
        chart.groups.push(name.clone());
        chart.series[0].1.push(row[0]);
        chart.series[1].1.push(row[1]);
        emit(format!(
            "| {name} | {:.3} | {:.3} | {:.1} |\n",
            row[0],
            row[1],
            row[1] / row[0]
        ));
    }
    charts.push(chart);
    emit(format!(
        "| **sum** | **{:.3}** | **{:.3}** | **{:.1}** |\n\n",
        sums[0],
        sums[1],
        sums[1] / sums[0]
    ));
    // What every query pays on Spark whatever it reads: a session, its settings, the views.
    emit(
        "What any query pays (medians, seconds):\n\n| query | Polars | Spark |\n|---|---:|---:|\n"
            .to_owned(),
    );
    for sql in ["select 1", "select count(*) from dates"] {
        let mut row = [0.0f64; 2];
        for (i, project) in ["ssb", "ssb_spark"].into_iter().enumerate() {
            let mut times = Vec::new();
            for run in 0..=options.runs {
                let (t, _) = through_api_on(&agent, &server.base, project, sql)?;
                if run > 0 {
                    times.push(t);
                }
            }
            row[i] = median(times);
        }
        emit(format!("| `{sql}` | {:.3} | {:.3} |\n", row[0], row[1]));
    }
    emit("\n".to_owned());
    emit(format!(
        "CSV export of `{EXPORT_SQL}` through the API (one run each):\n\n\
         | engine | seconds | bytes | MB/s |\n|---|---:|---:|---:|\n"
    ));
    for (engine, project) in [("Polars", "ssb"), ("Spark", "ssb_spark")] {
        let started = Instant::now();
        let id = submit_to(&agent, &server.base, project, EXPORT_SQL, "csv")?;
        wait(&agent, &server.base, &id)?;
        let seconds = started.elapsed().as_secs_f64();
        let bytes = result_size(&agent, &server.base, &id)?;
        emit(format!(
            "| {engine} | {seconds:.2} | {bytes} | {:.0} |\n",
            mb_per_s(bytes, seconds)
        ));
    }
    emit("\n".to_owned());
    drop(server);
    cluster.stop();
    Ok(())
}
