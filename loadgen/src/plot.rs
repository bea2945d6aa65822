//! The timeline as an SVG picture, like a traffic-migration graph: on top
//! the p99 latency per bucket (log scale, so a 1 ms baseline and a 2 s
//! spike are both readable) with failed requests as red bars on a second
//! axis; below, the share of requests served by each region, stacked, with
//! failed requests as a red band on top. Drill events are dashed vertical
//! lines with their labels in both panels.
//!
//! Plotters' SVG backend writes text as `<text>` elements and sizes it
//! with an estimate, so no font files are needed.

use std::fmt::Display;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::timeline::Timeline;

impl Timeline {
    /// Writes the timeline plot ([`render_svg`]) to `path`.
    pub fn write_svg(&self, path: &std::path::Path, title: &str) -> anyhow::Result<()> {
        let svg = render_svg(self, title)?;
        std::fs::write(path, svg).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }
}

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 760;
const FONT: &str = "sans-serif";
/// Region colours, in region order (sorted names); failures are red.
const REGION_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];
const FAILED: RGBColor = RGBColor(214, 39, 40);
const EVENT: RGBColor = RGBColor(60, 60, 60);

/// Renders `timeline` as an SVG document titled `title`.
pub fn render_svg(timeline: &Timeline, title: &str) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root.titled(title, (FONT, 22)).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(HEIGHT * 55 / 100);
        let geometry = Geometry::of(timeline);
        draw_latency(&top, timeline, &geometry)?;
        draw_shares(&bottom, timeline, &geometry)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Axis ranges shared by the two panels.
struct Geometry {
    /// Seconds covered.
    t_end: f64,
    /// Bucket width, seconds.
    width: f64,
    /// p99 axis (ms, log scale).
    p99_lo: f64,
    p99_hi: f64,
    /// Failed-per-bucket axis.
    failed_hi: f64,
}

impl Geometry {
    fn of(timeline: &Timeline) -> Self {
        let width = timeline.bucket_ms.max(1) as f64 / 1000.0;
        let last_event = timeline
            .events
            .iter()
            .map(|e| e.at_ms as f64 / 1000.0 + width)
            .fold(0.0, f64::max);
        let t_end = (timeline.buckets.len() as f64 * width)
            .max(last_event)
            .max(width);
        let p99s = timeline
            .buckets
            .iter()
            .filter_map(|b| b.p99_us)
            .map(|us| us.max(1) as f64 / 1000.0);
        let (min, max) = p99s.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let (p99_lo, p99_hi) = if min.is_finite() && max > 0.0 {
            ((min / 2.0).max(0.001), (max * 3.0).max(min * 10.0))
        } else {
            (0.1, 10.0)
        };
        let failed_max = timeline.buckets.iter().map(|b| b.failed).max().unwrap_or(0);
        Geometry {
            t_end,
            width,
            p99_lo,
            p99_hi,
            failed_hi: (failed_max.max(1) as f64) * 1.25,
        }
    }
}

fn draw_latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    timeline: &Timeline,
    g: &Geometry,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption("p99 latency per bucket, failed requests", (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0f64..g.t_end, (g.p99_lo..g.p99_hi).log_scale())
        .map_err(plot_error)?
        .set_secondary_coord(0f64..g.t_end, 0f64..g.failed_hi);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("p99 (ms)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)?;
    chart
        .configure_secondary_axes()
        .y_desc("failed per bucket")
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_error)?;

    let bars = timeline.buckets.iter().filter(|b| b.failed > 0).map(|b| {
        let x0 = b.start_ms as f64 / 1000.0;
        Rectangle::new(
            [(x0, 0.0), (x0 + g.width, b.failed as f64)],
            FAILED.mix(0.55).filled(),
        )
    });
    chart
        .draw_secondary_series(bars)
        .map_err(plot_error)?
        .label("failed")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], FAILED.mix(0.55).filled()));

    // A line per run of buckets that had answers: a bucket without any is
    // a gap, not a zero.
    let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for b in &timeline.buckets {
        match b.p99_us {
            Some(us) => {
                let x = b.start_ms as f64 / 1000.0 + g.width / 2.0;
                let ms = (us.max(1) as f64 / 1000.0).clamp(g.p99_lo, g.p99_hi);
                if let Some(segment) = segments.last_mut() {
                    segment.push((x, ms));
                }
            }
            None => segments.push(Vec::new()),
        }
    }
    let line = REGION_COLORS[0].stroke_width(2);
    let mut labelled = false;
    for segment in segments.into_iter().filter(|s| !s.is_empty()) {
        let series = chart
            .draw_series(LineSeries::new(segment, line))
            .map_err(plot_error)?;
        if !labelled {
            series
                .label("p99")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], line));
            labelled = true;
        }
    }

    for (i, event) in timeline.events.iter().enumerate() {
        let x = event.at_ms as f64 / 1000.0;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, g.p99_lo), (x, g.p99_hi)],
                6,
                4,
                EVENT.stroke_width(1),
            ))
            .map_err(plot_error)?;
        // Stagger labels downwards so close events stay readable.
        let y = g.p99_hi / (g.p99_hi / g.p99_lo).powf(0.08 * (1 + i % 4) as f64);
        chart
            .draw_series(std::iter::once(Text::new(
                format!(" {}", event.label),
                (x, y),
                (FONT, 13).into_font().color(&EVENT),
            )))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn draw_shares<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    timeline: &Timeline,
    g: &Geometry,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption("share of requests by serving region", (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0f64..g.t_end, 0f64..100f64)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("% of requests")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)?;

    // Layers bottom-up: each region's answers, then the failures. Each is
    // drawn as the area under its cumulative share, top layer first, so
    // every later (lower) layer covers all but its own band.
    let regions = timeline.regions();
    let mut layers: Vec<(String, RGBColor, Vec<f64>)> = Vec::new();
    let mut below = vec![0.0; timeline.buckets.len()];
    for (i, region) in regions.iter().enumerate() {
        let color = REGION_COLORS[i % REGION_COLORS.len()];
        let name = if region.is_empty() {
            "(no route)"
        } else {
            region
        };
        let served = |b: &crate::timeline::Bucket| b.served.get(region).copied().unwrap_or(0);
        layers.push((
            name.to_string(),
            color,
            cumulate(timeline, &mut below, served),
        ));
    }
    layers.push((
        "failed".into(),
        FAILED,
        cumulate(timeline, &mut below, |b| b.failed),
    ));

    for (name, color, top) in layers.into_iter().rev() {
        let mut points = Vec::with_capacity(top.len() * 2);
        for (b, value) in timeline.buckets.iter().zip(top) {
            let x0 = b.start_ms as f64 / 1000.0;
            points.push((x0, value));
            points.push((x0 + g.width, value));
        }
        chart
            .draw_series(AreaSeries::new(points, 0.0, color.mix(0.85).filled()))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }

    for event in &timeline.events {
        let x = event.at_ms as f64 / 1000.0;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, 0.0), (x, 100.0)],
                6,
                4,
                EVENT.stroke_width(1),
            ))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// Adds each bucket's `count` as a percentage of its requests to `below`
