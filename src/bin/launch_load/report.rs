//! Counters and histograms of a run, and the report made from them (human text and JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procfs::ProcSample;
use crate::workload::TxKind;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// An error class: a SQLSTATE, or a word for failures without one.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    /// The first message seen for this class.
    pub sample: String,
}

/// What one client task (or the connect phase) saw; merged into one at the end.
pub struct Stats {
    pub all: Histogram<u64>,
    pub read: Histogram<u64>,
    pub write: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub connect_failed: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, ErrorCount>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            all: histogram(),
            read: histogram(),
            write: histogram(),
            connect: histogram(),
            connect_failed: 0,
            failed: 0,
            errors: BTreeMap::new(),
        }
    }

    pub fn ok(&mut self, kind: TxKind, latency: Duration) {
        let us = micros(latency);
        self.all.saturating_record(us);
        match kind {
            TxKind::Read => self.read.saturating_record(us),
            TxKind::Write => self.write.saturating_record(us),
            TxKind::Other => {}
        }
    }

    pub fn connected(&mut self, took: Duration) {
        self.connect.saturating_record(micros(took));
    }

    pub fn error(&mut self, class: &str, message: impl FnOnce() -> String) {
        let e = self.errors.entry(class.to_owned()).or_default();
        if e.count == 0 {
            e.sample = message();
        }
        e.count += 1;
    }

    pub fn merge(&mut self, other: Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.all.add(&other.all);
        let _ = self.read.add(&other.read);
        let _ = self.write.add(&other.write);
        let _ = self.connect.add(&other.connect);
        self.connect_failed += other.connect_failed;
        self.failed += other.failed;
        for (k, v) in other.errors {
            let e = self.errors.entry(k).or_default();
            if e.count == 0 {
                e.sample = v.sample;
            }
            e.count += v.count;
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectReport {
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// Wall time of the initial connect phase (all clients), seconds.
    pub phase_s: f64,
    /// Per-connection time (TCP + startup + authentication until ReadyForQuery).
    pub latency: Latency,
    /// Connections opened during the run (--connect-per-tx, or after a broken connection).
    pub during_run: Latency,
    pub during_run_failed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ProxyReport {
    pub pid: u32,
    /// CPU seconds the proxy spent while clients connected.
    pub cpu_s_connect: f64,
    /// CPU seconds the proxy spent in the measured window.
    pub cpu_s_run: f64,
    /// cpu_s_run per 1000 successful transactions, in milliseconds.
    pub cpu_ms_per_1000_tx: Option<f64>,
    /// Voluntary context switches (sleeps) per successful transaction in the window.
    pub sleeps_per_tx: Option<f64>,
    /// Involuntary context switches (preemptions) per successful transaction in the window.
    pub preemptions_per_tx: Option<f64>,
    /// VmRSS before the first client connected.
    pub rss_empty_kib: u64,
    /// VmRSS once every client had connected.
    pub rss_connected_kib: u64,
    /// VmRSS at the end of the measured window.
    pub rss_end_kib: u64,
    /// VmHWM at the end (peak since the proxy started).
    pub peak_rss_kib: u64,
    /// (rss_connected - rss_empty) / connected clients.
    pub rss_per_client_bytes: Option<f64>,
    /// Set when /proc could not be read (the process exited?).
    pub error: Option<String>,
}

impl ProxyReport {
    pub fn from_samples(
        pid: u32,
        samples: [Result<ProcSample, String>; 4],
        connected: u64,
        ok_tx: u64,
    ) -> ProxyReport {
        let mut report = ProxyReport {
            pid,
            ..ProxyReport::default()
        };
        let [before, connected_s, start, end] = samples;
        let (before, connected_s, start, end) = match (before, connected_s, start, end) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (a, b, c, d) => {
                report.error = [a, b, c, d].into_iter().find_map(|r| r.err());
                return report;
            }
        };
        report.cpu_s_connect = connected_s.cpu_s - before.cpu_s;
        report.cpu_s_run = end.cpu_s - start.cpu_s;
        report.cpu_ms_per_1000_tx =
            (ok_tx > 0).then(|| report.cpu_s_run * 1000.0 / (ok_tx as f64 / 1000.0));
        let per_tx =
            |a: u64, b: u64| (ok_tx > 0).then(|| b.saturating_sub(a) as f64 / ok_tx as f64);
        report.sleeps_per_tx = per_tx(start.switches.0, end.switches.0);
        report.preemptions_per_tx = per_tx(start.switches.1, end.switches.1);
        report.rss_empty_kib = before.rss_kib;
        report.rss_connected_kib = connected_s.rss_kib;
        report.rss_end_kib = end.rss_kib;
        report.peak_rss_kib = end.hwm_kib;
        report.rss_per_client_bytes = (connected > 0).then(|| {
            (connected_s.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / connected as f64
        });
        report
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub settings: serde_json::Value,
    pub connect: ConnectReport,
    /// Length of the measured window, seconds.
    pub measured_s: f64,
    pub transactions_ok: u64,
    pub transactions_failed: u64,
    pub tps: f64,
    pub latency: Latency,
    pub latency_read: Latency,
    pub latency_write: Latency,
    /// By SQLSTATE; `closed`, `io`, `timeout`, `connect`, `no-row` for failures without one.
    pub errors: BTreeMap<String, ErrorCount>,
    pub proxy: Option<ProxyReport>,
}

impl Report {
    /// `phase` holds the initial connect phase, `run` the measured window.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        label: String,
        settings: serde_json::Value,
        phase: Stats,
        run: Stats,
        attempted: u64,
        phase_time: Duration,
        measured: Duration,
        proxy: Option<ProxyReport>,
    ) -> Report {
        let ok = run.all.len();
        let measured_s = measured.as_secs_f64();
        let mut errors = phase.errors;
        for (k, v) in run.errors {
            let e = errors.entry(k).or_default();
            if e.count == 0 {
                e.sample = v.sample;
            }
            e.count += v.count;
        }
        Report {
            label,
            settings,
            connect: ConnectReport {
                attempted,
                ok: phase.connect.len(),
                failed: phase.connect_failed,
                phase_s: phase_time.as_secs_f64(),
                latency: Latency::of(&phase.connect),
                during_run: Latency::of(&run.connect),
                during_run_failed: run.connect_failed,
            },
            measured_s,
            transactions_ok: ok,
            transactions_failed: run.failed,
            tps: if measured_s > 0.0 {
                ok as f64 / measured_s
            } else {
                0.0
            },
            latency: Latency::of(&run.all),
            latency_read: Latency::of(&run.read),
            latency_write: Latency::of(&run.write),
            errors,
            proxy,
        }
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency;
        let _ = writeln!(s, "launch-load {}", self.label);
        let _ = writeln!(
            s,
            "  connect     {} ok, {} failed of {} in {:.2} s; per connection p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.connect.ok,
            self.connect.failed,
            self.connect.attempted,
            self.connect.phase_s,
            self.connect.latency.p50_ms,
            self.connect.latency.p99_ms,
            self.connect.latency.max_ms
        );
        if self.connect.during_run.count > 0 || self.connect.during_run_failed > 0 {
            let d = &self.connect.during_run;
            let _ = writeln!(
                s,
                "              {} connects during the run ({} failed): p50 {:.2} ms, p99 {:.2} ms",
                d.count, self.connect.during_run_failed, d.p50_ms, d.p99_ms
            );
        }
        let _ = writeln!(
            s,
            "  throughput  {:.1} tx/s ({} ok, {} failed in {:.1} s)",
            self.tps, self.transactions_ok, self.transactions_failed, self.measured_s
        );
        let _ = writeln!(
            s,
            "  latency ms  mean {:.3}  p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.mean_ms, l.p50_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        for (name, l) in [
            ("reads", &self.latency_read),
            ("writes", &self.latency_write),
        ] {
            if l.count > 0 {
                let _ = writeln!(
                    s,
                    "    {name:<9} {} ok; p50 {:.3}  p99 {:.3}  p99.9 {:.3}",
                    l.count, l.p50_ms, l.p99_ms, l.p999_ms
                );
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "  errors      none");
        } else {
            let _ = writeln!(s, "  errors");
            for (code, e) in &self.errors {
                let _ = writeln!(s, "    {code:<9} {:>8}  {}", e.count, e.sample);
            }
        }
        if let Some(p) = &self.proxy {
            if let Some(err) = &p.error {
                let _ = writeln!(s, "  proxy {}    {err}", p.pid);
            } else {
                let _ = writeln!(
                    s,
                    "  proxy {}  CPU {:.2} s in the run ({} ms per 1000 tx), {:.2} s while connecting",
                    p.pid,
                    p.cpu_s_run,
                    p.cpu_ms_per_1000_tx
                        .map_or("-".to_owned(), |v| format!("{v:.1}")),
                    p.cpu_s_connect
                );
                let per_tx = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
                let _ = writeln!(
                    s,
                    "              {} sleeps and {} preemptions per tx",
                    per_tx(p.sleeps_per_tx),
                    per_tx(p.preemptions_per_tx)
                );
                let _ = writeln!(
                    s,
                    "              RSS {:.1} MiB empty, {:.1} MiB connected ({} per client), peak {:.1} MiB",
                    p.rss_empty_kib as f64 / 1024.0,
                    p.rss_connected_kib as f64 / 1024.0,
                    p.rss_per_client_bytes
                        .map_or("-".to_owned(), |b| format!("{:.0} B", b)),
                    p.peak_rss_kib as f64 / 1024.0
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_summarises() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for i in 1..=1000u64 {
            a.ok(TxKind::Read, Duration::from_micros(i));
        }
        b.ok(TxKind::Write, Duration::from_millis(50));
        b.error("08P01", || "first".into());
        b.error("08P01", || "second".into());
        b.failed += 2;
        a.merge(b);
        let r = Report::new(
            "t".into(),
            serde_json::json!({}),
            Stats::new(),
            a,
            1,
            Duration::from_secs(1),
            Duration::from_secs(2),
            None,
        );
        assert_eq!(r.transactions_ok, 1001);
        assert_eq!(r.transactions_failed, 2);
        assert!((r.tps - 500.5).abs() < 1e-9);
        assert!((r.latency_read.p50_ms - 0.5).abs() < 0.01);
        assert!((r.latency.max_ms - 50.0).abs() < 0.1);
        assert_eq!(r.errors["08P01"].count, 2);
        assert_eq!(r.errors["08P01"].sample, "first");
        assert!(r.text().contains("08P01"));
    }

    #[test]
    fn proxy_figures() {
        let s = |cpu_s, rss_kib, hwm_kib, switches| {
            Ok(ProcSample {
                cpu_s,
                rss_kib,
                hwm_kib,
                switches,
            })
        };
        let p = ProxyReport::from_samples(
            1,
            [
                s(1.0, 1000, 1000, (5, 0)),
                s(3.0, 3000, 3000, (900, 40)),
                s(3.5, 3000, 3000, (1000, 50)),
                s(5.5, 3100, 3200, (3500, 2050)),
            ],
            1024,
            10_000,
        );
        assert!((p.cpu_s_connect - 2.0).abs() < 1e-9);
        assert!((p.cpu_s_run - 2.0).abs() < 1e-9);
        assert!((p.cpu_ms_per_1000_tx.unwrap() - 200.0).abs() < 1e-9);
        assert_eq!(p.peak_rss_kib, 3200);
        assert!((p.rss_per_client_bytes.unwrap() - 2000.0).abs() < 1e-9);
        assert!((p.sleeps_per_tx.unwrap() - 0.25).abs() < 1e-9);
        assert!((p.preemptions_per_tx.unwrap() - 0.2).abs() < 1e-9);
    }
}
