//! The main table as an SVG bar chart: MB/s per message size, one bar
//! per column.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Row;
use crate::size_label;

type Series = (&'static str, RGBColor, fn(&Row) -> Option<f64>);

const SERIES: [Series; 6] = [
    ("Go reference (processes)", RGBColor(0, 125, 156), |r| {
        r.go_mbps
    }),
    ("udsipc (processes)", RGBColor(222, 84, 30), |r| r.rust_mbps),
    ("udsipc (in-process)", RGBColor(240, 150, 90), |r| {
        r.rust_inproc_mbps
    }),
    (
        "tokio-util + unsigned-varint (processes)",
        RGBColor(110, 110, 110),
        |r| r.tokio_util_mbps,
    ),
    ("ZeroMQ PUSH/PULL (processes)", RGBColor(60, 140, 60), |r| {
        r.zmq_mbps
    }),
    (
        "raw socket limit (processes)",
        RGBColor(190, 190, 190),
        |r| r.raw_limit_mbps,
    ),
];

/// Writes the chart of `rows` to `path`.
pub fn write_svg(rows: &[Row], title: &str, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let top = rows
        .iter()
        .flat_map(|r| SERIES.iter().filter_map(move |(_, _, get)| get(r)))
        .fold(1.0f64, f64::max)
        * 1.4; // room for the legend above the bars
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..rows.len().max(1) as f64, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_labels(rows.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            match rows.get(i as usize) {
                Some(r) if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 => size_label(r.size),
                _ => String::new(),
            }
        })
        .y_desc("MB/s (1 MB = 1e6 B)")
        .draw()
        .map_err(|e| err(&e))?;
    let width = 0.8 / SERIES.len() as f64;
    for (k, (name, color, get)) in SERIES.iter().enumerate() {
        let bars = rows.iter().enumerate().filter_map(move |(i, r)| {
            let v = get(r)?;
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, v)],
                color.filled(),
            ))
        });
        let color = *color;
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
