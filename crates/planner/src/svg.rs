//! Inline SVG scatter plots with logarithmic axes, written by hand so the HTML report needs no
//! script and no network.

use std::fmt::Write;

/// A logarithmic axis from `min` to `max` (both positive).
pub(crate) struct Axis {
    pub label: String,
    pub min: f64,
    pub max: f64,
}

/// A marked point; `open` draws a hollow marker (the value is a lower bound).
pub(crate) struct Point {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub color: &'static str,
    pub title: String,
    pub open: bool,
}

/// A shaded box in data coordinates (infinite ends are clipped to the plot).
pub(crate) struct Region {
    pub x0: f64,
    pub x1: f64,
    pub y0: f64,
    pub y1: f64,
    pub color: &'static str,
    pub label: String,
    pub dashed: bool,
}

/// A threshold line across the plot.
pub(crate) struct Rule {
    pub vertical: bool,
    pub at: f64,
    pub label: String,
}

const W: f64 = 920.0;
const H: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 60.0;
/// Strip points with their x position and row.
type StripLayout<'p> = Vec<(&'p Point, f64, usize)>;

/// Height of one row of the strip under the plot (points with no y value).
const STRIP_ROW: f64 = 16.0;

/// Rough width of a label in 11px sans-serif.
fn label_width(label: &str) -> f64 {
    label.chars().count() as f64 * 6.2
}

