//! PNG charts of a benchmark report: throughput and CPU per GB against object size for
//! backbeat, rclone and the loopback limit, and latency CDFs.

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

use crate::Run;

/// Fonts tried in order (plotters draws text with a TrueType font it is given).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

fn load_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow!("no TrueType font found (tried {FONTS:?}): install fonts-dejavu-core")
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path}: not a usable font"))
}

const TOOLS: [(&str, RGBColor); 3] = [
    ("backbeat", RGBColor(0x1f, 0x77, 0xb4)),
    ("rclone", RGBColor(0xff, 0x7f, 0x0e)),
    ("limit", RGBColor(0x2c, 0xa0, 0x2c)),
];

fn size_label(b: f64) -> String {
    if b >= (1 << 20) as f64 {
        format!("{:.0} MiB", b / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// One chart of `value` against object size (sweep runs only, log-log).
fn by_size(
    runs: &[Run],
    path: &Path,
    title: &str,
    y_desc: &str,
    value: impl Fn(&Run) -> f64,
) -> anyhow::Result<()> {
    let sweep: Vec<&Run> = runs.iter().filter(|r| r.object_size.is_some()).collect();
    if sweep.is_empty() {
        return Ok(());
    }
    // x is log2 of the size, so ticks fall on powers of two.
    let xs: Vec<f64> = sweep
        .iter()
        .map(|r| (r.object_size.unwrap_or(1) as f64).log2())
        .collect();
    let ys: Vec<f64> = sweep
        .iter()
        .map(|r| value(r))
        .filter(|v| *v > 0.0)
        .collect();
    let (xmin, xmax) = (
        xs.iter().cloned().fold(f64::MAX, f64::min).floor() - 1.0,
        xs.iter().cloned().fold(0.0, f64::max).ceil() + 1.0,
    );
    let (ymin, ymax) = (
        ys.iter().cloned().fold(f64::MAX, f64::min) / 2.0,
        ys.iter().cloned().fold(0.0, f64::max) * 2.0,
    );
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xmin..xmax, (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("object size")
        .y_desc(y_desc)
        .x_labels((xmax - xmin) as usize + 1)
        .x_label_formatter(&|x| {
            if (x.round() - x).abs() < 1e-6 && (x.round() as i64) % 2 == 0 {
                size_label(x.exp2())
            } else {
                String::new()
            }
        })
        .draw()?;
    for (tool, color) in TOOLS {
        let mut pts: Vec<(f64, f64)> = sweep
            .iter()
            .filter(|r| r.tool == tool)
            .map(|r| ((r.object_size.unwrap_or(1) as f64).log2(), value(r)))
            .filter(|(_, y)| *y > 0.0)
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(tool)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency CDFs: every run that has one (x in milliseconds, log).
fn latency(runs: &[Run], path: &Path) -> anyhow::Result<()> {
    let with: Vec<&Run> = runs
        .iter()
        .filter(|r| !r.latency_cdf_ms.is_empty())
        .filter(|r| r.scenario == "sweep-1MiB" || r.scenario.contains("-kafka-"))
        .collect();
    if with.is_empty() {
        return Ok(());
    }
    let all: Vec<f64> = with
        .iter()
        .flat_map(|r| r.latency_cdf_ms.iter().map(|p| p[1]))
        .filter(|v| *v > 0.0)
        .collect();
    let (xmin, xmax) = (
        all.iter().cloned().fold(f64::MAX, f64::min) / 1.5,
        all.iter().cloned().fold(0.0, f64::max) * 1.5,
    );
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency per object (CDF)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("fraction of objects")
        .draw()?;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
    ];
    for (i, r) in with.iter().enumerate() {
        let color = palette[i % palette.len()];
        let pts: Vec<(f64, f64)> = r
            .latency_cdf_ms
            .iter()
            .filter(|p| p[1] > 0.0)
            .map(|p| (p[1], p[0]))
            .collect();
        let label = match r.scenario.as_str() {
            s if s.contains("-kafka-") => format!("backbeat run, event to destination ({s})"),
            s => format!("{} ({s}, per object)", r.tool),
        };
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes the three charts into `dir`; returns their paths.
pub fn write(runs: &[Run], dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    load_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let t = dir.join("bench-throughput.png");
    by_size(runs, &t, "Throughput by object size", "GB/s", |r| {
        r.gb_per_s
    })
    .map_err(|e| anyhow!("{}: {e}", t.display()))?;
    let c = dir.join("bench-cpu-per-gb.png");
    by_size(
        runs,
        &c,
        "CPU seconds per GB moved (lower is better)",
        "CPU s / GB",
        |r| r.cpu_s_per_gb,
    )
    .map_err(|e| anyhow!("{}: {e}", c.display()))?;
    let l = dir.join("bench-latency-cdf.png");
    latency(runs, &l).map_err(|e| anyhow!("{}: {e}", l.display()))?;
    Ok(vec![t, c, l])
}
