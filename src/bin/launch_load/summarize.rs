//! `launch-load summarize`: turns the per-run records of scripts/bench-compare into one
//! markdown table, one JSON file and the latency plot.
//!
//! A record is a JSON object (one file per run, read in file-name order):
//!
//! ```text
//! { "scenario": "select-50", "target": "pgbouncer", "tool": "pgbench",
//!   "description": "...", "clients": 50, "status": "ok" | "failed", "note": "...",
//!   "plot": true,                      // a point of the latency/clients plot
//!   "idle": true,                      // the idle-clients scenario (RSS per client)
//!   "report": { "tps": .., "transactions_ok": .., "transactions_failed": ..,
//!               "latency": { "p50_ms": .., "p99_ms": .., ... },
//!               "errors": { "26000": { "count": .., "sample": ".." } },
//!               "proxy": { "cpu_ms_per_1000_tx": .., "sleeps_per_tx": ..,
//!                          "peak_rss_kib": .., "rss_per_client_bytes": .. } } }
//! ```
//!
//! `report` is launch-load's own JSON report, or the same fields derived from pgbench.
//!
//! With `--rounds N`, bench-compare repeats every (scenario, target) N times, the targets of
//! one round back to back, and marks each record with `"round": k`. The table and the plot
//! then show, for each (scenario, target), the round with the median throughput, and its
//! notes list every round's: on a shared host a single run can be off by a fifth either way,
//! and the median of interleaved rounds is what a ratio between targets can rest on.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::plot;

/// The targets, in table order, with the names used in the table. `proxy-plain` is
/// launch-proxy with tenant injection and the statement guard off (clients set the tenant
/// themselves, as through PgBouncer): their cost is the ratio of `proxy` to it.
/// `proxy-variant` is launch-proxy with one setting changed (bench-compare's `--variant`).
const TARGETS: &[(&str, &str)] = &[
    ("direct", "PostgreSQL (direct)"),
    ("pgbouncer", "PgBouncer 1.18"),
    ("proxy", "launch-proxy"),
    ("proxy-plain", "launch-proxy, no injection/guard"),
    ("proxy-variant", "launch-proxy (variant)"),
];

pub struct Record(pub Value);

impl Record {
    fn str(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or("")
    }
    fn report_f64(&self, path: &[&str]) -> Option<f64> {
        let mut v = self.0.get("report")?;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64()
    }
    fn ok(&self) -> bool {
        self.str("status") == "ok"
    }
    fn tps(&self) -> Option<f64> {
        self.report_f64(&["tps"]).filter(|t| *t > 0.0)
    }
    /// Throughput for ratios: only from runs that succeeded.
    fn ok_tps(&self) -> Option<f64> {
        self.tps().filter(|_| self.ok())
    }
    fn errors(&self) -> (u64, String) {
        let mut total = 0;
        let mut parts = Vec::new();
        if let Some(map) = self
            .0
            .get("report")
            .and_then(|r| r.get("errors"))
            .and_then(Value::as_object)
        {
            for (code, e) in map {
                let n = e.get("count").and_then(Value::as_u64).unwrap_or(0);
                total += n;
                parts.push(format!("{n}× {code}"));
            }
        }
        (total, parts.join(", "))
    }
    fn first_error_sample(&self) -> Option<String> {
        let map = self.0.get("report")?.get("errors")?.as_object()?;
        map.values()
            .find_map(|e| e.get("sample").and_then(Value::as_str))
            .map(str::to_owned)
    }
}

/// Reads every `*.json` file of `dir` in name order.
pub fn read_records(dir: &Path) -> Result<Vec<Record>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text)
                .map(Record)
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// One (scenario, target) of the table: the run it shows and every round's throughput as
/// the table writes it (in parentheses for a failed round).
struct Row<'a> {
    shown: &'a Record,
    rounds: Vec<String>,
}

/// Every round of `scenario` against `target`, in record order.
fn runs_of<'a>(records: &'a [Record], scenario: &str, target: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.str("scenario") == scenario && r.str("target") == target)
        .collect()
}