fn overlaps(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

fn marker(s: &mut String, cx: f64, cy: f64, p: &Point, label: &str, lx: f64, ly: f64) {
    let fill = if p.open { "#ffffff" } else { p.color };
    let _ = write!(
        s,
        "<g class=\"point\"><circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"{fill}\" stroke=\"{}\" stroke-width=\"2\"><title>{}</title></circle>\
         <text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"11\">{}</text></g>",
        p.color,
        escape(&p.title),
        escape(label)
    );
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt_tick(v: f64) -> String {
    if v >= 1000.0 {
        let s = format!("{v:.0}");
        // Thousands separators for readability.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        crate::interval::short(v)
    }
}

/// A scatter plot; `strip` holds points with a known x but no y, drawn in a band under the axis.
pub(crate) struct Plot<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x: Axis,
    pub y: Axis,
    pub regions: &'a [Region],
    pub rules: &'a [Rule],
    pub points: &'a [Point],
    pub strip: Option<(&'a str, &'a [Point])>,
    /// Colour swatches and what they mean, drawn under the title.
    pub legend: &'a [(&'a str, &'a str)],
}

pub(crate) fn scatter(plot: &Plot<'_>) -> String {
    let Plot { id, title, x, y, regions, rules, points, strip, legend } = plot;
    let strip = *strip;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let px = |v: f64| LEFT + (v.clamp(x.min, x.max).ln() - x.min.ln()) / (x.max.ln() - x.min.ln()) * pw;
    // Strip points go on the first row where their label does not run into another.
    let strip_layout: Option<(&str, StripLayout<'_>)> = strip.map(|(label, pts)| {
        let mut sorted: Vec<&Point> = pts.iter().collect();
        sorted.sort_by(|a, b| a.x.total_cmp(&b.x));
        let mut row_end: Vec<f64> = Vec::new();
        let mut out = Vec::new();
        for p in sorted {
            let cx = px(p.x);
            let level = match row_end.iter().position(|&end| cx - 6.0 > end) {
                Some(l) => l,
                None => {
                    row_end.push(f64::NEG_INFINITY);
                    row_end.len() - 1
                }
            };
            row_end[level] = cx + 9.0 + label_width(&p.label);
            out.push((p, cx, level));
        }
        (label, out)
    });
    let strip_h = strip_layout.as_ref().map_or(0.0, |(_, l)| {
        let rows = l.iter().map(|(_, _, level)| level + 1).max().unwrap_or(1);
        16.0 + rows as f64 * STRIP_ROW
    });
    let height = H + strip_h;
    let py = |v: f64| TOP + ph - (v.clamp(y.min, y.max).ln() - y.min.ln()) / (y.max.ln() - y.min.ln()) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" \
         role=\"img\" aria-label=\"{}\" font-family=\"sans-serif\" font-size=\"12\">",
        escape(title)
    );
    let _ = write!(s, "<title>{}</title>", escape(title));
    let _ = write!(s, "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{height}\" fill=\"#ffffff\"/>");
    let _ = write!(s, "<text x=\"{}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>", LEFT, escape(title));
    let mut lx = LEFT;
    for (color, text) in legend.iter() {
        let _ = write!(s, "<rect x=\"{lx:.1}\" y=\"28\" width=\"10\" height=\"10\" fill=\"{color}\"/>");
        let _ = write!(s, "<text x=\"{:.1}\" y=\"37\" font-size=\"11\">{}</text>", lx + 14.0, escape(text));
        lx += 24.0 + label_width(text);
    }
    for r in regions.iter() {
        let (x0, x1) = (px(r.x0.max(x.min)), px(r.x1.min(x.max)));
        let (y0, y1) = (py(r.y1.min(y.max)), py(r.y0.max(y.min)));
        if x1 <= x0 || y1 <= y0 {
            continue;
        }
        let dash = if r.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
        let _ = write!(
            s,
            "<rect class=\"region\" x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" fill-opacity=\"0.16\" \
             stroke=\"{}\" stroke-opacity=\"0.6\"{dash}><title>{}</title></rect>",
            x1 - x0,
            y1 - y0,
            r.color,
            r.color,
            escape(&r.label)
        );
        if x1 - x0 >= label_width(&r.label) + 8.0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\" font-size=\"11\">{}</text>",
                x0 + 4.0,
                y0 + 14.0,
                r.color,
                escape(&r.label)
            );
        }
    }
    // Decade grid and ticks.
    let decades = |a: &Axis| {
        let mut v = 10f64.powf(a.min.log10().floor());
        let mut out = Vec::new();
        while v <= a.max * 1.0001 {
            if v >= a.min * 0.9999 {
                out.push(v);
            }
            v *= 10.0;
        }
        out
    };
    for v in decades(x) {
        let p = px(v);
        let _ = write!(s, "<line x1=\"{p:.1}\" y1=\"{TOP}\" x2=\"{p:.1}\" y2=\"{}\" stroke=\"#dddddd\"/>", TOP + ph);
        let _ = write!(s, "<text x=\"{p:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>", TOP + ph + 16.0, fmt_tick(v));
    }
    for v in decades(y) {
        let p = py(v);
        let _ = write!(s, "<line x1=\"{LEFT}\" y1=\"{p:.1}\" x2=\"{}\" y2=\"{p:.1}\" stroke=\"#dddddd\"/>", LEFT + pw);
        let _ = write!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", LEFT - 6.0, p + 4.0, fmt_tick(v));
    }
    let _ =
        write!(s, "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333333\"/>");
    for r in rules.iter() {
        if r.vertical {
            let p = px(r.at);
            let _ = write!(
                s,
                "<line class=\"threshold\" x1=\"{p:.1}\" y1=\"{TOP}\" x2=\"{p:.1}\" y2=\"{}\" stroke=\"#b00020\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>",
                TOP + ph
            );
            let _ = write!(s, "<text x=\"{:.1}\" y=\"{}\" fill=\"#b00020\" font-size=\"11\" transform=\"rotate(-90 {:.1} {})\">{}</text>", p - 4.0, TOP + ph - 4.0, p - 4.0, TOP + ph - 4.0, escape(&r.label));
        } else {
            let p = py(r.at);
            let _ = write!(
                s,
                "<line class=\"threshold\" x1=\"{LEFT}\" y1=\"{p:.1}\" x2=\"{}\" y2=\"{p:.1}\" stroke=\"#b00020\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>",
                LEFT + pw
            );
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" fill=\"#b00020\" font-size=\"11\" text-anchor=\"end\">{}</text>",
                LEFT + pw - 4.0,
                p - 4.0,
                escape(&r.label)
            );
        }
    }
    // Points at the same place share one marker and one label.
    let mut merged: Vec<(f64, f64, &Point, String)> = Vec::new();
    for p in points.iter() {
        let (cx, cy) = (px(p.x), py(p.y));
        match merged.iter_mut().find(|(x, y, _, _)| (x - cx).abs() < 0.5 && (y - cy).abs() < 0.5) {
            Some(m) => {
                m.3.push_str(", ");
                m.3.push_str(&p.label);
            }
            None => merged.push((cx, cy, p, p.label.clone())),
        }
    }
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut placed: Vec<[f64; 4]> = Vec::new();
    for (cx, cy, p, label) in &merged {
        let w = label_width(label);
        // Try right-above, right-below, left-above, left-below; keep the first free spot.
        let spots = [(cx + 7.0, cy - 6.0), (cx + 7.0, cy + 14.0), (cx - 7.0 - w, cy - 6.0), (cx - 7.0 - w, cy + 14.0)];
        let (lx, ly) = spots
            .iter()
            .copied()
            .find(|&(lx, ly)| !placed.iter().any(|b| overlaps(b, &[lx, ly - 11.0, lx + w, ly + 2.0])))
            .unwrap_or(spots[0]);
        placed.push([lx, ly - 11.0, lx + w, ly + 2.0]);
        marker(&mut s, *cx, *cy, p, label, lx, ly);
    }
    if let Some((label, layout)) = &strip_layout {
        let top = H - 10.0;
        let _ = write!(
            s,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{pw}\" height=\"{:.1}\" fill=\"#f4f4f4\" stroke=\"#999999\"/>",
            strip_h - 6.0
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">{}</text>",
            LEFT - 6.0,
            top + 16.0,
            escape(label)
        );
        for (p, cx, level) in layout {
            let cy = top + 12.0 + *level as f64 * STRIP_ROW;
            marker(&mut s, *cx, cy, p, &p.label, cx + 7.0, cy + 4.0);
        }
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>",
        LEFT + pw / 2.0,
        TOP + ph + 40.0,
        escape(&x.label)
    );
    let _ = write!(
        s,
        "<text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 18 {:.1})\">{}</text>",
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(&y.label)
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_well_formed_and_escaped() {
        let x = Axis { label: "TPP".into(), min: 1.0, max: 1e5 };
        let y = Axis { label: "PD <mm2>".into(), min: 0.01, max: 100.0 };
        let pts =
            [Point { x: 15830.0, y: 19.4, label: "h100 & co".into(), color: "#c00", title: "t".into(), open: false }];
        let rules = [Rule { vertical: true, at: 4800.0, label: "4800".into() }];
        let svg = scatter(&Plot {
            id: "p",
            title: "map",
            x,
            y,
            regions: &[],
            rules: &rules,
            points: &pts,
            strip: None,
            legend: &[],
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("h100 &amp; co") && svg.contains("PD &lt;mm2&gt;"));
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("class=\"threshold\""));
        assert_eq!(fmt_tick(100000.0), "100,000");
    }
}
