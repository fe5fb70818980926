//! The trial timeline chart of the HTML report, drawn by plotters as inline SVG (no font files: text is `<text>`
//! in the viewer's sans-serif). Top: operations per 100 ms, stacked ok / failed / unknown. Bottom: latency p50
//! and p99 of the ok operations per 100 ms. Both share the time axis (seconds from the trial's fault), with the
//! fault window shaded and numbered markers at the timeline's events; the page lists what each number is.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::OpBucket;

const OK: RGBColor = RGBColor(46, 139, 87);
const FAILED: RGBColor = RGBColor(200, 40, 40);
const UNKNOWN: RGBColor = RGBColor(230, 150, 30);
const P50: RGBColor = RGBColor(40, 90, 180);
const P99: RGBColor = RGBColor(120, 40, 160);
const WINDOW: RGBColor = RGBColor(255, 205, 205);
const MARKER: RGBColor = RGBColor(60, 60, 60);

/// One numbered marker on the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub number: usize,
    pub t_s: f64,
}

/// What one trial's chart shows.
pub struct TrialChart<'a> {
    pub buckets: &'a [OpBucket],
    /// The fault window (seconds from the fault): from the fault taking effect to the heal starting.
    pub window: Option<(f64, f64)>,
    pub markers: &'a [Marker],
}

