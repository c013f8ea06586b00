//! The throughput plot of `understudy bench --failover`, as a hand-written SVG document:
//! axes with ticks, one polyline per target (transactions per second, computed per time
//! bucket), a dashed vertical line at every kill of the primary, and a legend.

use std::fmt::Write;

/// Plot size and margins, in SVG user units.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// One target's line.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour (an SVG colour).
    pub color: &'static str,
    /// Transactions per second in consecutive buckets, starting at 0 s.
    pub tps: Vec<f64>,
    /// When the primary was killed, in seconds since the start.
    pub kills: Vec<f64>,
}

/// Renders the plot: `bucket_s` seconds per point, `seconds` on the time axis.
pub fn throughput_chart(title: &str, bucket_s: f64, seconds: f64, series: &[Series]) -> String {
    let peak = series
        .iter()
        .flat_map(|s| s.tps.iter().copied())
        .fold(0.0, f64::max);
    let y_max = nice_ceiling(peak.max(1.0));
    let x_max = seconds.max(bucket_s);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t.clamp(0.0, x_max) / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v.clamp(0.0, y_max) / y_max * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and tick labels.
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{lx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            y = y(v),
            x2 = WIDTH - RIGHT,
            lx = LEFT - 6.0,
            ty = y(v) + 4.0,
        );
    }
    let step = tick_step(x_max);
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{y1}" stroke="#999"/><text x="{px:.1}" y="{ty}" text-anchor="middle">{t}</text>"##,
            px = x(t),
            y0 = TOP + plot_h,
            y1 = TOP + plot_h + 5.0,
            ty = TOP + plot_h + 19.0,
        );
        t += step;
    }
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT} {TOP}V{b}H{r}" fill="none" stroke="black"/><text x="{cx}" y="{xl}" text-anchor="middle">seconds since the start of the run</text><text transform="translate(16 {cy}) rotate(-90)" text-anchor="middle">transactions per second (per {ms} ms)</text>"#,
        b = TOP + plot_h,
        r = WIDTH - RIGHT,
        cx = LEFT + plot_w / 2.0,
        xl = HEIGHT - 10.0,
        cy = TOP + plot_h / 2.0,
        ms = (bucket_s * 1000.0).round(),
    );
    for (i, s) in series.iter().enumerate() {
        for &kill in &s.kills {
            let _ = writeln!(
                svg,
                r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{b}" stroke="{c}" stroke-dasharray="5 4" stroke-width="1.5"/>"#,
                px = x(kill),
                b = TOP + plot_h,
                c = s.color,
            );
        }
        let points: Vec<String> = s
            .tps
            .iter()
            .enumerate()
            .map(|(k, &v)| format!("{:.1},{:.1}", x(k as f64 * bucket_s), y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.2"/>"#,
            points.join(" "),
            s.color
        );
        legend(&mut svg, i, s.color, "", &s.name);
    }
    legend(
        &mut svg,
        series.len(),
        "#555",
        r#" stroke-dasharray="5 4""#,
        "kill -9 of the primary",
    );
    svg.push_str("</svg>\n");
    svg
}

/// Legend entry `row`: a line sample in `color` (with `extra` attributes) and `text`.
fn legend(svg: &mut String, row: usize, color: &str, extra: &str, text: &str) {
    let y = TOP + 14.0 + 18.0 * row as f64;
    let x = WIDTH - RIGHT - 200.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="3"{extra}/><text x="{tx}" y="{ty}">{text}</text>"#,
        x2 = x + 28.0,
        tx = x + 34.0,
        ty = y + 4.0,
        text = escape(text),
    );
}

/// The smallest of 1, 2, 2.5, 3, 4, 5 × 10^k that is at least `v` (the value axis).
fn nice_ceiling(v: f64) -> f64 {
    ceiling_among(v, &[1.0, 2.0, 2.5, 3.0, 4.0, 5.0])
}

/// Seconds between time-axis ticks: 1, 2 or 5 × 10^k, about ten ticks.
fn tick_step(seconds: f64) -> f64 {
    ceiling_among((seconds / 10.0).max(0.1), &[1.0, 2.0, 5.0])
}

/// The smallest of `steps` × 10^k that is at least `v`.
fn ceiling_among(v: f64, steps: &[f64]) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    steps
        .iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * magnitude)
}

/// Escapes text for SVG content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_line_per_target_and_a_mark_per_kill() {
        let svg = throughput_chart(
            "tpcb <like>",
            0.1,
            3.0,
            &[
                Series {
                    name: "understudy".into(),
                    color: "#1f77b4",
                    tps: vec![1000.0, 0.0, 900.0],
                    kills: vec![0.1, 2.0],
                },
                Series {
                    name: "PgBouncer".into(),
                    color: "#ff7f0e",
                    tps: vec![1100.0, 0.0],
                    kills: vec![1.0],
                },
            ],
        );
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Three kills and the legend's sample.
        assert_eq!(svg.matches("stroke-dasharray").count(), 4);
        assert!(svg.contains("tpcb &lt;like&gt;"));
        // 1100 TPS peak: the axis goes to 2000.
        assert!(svg.contains(">2000</text>"));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1100.0), 2000.0);
        assert_eq!(nice_ceiling(2100.0), 2500.0);
        assert_eq!(nice_ceiling(4999.0), 5000.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(2650.0), 3000.0);
        assert_eq!(tick_step(30.0), 5.0);
        assert_eq!(tick_step(60.0), 10.0);
    }
}