/// The run shown for `scenario`/`target`: of the rounds that succeeded, the one with the
/// median throughput (the lower middle of an even count); a failed round only when none
/// succeeded.
fn row<'a>(records: &'a [Record], scenario: &str, target: &str) -> Option<Row<'a>> {
    let runs = runs_of(records, scenario, target);
    let first = *runs.first()?;
    let mut ok: Vec<(&Record, f64)> = runs
        .iter()
        .filter_map(|r| r.ok_tps().map(|t| (*r, t)))
        .collect();
    ok.sort_by(|a, b| a.1.total_cmp(&b.1));
    let shown = if ok.is_empty() {
        first
    } else {
        ok[(ok.len() - 1) / 2].0
    };
    Some(Row {
        shown,
        rounds: runs
            .iter()
            .map(|r| match (r.ok_tps(), r.tps()) {
                (Some(t), _) => format!("{t:.0}"),
                (None, Some(t)) => format!("({t:.0})"),
                (None, None) => "—".to_owned(),
            })
            .collect(),
    })
}

fn scenarios(records: &[Record]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in records {
        let s = r.str("scenario");
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".to_owned(), |v| format!("{v:.digits$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".to_owned(),
    }
}

fn cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    if s.chars().count() > 90 {
        let cut: String = s.chars().take(87).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// The markdown table: one row per (scenario, target), scenarios in record order.
pub fn markdown(records: &[Record]) -> String {
    let find = |scenario: &str, target: &str| row(records, scenario, target).map(|r| r.shown);
    let mut out = String::new();
    out.push_str(
        "| scenario | target | tps | p50 ms | p99 ms | proxy CPU ms / 1000 tx | proxy sleeps / tx | peak RSS MiB | errors | tps vs PgBouncer | tps vs direct | notes |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n",
    );
    for scenario in scenarios(records) {
        let direct = find(scenario, "direct").and_then(Record::ok_tps);
        let bouncer = find(scenario, "pgbouncer").and_then(Record::ok_tps);
        for (target, target_name) in TARGETS {
            let Some(Row { shown: r, rounds }) = row(records, scenario, target) else {
                continue;
            };
            let idle = r.0.get("idle") == Some(&Value::Bool(true));
            let tps = r.ok_tps();
            let (n_err, err_text) = r.errors();
            let mut notes = Vec::new();
            if !r.ok() {
                notes.push(format!("**failed**: {}", r.str("note")));
            } else if !r.str("note").is_empty() {
                notes.push(r.str("note").to_owned());
            }
            if rounds.len() > 1 && !idle {
                notes.push(format!(
                    "median of {} rounds (tps {})",
                    rounds.len(),
                    rounds.join(" / ")
                ));
            }
            if let Some(b) = r.report_f64(&["proxy", "rss_per_client_bytes"]) {
                if idle {
                    notes.push(format!("{:.0} B RSS per idle client", b));
                }
            }
            if n_err > 0 {
                if let Some(sample) = r.first_error_sample() {
                    notes.push(format!("first error: {sample}"));
                }
            }
            let (vs_bouncer, vs_direct) = match *target {
                "proxy" | "proxy-plain" | "proxy-variant" => {
                    (ratio(tps, bouncer), ratio(tps, direct))
                }
                "pgbouncer" => ("—".to_owned(), ratio(tps, direct)),
                _ => ("—".to_owned(), "—".to_owned()),
            };
            let peak = r
                .report_f64(&["proxy", "peak_rss_kib"])
                .filter(|_| *target != "direct")
                .map(|k| k / 1024.0);
            let pooler_figure = |key: &str| {
                r.report_f64(&["proxy", key])
                    .filter(|_| *target != "direct" && !idle && r.ok())
            };
            let cpu = pooler_figure("cpu_ms_per_1000_tx");
            // How often the pooler blocked for want of work: each sleep costs a context
            // switch, which on a shared 2-core host is most of the CPU difference between
            // two poolers (docs/benchmarks.md).
            let sleeps = pooler_figure("sleeps_per_tx");
            // A failed run's figures describe the few transactions before it broke.
            let latency = |q: &str| {
                if idle || !r.ok() {
                    "—".to_owned()
                } else {
                    fmt_opt(r.report_f64(&["latency", q]), 2)
                }
            };
            let tps_cell = match (idle, r.ok()) {
                (true, _) => "—".to_owned(),
                (false, true) => fmt_opt(tps, 0),
                (false, false) => r.tps().map_or("—".to_owned(), |t| format!("({t:.0})")),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(scenario),
                target_name,
                tps_cell,
                latency("p50_ms"),
                latency("p99_ms"),
                fmt_opt(cpu, 1),
                fmt_opt(sleeps, 2),
                fmt_opt(peak, 1),
                if n_err == 0 {
                    "0".to_owned()
                } else {
                    cell(&err_text)
                },
                vs_bouncer,
                vs_direct,
                cell(&notes.join("; ")),
            );
        }
    }
    out
}

/// Each launch-proxy target against PgBouncer round by round: the ratio of throughput, p99
/// and CPU per transaction within each round (the two ran back to back, so they met the
/// same host), then the median of those ratios. Medians of paired ratios are steadier than
/// ratios of separately chosen median rounds when the host's speed drifts between rounds.
/// Empty when no round has both.
pub fn by_round(records: &[Record]) -> String {
    let round = |r: &Record| r.0.get("round").and_then(Value::as_u64).unwrap_or(1);
    // Throughput, p99 and CPU per transaction, from runs that succeeded.
    let metrics: [fn(&Record) -> Option<f64>; 3] = [
        |r| r.ok_tps(),
        |r| r.report_f64(&["latency", "p99_ms"]).filter(|_| r.ok()),
        |r| {
            r.report_f64(&["proxy", "cpu_ms_per_1000_tx"])
                .filter(|c| r.ok() && *c > 0.0)
        },
    ];
    let mut rows = String::new();
    for scenario in scenarios(records) {
        let bouncer = runs_of(records, scenario, "pgbouncer");
        for (target, name) in &TARGETS[2..] {
            let runs = runs_of(records, scenario, target);
            let cells: Vec<Vec<f64>> = metrics
                .iter()
                .map(|metric| {
                    runs.iter()
                        .filter_map(|p| {
                            let b = bouncer.iter().find(|b| round(b) == round(p))?;
                            Some(metric(p)? / metric(b).filter(|v| *v > 0.0)?)
                        })
                        .collect()
                })
                .collect();
            if cells[0].is_empty() {
                continue;
            }
            let fmt = |ratios: &Vec<f64>| match median(ratios) {
                None => "—".to_owned(),
                Some(m) => {
                    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                    format!("{} → **{m:.2}**", each.join(" / "))
                }
            };
            let _ = writeln!(
                rows,
                "| {} | {name} | {} | {} | {} |",
                cell(scenario),
                fmt(&cells[0]),
                fmt(&cells[1]),
                fmt(&cells[2])
            );
        }
    }
    if rows.is_empty() {
        return rows;
    }
    format!(
        "\nRound by round against PgBouncer (target ÷ PgBouncer within each round, then the \
         median): throughput above 1, p99 and CPU per transaction below 1 favour the target.\n\n\
         | scenario | target | tps | p99 | CPU per tx |\n|---|---|---|---|---|\n{rows}"
    )
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// TSV for [`plot::parse`]: the shown runs (see [`markdown`]) marked `"plot": true`.
pub fn plot_points(records: &[Record]) -> String {
    let mut out = String::from("# series\tclients\tp50_ms\tp99_ms\n");
    for (target, name) in TARGETS {
        for scenario in scenarios(records) {
            let Some(Row { shown: r, .. }) = row(records, scenario, target) else {
                continue;
            };
            if r.0.get("plot") != Some(&Value::Bool(true)) {
                continue;
            }
            let (Some(c), Some(p50), Some(p99)) = (
                r.0.get("clients").and_then(Value::as_f64),
                r.report_f64(&["latency", "p50_ms"]),
                r.report_f64(&["latency", "p99_ms"]),
            ) else {
                continue;
            };
            if r.ok() {
                let _ = writeln!(out, "{name}\t{c}\t{p50}\t{p99}");
            }
        }
    }
    out
}

pub fn results_json(records: Vec<Record>, meta: Value) -> Value {
    json!({
        "meta": meta,
        "runs": records.into_iter().map(|r| r.0).collect::<Vec<_>>(),
    })
}

pub fn svg(records: &[Record], title: &str) -> Result<String, String> {
    Ok(plot::svg(title, &plot::parse(&plot_points(records))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(scenario: &str, target: &str, tps: f64, status: &str) -> Record {
        Record(json!({
            "scenario": scenario, "target": target, "tool": "pgbench", "clients": 50,
            "status": status, "note": if status == "ok" { "" } else { "pgbench exit 2" },
            "plot": true,
            "report": {
                "tps": tps,
                "latency": { "p50_ms": 1.5, "p99_ms": 4.25 },
                "errors": if status == "ok" { json!({}) } else {
                    json!({ "26000": { "count": 50, "sample": "prepared statement \"P0_1\" does not exist" } })
                },
                "proxy": { "cpu_ms_per_1000_tx": 12.5, "sleeps_per_tx": 0.25, "peak_rss_kib": 10240 }
            }
        }))
    }

    #[test]
    fn table_and_ratios() {
        let records = vec![
            rec("select-50", "direct", 30000.0, "ok"),
            rec("select-50", "pgbouncer", 20000.0, "ok"),
            rec("select-50", "proxy", 25000.0, "ok"),
            rec("prepared-50", "pgbouncer", 0.0, "failed"),
        ];
        let md = markdown(&records);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 2 + 4);
        assert!(lines[4].contains(
            "| launch-proxy | 25000 | 1.50 | 4.25 | 12.5 | 0.25 | 10.0 | 0 | 1.25× | 0.83× |"
        ));
        assert!(lines[3].contains("| PgBouncer 1.18 | 20000 |"));
        assert!(lines[3].contains("| — | 0.67× |"));
        assert!(lines[2].contains("| PostgreSQL (direct) | 30000 | 1.50 | 4.25 | — | — | — | 0 |"));
        assert!(lines[5].contains("**failed**"));
        assert!(lines[5].contains("50× 26000"));
        let tsv = plot_points(&records);
        assert_eq!(tsv.lines().count(), 4);
        assert!(svg(&records, "t").unwrap().contains("<polyline"));
    }

    #[test]
    fn rounds_show_the_median_run() {
        let with_p99 = |tps: f64, p99: f64, status: &str| {
            let mut r = rec("select-50", "proxy", tps, status);
            r.0["report"]["latency"]["p99_ms"] = json!(p99);
            r
        };
        let records = vec![
            rec("select-50", "pgbouncer", 20000.0, "ok"),
            with_p99(30000.0, 9.0, "ok"),
            with_p99(22000.0, 7.0, "ok"),
            with_p99(99000.0, 1.0, "failed"),
            with_p99(26000.0, 3.0, "ok"),
        ];
        let md = markdown(&records);
        let proxy = md.lines().find(|l| l.contains("| launch-proxy |")).unwrap();
        // 22000 < 26000 < 30000: the 26000 run, its own p99, and the failed round in parentheses.
        assert!(proxy.contains("| 26000 | 1.50 | 3.00 |"), "{proxy}");
        assert!(proxy.contains("| 1.30× |"), "{proxy}");
        assert!(
            proxy.contains("median of 4 rounds (tps 30000 / 22000 / (99000) / 26000)"),
            "{proxy}"
        );
        assert_eq!(
            md.lines()
                .filter(|l| l.contains("| launch-proxy |"))
                .count(),
            1
        );
        assert_eq!(plot_points(&records).lines().count(), 3);
    }

    #[test]
    fn by_round_pairs_the_targets_within_each_round() {
        let run = |target: &str, round: u64, tps: f64, p99: f64, cpu: f64, status: &str| {
            let mut r = rec("seed-2000", target, tps, status);
            r.0["round"] = json!(round);
            r.0["report"]["latency"]["p99_ms"] = json!(p99);
            r.0["report"]["proxy"]["cpu_ms_per_1000_tx"] = json!(cpu);
            r
        };
        let records = vec![
            run("pgbouncer", 1, 10000.0, 30.0, 8.0, "ok"),
            run("proxy", 1, 11000.0, 24.0, 12.0, "ok"),
            run("pgbouncer", 2, 20000.0, 20.0, 10.0, "ok"),
            run("proxy", 2, 19000.0, 25.0, 9.0, "ok"),
            run("pgbouncer", 3, 10000.0, 40.0, 8.0, "ok"),
            run("proxy", 3, 12000.0, 20.0, 10.0, "ok"),
            // A failed round pairs with nothing; a target without PgBouncer has no row.
            run("pgbouncer", 4, 10000.0, 40.0, 8.0, "failed"),
            run("proxy", 4, 90000.0, 1.0, 1.0, "ok"),
            rec("select-50", "proxy", 1000.0, "ok"),
        ];
        let md = by_round(&records);
        let row = md.lines().find(|l| l.contains("| launch-proxy |")).unwrap();
        // tps 1.10, 0.95, 1.20: median 1.10; p99 0.80, 1.25, 0.50; CPU 1.50, 0.90, 1.25.
        assert!(
            row.contains("| 1.10 / 0.95 / 1.20 → **1.10** | 0.80 / 1.25 / 0.50 → **0.80** | 1.50 / 0.90 / 1.25 → **1.25** |"),
            "{md}"
        );
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| seed")).count(),
            1,
            "{md}"
        );
        assert!(!md.contains("select-50"), "{md}");
        assert_eq!(by_round(&records[8..]), "");
        assert_eq!(median(&[1.0, 3.0]), Some(2.0));
    }
}
