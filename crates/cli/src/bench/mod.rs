//! `switchyard bench`: Switchyard measured beside a raw-TCP baseline in the same run.
//!
//! Every scenario runs the baseline (tokio + `LengthDelimitedCodec`, written the way a
//! careful hand-written sender would) and Switchyard (plaintext) on loopback, in this
//! process, one after the other, and prints one row with both figures and their ratio.
//! Only ratios from one run mean anything: the machine is shared and noisy.
//!
//! Scenarios: one-way throughput (64 B … 1 MiB; MessagePack per message, batched,
//! and raw `Bytes`), idle round-trip latency, high-priority latency under a bulk
//! load, broadcast to 16 peers, memory per idle peer, connection setup (with one and
//! with five services negotiated), request round trips against message round trips,
//! the actix ceiling (the `Addr::send` rate between two arbiters) for per-message
//! delivery, and discovery (nodes from one seed reaching their outbound target, the
//! address book's add and select rates, the peer store's write throughput).

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

mod baseline;
mod ceiling;
mod discovery;
mod memory;
mod sy;

pub use memory::clients;

/// Options of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Small counts: every scenario in well under a minute.
    pub quick: bool,
    /// Even smaller counts, for the test suite on a debug build.
    pub smoke: bool,
    /// Where to write every figure as JSON.
    pub json: Option<PathBuf>,
    /// Run only the steps whose name contains this (e.g. "64 B", "latency").
    pub only: Option<String>,
}

impl BenchOptions {
    /// Scales a count by the run size.
    pub(crate) fn scale(&self, full: u64) -> u64 {
        if self.smoke {
            (full / 200).max(4)
        } else if self.quick {
            (full / 10).max(8)
        } else {
            full
        }
    }
}

/// One result row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Message size or other parameter.
    pub size: String,
    /// The baseline's figure.
    pub baseline: f64,
    /// Switchyard's figure.
    pub switchyard: f64,
    /// `switchyard / baseline` (for latencies and memory, lower is better).
    pub ratio: f64,
    /// Unit of both figures.
    pub unit: String,
    /// What the baseline is, for this row.
    pub note: String,
}

impl Row {
    pub(crate) fn new(
        scenario: &str,
        size: &str,
        baseline: f64,
        switchyard: f64,
        unit: &str,
        note: &str,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            size: size.into(),
            baseline,
            switchyard,
            ratio: if baseline > 0.0 {
                switchyard / baseline
            } else {
                0.0
            },
            unit: unit.into(),
            note: note.into(),
        }
    }
}

/// Facts about the machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Compiler that built this binary's toolchain (`rustc --version` at run time).
    pub rustc: String,
    /// CPU model.
    pub cpu: String,
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        rustc,
        cpu,
    }
}

#[derive(Serialize)]
struct Report<'a> {
    machine: &'a Machine,
    quick: bool,
    rows: &'a [Row],
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Renders rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | size | baseline | switchyard | ratio | unit | note |\n|---|---|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {} | {} |\n",
            r.scenario,
            r.size,
            fmt_num(r.baseline),
            fmt_num(r.switchyard),
            r.ratio,
            r.unit,
            r.note
        ));
    }
    out
}

/// Runs every scenario and prints the table (and writes JSON when asked).
pub async fn run(opts: BenchOptions) -> Result<Vec<Row>, String> {
    let machine = machine();
    println!(
        "switchyard bench: {} cores, kernel {}, {}, {}{}",
        machine.cores,
        machine.kernel,
        machine.rustc,
        machine.cpu,
        if opts.quick || opts.smoke {
            " (quick)"
        } else {
            ""
        }
    );
    // Memory first: later scenarios leave freed memory in the allocator that would
    // hide the growth.
    let steps: [(&str, u8); 11] = [
        ("memory per peer", 7),
        ("throughput 64 B", 0),
        ("throughput 1 KiB", 1),
        ("throughput 64 KiB", 2),
        ("throughput 1 MiB", 3),
        ("latency", 4),
        ("broadcast", 5),
        ("connection setup", 6),
        ("requests", 8),
        ("encrypted", 9),
        ("discovery", 10),
    ];
    let bar = ProgressBar::new(steps.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for (name, step) in steps {
        if opts
            .only
            .as_ref()
            .is_some_and(|o| !name.contains(o.as_str()))
        {
            bar.inc(1);
            continue;
        }
        bar.set_message(name);
        match step {
            0..=3 => {
                let size = [64usize, 1024, 64 << 10, 1 << 20][usize::from(step)];
                rows.extend(sy::throughput(&opts, size).await?);
                if size == 64 {
                    let c = ceiling::actix_ceiling(&opts).await;
                    if let Some(per_msg) = rows.iter().find(|r| {
                        r.scenario == "throughput msgpack per-message"
                            && r.size == "64 B"
                            && r.unit == "msgs/s"
                    }) {
                        rows.push(Row::new(
                            "per-message delivery vs actix ceiling",
                            "64 B",
                            c,
                            per_msg.switchyard,
                            "msgs/s",
                            "baseline: Addr::send between two arbiters, same in-flight window",
                        ));
                    }
                }
            }
            4 => rows.extend(sy::latency(&opts).await?),
            5 => rows.extend(sy::broadcast(&opts).await?),
            6 => rows.extend(sy::connect(&opts).await?),
            8 => rows.extend(sy::requests(&opts).await?),
            9 => rows.extend(sy::encrypted(&opts).await?),
            10 => rows.extend(discovery::discovery(&opts).await?),
            _ => rows.extend(memory::per_peer(&opts).await?),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!("{}", table(&rows));
    if let Some(path) = &opts.json {
        let report = Report {
            machine: &machine,
            quick: opts.quick || opts.smoke,
            rows: &rows,
        };
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(rows)
}

/// One row per percentile `(name, q)` comparing two sorted samples in microseconds;
/// `scenario` names the row from the percentile's name.
pub(crate) fn pct_rows(
    percentiles: &[(&str, f64)],
    scenario: impl Fn(&str) -> String,
    size: &str,
    base: &[Duration],
    ours: &[Duration],
    note: &str,
) -> Vec<Row> {
    percentiles
        .iter()
        .map(|(name, q)| {
            Row::new(
                &scenario(name),
                size,
                pct_us(base, *q),
                pct_us(ours, *q),
                "us",
                note,
            )
        })
        .collect()
}

/// Percentile of sorted durations, in microseconds.
pub(crate) fn pct_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}
