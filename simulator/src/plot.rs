//! The run as a picture: one self-contained HTML page (inline SVG, no scripts, no
//! external assets) with the fleet over time — cabinets connected, events waiting in
//! journals, pickups per second, and each assignment's latency when it completed; for a
//! timed `[day]`, how far the run kept up with simulated time.

use std::fmt::Write as _;

use crate::fleet::FleetReport;

const W: f64 = 900.0;
const H: f64 = 180.0;
const PAD: f64 = 48.0;

/// One chart: a title, the series as (t, y) points, drawn as a line or as dots.
fn chart(out: &mut String, title: &str, unit: &str, points: &[(f64, f64)], t_max: f64, dots: bool) {
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0);
    let x = |t: f64| PAD + (t / t_max.max(1.0)) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - (v / y_max) * (H - PAD);
    let _ = write!(
        out,
        "<figure><figcaption>{title}</figcaption><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\">\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"/>\
         <line x1=\"{PAD}\" y1=\"{t}\" x2=\"{PAD}\" y2=\"{b}\" class=\"axis\"/>\
         <text x=\"4\" y=\"{t}\">{y_max:.0} {unit}</text><text x=\"4\" y=\"{b}\">0</text>\
         <text x=\"{r}\" y=\"{H}\" text-anchor=\"end\">{t_max:.0} s</text>",
        b = y(0.0),
        t = y(y_max) + 4.0,
        r = W - PAD,
    );
    if dots {
        for (t, v) in points {
            let _ = write!(out, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\"/>", x(*t), y(*v));
        }
    } else if !points.is_empty() {
        let path: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(out, "<polyline points=\"{}\"/>", path.join(" "));
    }
    out.push_str("</svg></figure>\n");
}

/// The page for a run's report.
pub fn html(report: &FleetReport) -> String {
    let t_max = report.timeline.last().map_or(1.0, |s| s.t_s);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Simulator run: {name}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:960px;color:#111}}\
         svg{{width:100%;height:auto;background:#fafafa}}polyline{{fill:none;stroke:#1f5fbf;stroke-width:2}}\
         circle{{fill:#b3261e}}.axis{{stroke:#555}}text{{font-size:12px;fill:#333}}\
         figcaption{{font-weight:600;margin:1em 0 .3em}}td,th{{padding:.2em .8em;text-align:left}}</style></head><body>\
         <h1>Simulator run: {name}</h1><table>\
         <tr><th>cabinets</th><td>{cab} ({conn} connected, all in {sec:.1} s)</td></tr>\
         <tr><th>events made / acked / lost / duplicated</th><td>{made} / {acked} / {lost} / {dup}</td></tr>\
         <tr><th>parcels picked up</th><td>{picked}</td></tr>\
         <tr><th>assignment → cabinet p50 / p99 / max</th><td>{a50:.0} / {a99:.0} / {amax:.0} ms</td></tr>\
         <tr><th>code → cabinet p50 / p99 / max</th><td>{c50:.0} / {c99:.0} / {cmax:.0} ms</td></tr>\
         <tr><th>errors</th><td>{errs}</td></tr></table>",
        name = report.scenario,
        cab = report.cabinets,
        conn = report.connected,
        sec = report.seconds_to_all_connected,
        made = report.events_made,
        acked = report.events_acked,
        lost = report.events_lost,
        dup = report.events_duplicated,
        picked = report.parcels_picked_up,
        a50 = report.assignment_to_cabinet.p50_ms,
        a99 = report.assignment_to_cabinet.p99_ms,
        amax = report.assignment_to_cabinet.max_ms,
        c50 = report.code_to_cabinet.p50_ms,
        c99 = report.code_to_cabinet.p99_ms,
        cmax = report.code_to_cabinet.max_ms,
        errs = report.errors.len(),
    );
    if let Some(d) = &report.day {
        let _ = write!(
            out,
            "<table><tr><th>simulated day</th><td>{h:.1} h at ×{speed} ({real:.0} s real, {planned:.0} s planned)</td></tr>\
             <tr><th>parcels arrived / refused (cabinet full) / picked up / no-shows</th><td>{a} / {r} / {p} / {n}</td></tr>\
             <tr><th>lateness p50 / p99 / max</th><td>{l50:.2} / {l99:.2} / {lmax:.2} s ({kept})</td></tr></table>",
            h = d.simulated_hours,
            speed = d.speed,
            real = d.real_seconds,
            planned = d.real_seconds_planned,
            a = d.parcels_arrived,
            r = d.parcels_refused_no_room,
            p = d.parcels_picked_up,
            n = d.no_shows,
            l50 = d.lateness_p50_s,
            l99 = d.lateness_p99_s,
            lmax = d.lateness_max_s,
            kept = if d.kept_up { "kept up" } else { "fell behind" },
        );
    }
    out.push('\n');
    let series = |f: &dyn Fn(&crate::fleet::Sample) -> f64| -> Vec<(f64, f64)> {
        report.timeline.iter().map(|s| (s.t_s, f(s))).collect()
    };
    chart(&mut out, "Cabinets connected", "", &series(&|s| s.connected as f64), t_max, false);
    chart(&mut out, "Events waiting in journals", "", &series(&|s| s.journal_depth as f64), t_max, false);
    let per_second: Vec<(f64, f64)> = report
        .timeline
        .windows(2)
        .map(|w| (w[1].t_s, (w[1].picked_up - w[0].picked_up) as f64 / (w[1].t_s - w[0].t_s).max(1e-3)))
        .collect();
    chart(&mut out, "Pickups per second", "/s", &per_second, t_max, false);
    let rss: Vec<(f64, f64)> = report.timeline.iter().filter_map(|s| Some((s.t_s, s.server_rss_mib?))).collect();
    if !rss.is_empty() {
        chart(&mut out, "fleet-server resident memory", "MiB", &rss, t_max, false);
    }
    let health: Vec<(f64, f64)> = report.timeline.iter().filter_map(|s| Some((s.t_s, s.healthz_ms?))).collect();
    chart(&mut out, "/healthz round trip", "ms", &health, t_max, true);
    let latencies: Vec<(f64, f64)> =
        report.timeline.iter().flat_map(|s| s.assignment_ms.iter().map(move |ms| (s.t_s, *ms))).collect();
    chart(&mut out, "Assignment → cabinet latency, by completion time", "ms", &latencies, t_max, true);
    out.push_str("</body></html>\n");
    out
}
