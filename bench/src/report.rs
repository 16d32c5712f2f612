//! `spool bench report`: result files to a Markdown table and plots (throughput bars, latency
//! percentile curves, throughput over time) as SVG and PNG, systems side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::result::RunResult;

/// Reads result files.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<RunResult>> {
    paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        })
        .collect()
}

/// A run's label in tables and legends.
fn label(r: &RunResult) -> String {
    format!("{} ({}) · {}", r.system, r.driver, r.workload.name)
}

fn rate(r: &RunResult) -> String {
    match r.workload.producer_rate {
        0 => "max".into(),
        n => format!("{n}/s"),
    }
}

/// The Markdown table of `runs`.
pub fn markdown(runs: &[RunResult], title: &str) -> String {
    let mut md = format!("# {title}\n\n");
    let machines: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.machine.as_str()).collect();
    for m in machines {
        let _ = writeln!(md, "Machine: {m}.");
    }
    md.push_str(
        "\n| System | Workload | Rate | Durability | Publish msg/s | MB/s | Consume msg/s | Publish p50 / p99 ms | End-to-end p50 | p75 | p95 | p99 | p99.9 | max ms | Errors | Missing / duplicates | Broker CPU % | RSS MiB |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let (p, e) = (&r.publish_latency_ms, &r.end_to_end_latency_ms);
        let missing: u64 = r.delivery.iter().map(|d| d.missing).sum();
        let dups: u64 = r.delivery.iter().map(|d| d.duplicates).sum();
        let (cpu, rss) = r.broker.map_or(("".into(), "".into()), |b| {
            (
                format!("{:.0}", b.cpu_percent_mean),
                format!("{:.0}", b.rss_mib_max),
            )
        });
        let _ = writeln!(
            md,
            "| {} ({}) | {} | {} | {} | {:.0} | {:.1} | {:.0} | {:.2} / {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {missing} / {dups} | {cpu} | {rss} |",
            r.system, r.driver, r.workload.name, rate(r), r.durability,
            r.publish.msg_per_s, r.publish.mb_per_s, r.consume.msg_per_s,
            p.p50, p.p99, e.p50, e.p75, e.p95, e.p99, e.p999, e.max, r.errors,
        );
    }
    md.push_str(
        "\n![Throughput](throughput.svg)\n\n![End-to-end latency](latency.svg)\n\n![Throughput over time](timeline.svg)\n",
    );
    md
}

/// Registers a system font for plot text (plotters draws text itself, in SVG and PNG alike).
fn register_font() -> anyhow::Result<()> {
    const FONTS: [&str; 4] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = FONTS.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
                format!("no font for plots (looked for {FONTS:?}; apt-get install fonts-dejavu-core)")
            })?;
            let bytes: &'static [u8] = Box::leak(
                std::fs::read(path)
                    .map_err(|e| format!("{path}: {e}"))?
                    .into_boxed_slice(),
            );
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable font"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

const SIZE: (u32, u32) = (1200, 700);

/// Draws a chart's legend at `position` and writes the drawing out.
fn finish<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(position)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

fn throughput<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunResult],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let top = runs
        .iter()
        .map(|r| r.publish.msg_per_s.max(r.consume.msg_per_s))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput, msg/s (solid: publish, light: consume)",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(10)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..runs.len() as f64, 0f64..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("messages per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_err)?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let x = i as f64;
        chart
            .draw_series([
                Rectangle::new(
                    [(x + 0.1, 0.0), (x + 0.48, r.publish.msg_per_s)],
                    color.filled(),
                ),
                Rectangle::new(
                    [(x + 0.52, 0.0), (x + 0.9, r.consume.msg_per_s)],
                    color.mix(0.4).filled(),
                ),
            ])
            .map_err(plot_err)?
            .label(label(r))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    finish(&root, &mut chart, SeriesLabelPosition::UpperRight)
}

const QUANTILES: [&str; 6] = ["p50", "p75", "p95", "p99", "p99.9", "max"];

fn latency<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunResult],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let values = |r: &RunResult| {
        let e = &r.end_to_end_latency_ms;
        [e.p50, e.p75, e.p95, e.p99, e.p999, e.max].map(|v| v.max(0.001))
    };
    let top = runs.iter().flat_map(&values).fold(1.0, f64::max) * 2.0;
    let bottom = runs
        .iter()
        .flat_map(&values)
        .fold(f64::MAX, f64::min)
        .min(top / 10.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "End-to-end latency by percentile, ms (log scale)",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(-0.2f64..5.2, (bottom..top).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..6.0).contains(&i) {
                QUANTILES[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("milliseconds")
        .draw()
        .map_err(plot_err)?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = values(r)
            .into_iter()
            .enumerate()
            .map(|(q, v)| (q as f64, v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(plot_err)?
            .label(label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(plot_err)?;
    }
    finish(&root, &mut chart, SeriesLabelPosition::UpperLeft)
}

fn timeline<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    runs: &[RunResult],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let seconds = runs
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.second))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let top = runs
        .iter()
        .flat_map(|r| {
            r.timeline
                .iter()
                .map(|p| p.publish_msg_per_s.max(p.consume_msg_per_s))
        })
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput over time, msg/s (solid: publish, thin: consume)",
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..seconds, 0f64..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since producing started")
        .y_desc("messages per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_err)?;
    for (i, r) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let publish = r
            .timeline
            .iter()
            .map(|p| (p.second as f64, p.publish_msg_per_s));
        let consume = r
            .timeline
            .iter()
            .map(|p| (p.second as f64, p.consume_msg_per_s));
        chart
            .draw_series(LineSeries::new(publish, color.stroke_width(3)))
            .map_err(plot_err)?
            .label(label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        chart
            .draw_series(LineSeries::new(consume, color.stroke_width(1)))
            .map_err(plot_err)?;
    }
    finish(&root, &mut chart, SeriesLabelPosition::LowerRight)
}

/// Writes report.md and every plot as SVG and PNG into `out`; returns the files written.
pub fn write(results: &[PathBuf], out: &Path, title: &str) -> anyhow::Result<Vec<PathBuf>> {
    let runs = load(results)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    register_font()?;
    let mut written = Vec::new();
    let md = out.join("report.md");
    std::fs::write(&md, markdown(&runs, title))?;
    written.push(md);
    type Plot = fn(&[RunResult], &Path, &Path) -> anyhow::Result<()>;
    let plots: [(&str, Plot); 3] = [
        ("throughput", |runs, svg, png| {
            throughput(SVGBackend::new(svg, SIZE).into_drawing_area(), runs)?;
            throughput(BitMapBackend::new(png, SIZE).into_drawing_area(), runs)
        }),
        ("latency", |runs, svg, png| {
            latency(SVGBackend::new(svg, SIZE).into_drawing_area(), runs)?;
            latency(BitMapBackend::new(png, SIZE).into_drawing_area(), runs)
        }),
        ("timeline", |runs, svg, png| {
            timeline(SVGBackend::new(svg, SIZE).into_drawing_area(), runs)?;
            timeline(BitMapBackend::new(png, SIZE).into_drawing_area(), runs)
        }),
    ];
    for (name, plot) in plots {
        let (svg, png) = (
            out.join(format!("{name}.svg")),
            out.join(format!("{name}.png")),
        );
        plot(&runs, &svg, &png).with_context(|| format!("plotting {name}"))?;
        written.push(svg);
        written.push(png);
    }
    Ok(written)
}