/// and returns the new running totals.
fn cumulate(
    timeline: &Timeline,
    below: &mut [f64],
    count: impl Fn(&crate::timeline::Bucket) -> u64,
) -> Vec<f64> {
    for (total, b) in below.iter_mut().zip(&timeline.buckets) {
        if b.sent > 0 {
            *total += 100.0 * count(b) as f64 / b.sent as f64;
        }
    }
    below.to_vec()
}

fn plot_error(e: impl Display) -> anyhow::Error {
    anyhow!("cannot draw the timeline: {e}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sample::{Answered, Outcome, Sample};

    /// Ten seconds at 200 QPS: us-east-1 serves until its router dies at
    /// 3 s, a few requests fail, us-east-2 takes over with higher latency,
    /// and traffic returns at 7 s.
    fn drill() -> Timeline {
        let mut samples = Vec::new();
        for i in 0..2000u64 {
            let due = Duration::from_millis(i * 5);
            let t = due.as_millis();
            let (latency_us, outcome) = match t {
                3000..=3019 => (0, Outcome::Failed("UNAVAILABLE".into())),
                3020..=3400 => (40_000 + (i % 7) * 1000, away()),
                3401..=6999 => (2_500 + (i % 11) * 100, away()),
                _ => (900 + (i % 13) * 50, Outcome::served_by("us-east-1")),
            };
            samples.push(Sample {
                due,
                latency: Duration::from_micros(latency_us),
                send_lag: Duration::ZERO,
                outcome,
            });
        }
        let mut t = Timeline::from_samples(Duration::from_millis(100), &samples);
        t.add_event(Duration::from_millis(3000), "router us-east-1 killed");
        t.add_event(Duration::from_millis(6800), "router us-east-1 restarted");
        t
    }

    fn away() -> Outcome {
        Outcome::Ok(Answered {
            served_region: "us-east-2".into(),
            client_failover: true,
            ..Default::default()
        })
    }

    #[test]
    fn renders_a_drill_timeline_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drill.svg");
        let timeline = drill();
        timeline.write_svg(&path, "drill: router killed").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["router us-east-1 killed", "us-east-2", "p99 (ms)", "failed"] {
            assert!(svg.contains(text), "missing {text:?}");
        }
        // Keep a copy to look at when asked to.
        if let Ok(out) = std::env::var("TANDEM_PLOT_SAMPLE") {
            std::fs::write(out, &svg).unwrap();
        }
    }

    #[test]
    fn renders_empty_and_degenerate_timelines() {
        let empty = Timeline::from_samples(Duration::from_millis(100), &[]);
        assert!(render_svg(&empty, "empty").unwrap().contains("<svg"));
        let failing = Timeline::from_samples(
            Duration::from_millis(100),
            &[Sample {
                due: Duration::ZERO,
                latency: Duration::ZERO,
                send_lag: Duration::ZERO,
                outcome: Outcome::Failed("UNAVAILABLE".into()),
            }],
        );
        assert!(render_svg(&failing, "all failed").unwrap().contains("<svg"));
    }
}