/// The chart as an SVG document, or the reason it could not be drawn.
pub fn timeline_svg(chart: &TrialChart) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(230);
        draw(chart, &top, &bottom).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type Area<'a, 'b> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw(
    chart: &TrialChart,
    top: &Area,
    bottom: &Area,
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    let b = chart.buckets;
    let width = crate::analysis::OP_BUCKET_MS as f64 / 1000.0;
    let mut lo = b.first().map_or(-1.0, |x| x.t_s);
    let mut hi = b.last().map_or(1.0, |x| x.t_s + width);
    for m in chart.markers {
        lo = lo.min(m.t_s);
        hi = hi.max(m.t_s);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let max_ops = b
        .iter()
        .map(|x| x.ok + x.failed + x.unknown)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_ms = b.iter().filter_map(|x| x.p99_ms).fold(1.0f64, f64::max);

    let mut ops = ChartBuilder::on(top)
        .margin(8)
        .caption(
            "operations per 100 ms (ok / failed / unknown)",
            ("sans-serif", 14),
        )
        .x_label_area_size(22)
        .y_label_area_size(48)
        .build_cartesian_2d(lo..hi, 0.0..max_ops * 1.1)?;
    ops.configure_mesh()
        .disable_x_mesh()
        .y_desc("ops")
        .label_style(("sans-serif", 11))
        .draw()?;
    if let Some((a, z)) = chart.window {
        ops.draw_series(std::iter::once(Rectangle::new(
            [(a, 0.0), (z, max_ops * 1.1)],
            WINDOW.mix(0.6).filled(),
        )))?;
    }
    // Stacked: ok at the bottom, then failed, then unknown.
    let stack = |x: &OpBucket, base: u64, n: u64, color: RGBColor| {
        Rectangle::new(
            [
                (x.t_s, base as f64),
                (x.t_s + width * 0.9, (base + n) as f64),
            ],
            color.filled(),
        )
    };
    ops.draw_series(b.iter().filter(|x| x.ok > 0).map(|x| stack(x, 0, x.ok, OK)))?
        .label("ok")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], OK.filled()));
    ops.draw_series(
        b.iter()
            .filter(|x| x.failed > 0)
            .map(|x| stack(x, x.ok, x.failed, FAILED)),
    )?
    .label("failed")
    .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], FAILED.filled()));
    ops.draw_series(
        b.iter()
            .filter(|x| x.unknown > 0)
            .map(|x| stack(x, x.ok + x.failed, x.unknown, UNKNOWN)),
    )?
    .label("unknown")
    .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], UNKNOWN.filled()));
    markers(&mut ops, chart.markers, max_ops * 1.1, true)?;
    ops.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .draw()?;

    let mut lat = ChartBuilder::on(bottom)
        .margin(8)
        .caption(
            "latency of ok operations per 100 ms (ms)",
            ("sans-serif", 14),
        )
        .x_label_area_size(30)
        .y_label_area_size(48)
        .build_cartesian_2d(lo..hi, 0.0..max_ms * 1.1)?;
    lat.configure_mesh()
        .disable_x_mesh()
        .x_desc("seconds from the fault")
        .y_desc("ms")
        .label_style(("sans-serif", 11))
        .draw()?;
    if let Some((a, z)) = chart.window {
        lat.draw_series(std::iter::once(Rectangle::new(
            [(a, 0.0), (z, max_ms * 1.1)],
            WINDOW.mix(0.6).filled(),
        )))?;
    }
    for (name, color, pick) in [
        (
            "p50",
            P50,
            (|x: &OpBucket| x.p50_ms) as fn(&OpBucket) -> Option<f64>,
        ),
        ("p99", P99, |x: &OpBucket| x.p99_ms),
    ] {
        // A slice without an ok operation breaks the line: a gap is a gap, not a straight interpolation.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for x in b {
            match pick(x) {
                Some(v) => segments
                    .last_mut()
                    .expect("one")
                    .push((x.t_s + width / 2.0, v)),
                None if segments.last().is_some_and(|s| !s.is_empty()) => segments.push(Vec::new()),
                None => {}
            }
        }
        let mut first = true;
        for s in segments.into_iter().filter(|s| !s.is_empty()) {
            let series = lat.draw_series(LineSeries::new(s, color.stroke_width(2)))?;
            if first {
                series.label(name).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 12, y)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    markers(&mut lat, chart.markers, max_ms * 1.1, false)?;
    lat.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

fn markers<'a, 'b>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    markers: &[Marker],
    top: f64,
    numbered: bool,
) -> Result<(), Box<dyn std::error::Error + 'static>> {
    chart.draw_series(markers.iter().map(|m| {
        PathElement::new(
            [(m.t_s, 0.0), (m.t_s, top)],
            MARKER.mix(0.7).stroke_width(1),
        )
    }))?;
    if numbered {
        chart.draw_series(markers.iter().map(|m| {
            Text::new(
                m.number.to_string(),
                (m.t_s, top),
                ("sans-serif", 11).into_font().color(&MARKER),
            )
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(t_s: f64, ok: u64, failed: u64, unknown: u64, p99: Option<f64>) -> OpBucket {
        OpBucket {
            t_s,
            ok,
            failed,
            unknown,
            p50_ms: p99.map(|v| v / 2.0),
            p99_ms: p99,
        }
    }

    #[test]
    fn the_chart_draws_the_outcomes_the_window_and_the_markers() {
        let buckets = [
            bucket(-0.2, 10, 0, 0, Some(4.0)),
            bucket(-0.1, 10, 0, 0, Some(5.0)),
            bucket(0.0, 0, 3, 0, None),
            bucket(0.1, 0, 0, 7, None),
            bucket(0.2, 9, 0, 0, Some(40.0)),
        ];
        let markers = [
            Marker {
                number: 1,
                t_s: 0.0,
            },
            Marker {
                number: 2,
                t_s: 0.15,
            },
        ];
        let svg = timeline_svg(&TrialChart {
            buckets: &buckets,
            window: Some((0.0, 0.2)),
            markers: &markers,
        })
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        let fill = |c: RGBColor| format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        // Three ok bars, one failed, one unknown, the shaded window in both panels.
        assert_eq!(
            svg.matches(&fill(OK)).count(),
            3 + 1,
            "legend swatch included"
        );
        assert_eq!(svg.matches(&fill(FAILED)).count(), 1 + 1);
        assert_eq!(svg.matches(&fill(UNKNOWN)).count(), 1 + 1);
        assert_eq!(svg.matches(&fill(WINDOW)).count(), 2);
        assert!(
            svg.contains(">\n2\n</text>") || svg.contains(">2</text>"),
            "marker 2 numbered"
        );
        // No external reference of any kind.
        assert!(
            !svg.contains("http://") || svg.matches("http://").count() == 1,
            "only the xmlns"
        );
        assert!(!svg.contains("https://"));
    }
}
