//! `launch-load plot`: a small self-contained SVG of latency against client count.
//!
//! Input: tab-separated lines `series  clients  p50_ms  p99_ms` (a `#` line is a comment).
//! Output: log-log axes, one colour per series, p99 solid with dots, p50 dashed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub clients: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Parses the TSV; series keep their first-appearance order.
pub fn parse(tsv: &str) -> Result<Vec<(String, Vec<Point>)>, String> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    for (n, line) in tsv.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 {
            return Err(format!("line {}: want 4 tab-separated fields", n + 1));
        }
        let num = |s: &str| -> Result<f64, String> {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("line {}: not a number: {s:?}", n + 1))
        };
        let p = Point {
            clients: num(f[1])?,
            p50_ms: num(f[2])?,
            p99_ms: num(f[3])?,
        };
        // Points without a measurement (failed runs) are skipped, not plotted at zero.
        if p.clients <= 0.0 || p.p50_ms <= 0.0 || p.p99_ms <= 0.0 {
            continue;
        }
        let name = f[0].to_owned();
        if !by.contains_key(&name) {
            order.push(name.clone());
        }
        by.entry(name).or_default().push(p);
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let mut pts = by.remove(&name).unwrap_or_default();
            pts.sort_by(|a, b| a.clients.total_cmp(&b.clients));
            (name, pts)
        })
        .collect())
}

const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Decade ticks 1, 2, 5 × 10^k covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo * 0.9999 && v <= hi * 1.0001 {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

fn label(v: f64) -> String {
    if v >= 1.0 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_owned()
    }
}

pub fn svg(title: &str, series: &[(String, Vec<Point>)]) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (70.0, 190.0, 40.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;

    let all: Vec<&Point> = series.iter().flat_map(|(_, p)| p.iter()).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        left + pw / 2.0,
        escape(title)
    );
    if all.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            w / 2.0,
            h / 2.0
        );
        return out;
    }
    let fold = |f: fn(&Point) -> f64, min: bool| {
        all.iter()
            .map(|p| f(p))
            .fold(if min { f64::INFINITY } else { 0.0 }, |a, b| {
                if min {
                    a.min(b)
                } else {
                    a.max(b)
                }
            })
    };
    // Pad the ranges to whole 1-2-5 steps so that the ticks frame the data.
    // x: the measured client counts are the ticks, with some room either side.
    let (cmin, cmax) = (fold(|p| p.clients, true), fold(|p| p.clients, false));
    let pad = if cmax / cmin < 2.0 { 3.0 } else { 1.6 };
    let (x_lo, x_hi) = (cmin / pad, cmax * pad);
    let mut x_ticks: Vec<f64> = all.iter().map(|p| p.clients).collect();
    x_ticks.sort_by(f64::total_cmp);
    x_ticks.dedup();
    let y_lo = 10f64.powf(fold(|p| p.p50_ms, true).log10().floor());
    let y_hi = 10f64.powf(fold(|p| p.p99_ms, false).log10().ceil());
    let y_hi = if y_hi <= y_lo { y_lo * 10.0 } else { y_hi };
    let sx = |v: f64| left + (v.log10() - x_lo.log10()) / (x_hi.log10() - x_lo.log10()) * pw;
    let sy = |v: f64| top + ph - (v.log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()) * ph;

    // Grid and axes.
    for t in x_ticks {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 16.0,
            label(t)
        );
    }
    for t in ticks(y_lo, y_hi) {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">clients (log scale)</text>"#,
        left + pw / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency, ms (log scale)</text>"#,
        top + ph / 2.0
    );

    // Series.
    for (k, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        for (pick, dash) in [
            (
                Box::new(|p: &Point| p.p99_ms) as Box<dyn Fn(&Point) -> f64>,
                "",
            ),
            (Box::new(|p: &Point| p.p50_ms), r#" stroke-dasharray="6 4""#),
        ] {
            let path: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", sx(p.clients), sy(pick(p))))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
            for p in pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} clients, {:.3} ms</title></circle>"#,
                    sx(p.clients),
                    sy(pick(p)),
                    escape(name),
                    p.clients,
                    pick(p)
                );
            }
        }
        let ly = top + 10.0 + k as f64 * 20.0;
        let lx = left + pw + 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(name)
        );
    }
    let ly = top + 20.0 + series.len() as f64 * 20.0;
    let lx = left + pw + 16.0;
    let _ = writeln!(
        out,
        r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="#555" stroke-width="2"/><text x="{:.1}" y="{:.1}">p99</text>"##,
        lx + 24.0,
        lx + 30.0,
        ly + 4.0
    );
    let _ = writeln!(
        out,
        r##"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#555" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}">p50</text>"##,
        ly + 20.0,
        lx + 24.0,
        ly + 20.0,
        lx + 30.0,
        ly + 24.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_draws() {
        let tsv = "# series\tclients\tp50\tp99\n\
                   direct\t50\t1.2\t3.4\n\
                   direct\t1000\t40\t90\n\
                   pgbouncer\t1000\t30\t60\n\
                   pgbouncer\t50\t1.5\t4\n\
                   launch-proxy\t50\t0\t0\n";
        let s = parse(tsv).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].0, "pgbouncer");
        assert_eq!(s[1].1[0].clients, 50.0);
        let out = svg("latency <&>", &s);
        assert!(out.starts_with("<svg"));
        assert!(out.trim_end().ends_with("</svg>"));
        assert!(out.contains("latency &lt;&amp;&gt;"));
        assert_eq!(out.matches("<polyline").count(), 4);
        assert!(parse("a\tb\tc\td").is_err());
        assert!(svg("empty", &[]).contains("no data"));
    }

    #[test]
    fn tick_marks() {
        assert_eq!(
            ticks(10.0, 1000.0),
            vec![10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
        );
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(200.0), "200");
    }
}
