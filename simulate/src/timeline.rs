//! The timeline: one self-contained HTML page (inline CSS and SVG, no
//! script, nothing fetched) with membership, partitions and faults,
//! placement, events per edge, hop latency and re-routes on one time axis,
//! and the first violation marked across all of it. Deterministic like the
//! report.

use std::fmt::Write as _;

use crate::report::{Report, Timeline};

const W: f64 = 1000.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const PALETTE: [&str; 8] = [
    "#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#475569",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Chart<'a> {
    t: &'a Timeline,
    h: f64,
}

impl Chart<'_> {
    fn x(&self, ms: u64) -> f64 {
        let end = self.t.end_ms.max(1) as f64;
        LEFT + (W - LEFT - RIGHT) * (ms as f64 / end)
    }

    fn y(&self, v: f64, max: f64) -> f64 {
        let top = 12.0;
        let bottom = self.h - 22.0;
        bottom - (bottom - top) * (v / max.max(1.0))
    }

    fn open(&self, o: &mut String, title: &str, id: &str) {
        let _ = writeln!(o, "<section id=\"{id}\"><h2>{}</h2>", esc(title));
        let _ = writeln!(
            o,
            "<svg viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\">",
            h = self.h,
            t = esc(title)
        );
        // Partitions shade every chart.
        for s in self.t.spans.iter().filter(|s| s.kind == "partition") {
            let x0 = self.x(s.start);
            let x1 = self.x(s.end.unwrap_or(self.t.end_ms));
            let _ = writeln!(
                o,
                "<rect class=\"partition\" x=\"{x0:.1}\" y=\"0\" width=\"{:.1}\" height=\"{:.1}\"><title>partition {}</title></rect>",
                (x1 - x0).max(1.0),
                self.h - 20.0,
                esc(&s.label)
            );
        }
        self.axis(o);
    }

    fn axis(&self, o: &mut String) {
        let end = self.t.end_ms;
        let step = nice_step(end);
        let base = self.h - 20.0;
        let _ = writeln!(
            o,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\"/>",
            W - RIGHT
        );
        let mut t = 0;
        while t <= end {
            let x = self.x(t);
            let _ = writeln!(
                o,
                "<text class=\"tick\" x=\"{x:.1}\" y=\"{}\">{}</text>",
                base + 14.0,
                label_time(t)
            );
            t += step;
        }
    }

    fn close(&self, o: &mut String) {
        if let Some((at, _)) = &self.t.violation {
            let x = self.x(*at);
            let _ = writeln!(
                o,
                "<line class=\"violation\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{}\"/>",
                self.h - 20.0
            );
        }
        o.push_str("</svg></section>\n");
    }

    fn line(&self, o: &mut String, points: &[(u64, f64)], max: f64, color: &str, name: &str) {
        if points.is_empty() {
            return;
        }
        let d: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", self.x(*t), self.y(*v, max)))
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"><title>{}</title></polyline>",
            d.join(" "),
            esc(name)
        );
    }

    fn scale(&self, o: &mut String, max: f64, unit: &str) {
        let _ = writeln!(
            o,
            "<text class=\"scale\" x=\"{}\" y=\"{:.1}\">{} {}</text><text class=\"scale\" x=\"{}\" y=\"{:.1}\">0</text>",
            LEFT - 6.0,
            self.y(max, max) + 4.0,
            fmt_num(max),
            esc(unit),
            LEFT - 6.0,
            self.y(0.0, max) + 4.0
        );
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn nice_step(end: u64) -> u64 {
    for s in [
        1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
        3_600_000,
    ] {
        if end / s <= 10 {
            return s;
        }
    }
    7_200_000
}

fn label_time(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

fn legend(o: &mut String, items: &[(String, &str)]) {
    o.push_str("<p class=\"legend\">");
    for (name, color) in items {
        let _ = write!(
            o,
            "<span><i style=\"background:{color}\"></i>{}</span>",
            esc(name)
        );
    }
    o.push_str("</p>\n");
}

/// The timeline of `report`'s run as one HTML page.
pub fn html(t: &Timeline, report: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>",
        esc(&t.title)
    );
    o.push_str(
        "<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111827;max-width:1040px}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 4px}\
.meta{color:#4b5563}.pass{color:#15803d;font-weight:600}.fail{color:#b91c1c;font-weight:600}\
.banner{background:#fef2f2;border:1px solid #fca5a5;padding:8px 12px;margin:12px 0}\
svg{display:block;background:#fafafa;border:1px solid #e5e7eb}\
.axis{stroke:#9ca3af}.tick{font-size:10px;fill:#6b7280;text-anchor:middle}\
.scale{font-size:10px;fill:#6b7280;text-anchor:end}\
.partition{fill:#fde68a;opacity:.45}.violation{stroke:#dc2626;stroke-width:2;stroke-dasharray:4 3}\
.lane{font-size:11px;fill:#374151}.fault{opacity:.8}\
.legend span{margin-right:14px;white-space:nowrap}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}\
table{border-collapse:collapse;margin-top:6px}td,th{border:1px solid #e5e7eb;padding:2px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}</style></head><body>\n",
    );
    let _ = writeln!(o, "<h1>{}</h1>", esc(&t.title));
    let _ = writeln!(
        o,
        "<p class=\"meta\">{} nodes ({} over the run) · {} s virtual · {} · verdict <span class=\"{}\">{}</span></p>",
        report.nodes,
        report.nodes_total,
        report.virtual_ms / 1000,
        esc(&report.tool),
        if report.passed() { "pass" } else { "fail" },
        if report.passed() { "PASS" } else { "FAIL" }
    );
    if let Some(v) = &report.violation {
        let _ = writeln!(
            o,
            "<div class=\"banner\" id=\"violation\"><b>First violation: {}</b> at {:.3} s — {}</div>",
            esc(&v.invariant),
            v.at_ms as f64 / 1000.0,
            esc(&v.detail)
        );
    }
    let _ = writeln!(
        o,
        "<p class=\"meta\">reproduce: <code>{}</code></p>",
        esc(&report.reproduce)
    );

    // Membership.
    let c = Chart { t, h: 180.0 };
    let max = t.samples.iter().map(|s| s.live).max().unwrap_or(1) as f64;
    c.open(&mut o, "Membership", "membership");
    c.scale(&mut o, max, "nodes");
    let live: Vec<(u64, f64)> = t.samples.iter().map(|s| (s.t, s.live as f64)).collect();
    let seeing: Vec<(u64, f64)> = t.samples.iter().map(|s| (s.t, s.seeing as f64)).collect();
    c.line(&mut o, &live, max, PALETTE[0], "live nodes");
    c.line(
        &mut o,
        &seeing,
        max,
        PALETTE[2],
        "fewest alive as seen by a checked node",
    );
    c.close(&mut o);
    legend(
        &mut o,
        &[
            ("live nodes".into(), PALETTE[0]),
            (
                "fewest alive, as one checked node sees it".into(),
                PALETTE[2],
            ),
            ("partition".into(), "#fde68a"),
        ],
    );

    // Faults.
    let kinds: Vec<String> = {
        let mut k: Vec<String> = t.spans.iter().map(|s| s.kind.clone()).collect();
        k.sort();
        k.dedup();
        k
    };
    let c = Chart {
        t,
        h: 40.0 + 22.0 * kinds.len().max(1) as f64,
    };
    c.open(&mut o, "Faults and applies", "faults");
    for (lane, kind) in kinds.iter().enumerate() {
        let y = 10.0 + 22.0 * lane as f64;
        let color = PALETTE[lane % PALETTE.len()];
        let _ = writeln!(
            o,
            "<text class=\"lane\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y + 12.0,
            esc(kind)
        );
        for s in t.spans.iter().filter(|s| &s.kind == kind) {
            let x0 = c.x(s.start);
            let x1 = c.x(s.end.unwrap_or(t.end_ms));
            let _ = writeln!(
                o,
                "<rect class=\"fault\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"16\" fill=\"{color}\"><title>{} {} at {:.1} s</title></rect>",
                (x1 - x0).max(3.0),
                esc(kind),
                esc(&s.label),
                s.start as f64 / 1000.0
            );
        }
    }
    c.close(&mut o);

    // Placement.
    let c = Chart { t, h: 150.0 };
    let max = t
        .samples
        .iter()
        .map(|s| s.running.max(s.moves as usize))
        .max()
        .unwrap_or(1) as f64;
    c.open(
        &mut o,
        "Placement: replicas running, and moves",
        "placement",
    );
    c.scale(&mut o, max, "");
    let running: Vec<(u64, f64)> = t.samples.iter().map(|s| (s.t, s.running as f64)).collect();
    c.line(&mut o, &running, max, PALETTE[1], "replicas running");
    for s in t.samples.iter().filter(|s| s.moves > 0) {
        let x = c.x(s.t);
        let y = c.y(s.moves as f64, max);
        let _ = writeln!(
            o,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"3\" height=\"{:.1}\" fill=\"{}\"><title>{} placement moves at {:.1} s</title></rect>",
            x - 1.5,
            c.y(0.0, max) - y,
            PALETTE[3],
            s.moves,
            s.t as f64 / 1000.0
        );
    }
    c.close(&mut o);
    legend(
        &mut o,
        &[
            ("replicas running".into(), PALETTE[1]),
            ("branes moved".into(), PALETTE[3]),
        ],
    );

    // Events per edge.
    let mut edges: Vec<String> = t
        .samples
        .iter()
        .flat_map(|s| s.edges.keys().cloned())
        .collect();
    edges.sort();
    edges.dedup();
    let c = Chart { t, h: 180.0 };
    let per_s = |s: &crate::report::Sample, e: &str, prev: u64| -> f64 {
        let dt = s.t.saturating_sub(prev).max(1) as f64 / 1000.0;
        s.edges.get(e).copied().unwrap_or(0) as f64 / dt
    };
    let mut max: f64 = 1.0;
    for e in &edges {
        let mut prev = 0;
        for s in &t.samples {
            max = max.max(per_s(s, e, prev));
            prev = s.t;
        }
    }
    c.open(&mut o, "Events processed per second, per edge", "events");
    c.scale(&mut o, max, "/s");
    let mut items = Vec::new();
    for (k, e) in edges.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let mut prev = 0;
        let pts: Vec<(u64, f64)> = t
            .samples
            .iter()
            .map(|s| {
                let v = per_s(s, e, prev);
                prev = s.t;
                (s.t, v)
            })
            .collect();
        c.line(&mut o, &pts, max, color, e);
        items.push((e.clone(), color));
    }
    c.close(&mut o);
    legend(&mut o, &items);

    // Latency.
    let c = Chart { t, h: 160.0 };
    let max = t.samples.iter().map(|s| s.p99).max().unwrap_or(1).max(1) as f64;
    c.open(
        &mut o,
        "Hop latency (sender's commit to receiver's), ms",
        "latency",
    );
    c.scale(&mut o, max, "ms");
    let busy: Vec<&crate::report::Sample> =
        t.samples.iter().filter(|s| !s.edges.is_empty()).collect();
    let p50: Vec<(u64, f64)> = busy.iter().map(|s| (s.t, s.p50 as f64)).collect();
    let p99: Vec<(u64, f64)> = busy.iter().map(|s| (s.t, s.p99 as f64)).collect();
    c.line(&mut o, &p50, max, PALETTE[0], "P50");
    c.line(&mut o, &p99, max, PALETTE[5], "P99");
    c.close(&mut o);
    legend(
        &mut o,
        &[("P50".into(), PALETTE[0]), ("P99".into(), PALETTE[5])],
    );

    // Tables.
    o.push_str("<section id=\"edges\"><h2>Edges</h2><table><tr><th>edge</th><th>processed</th><th>P50 ms</th><th>P99 ms</th><th>max ms</th></tr>\n");
    for e in &report.events.edges {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.edge),
            e.processed,
            e.p50_ms,
            e.p99_ms,
            e.max_ms
        );
    }
    o.push_str("</table>");
    if !t.reroute_ms.is_empty() {
        let list: Vec<String> = t.reroute_ms.iter().map(|r| format!("{r} ms")).collect();
        let _ = writeln!(
            o,
            "<p id=\"reroutes\">Time to re-route after a crash: {}</p>",
            list.join(", ")
        );
    }
    o.push_str("</section>\n<section id=\"invariants\"><h2>Invariants</h2><table>\n");
    for i in &report.invariants {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&i.name),
            esc(&i.status)
        );
    }
    o.push_str("</table></section>\n<section id=\"coverage\"><h2>Coverage</h2><table>\n");
    for (k, v) in &report.coverage {
        let _ = writeln!(o, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    o.push_str("</table></section>\n</body></html>\n");
    o
}
