//! The benchmark's picture: one bar per figure, rshim's median over the Go shim's, with the
//! parity line at 1; green where rshim is ahead, red where it is behind.

use plotters::prelude::*;

use crate::stats::Figure;

pub fn ratios_svg(figures: &[Figure], path: &std::path::Path, title: &str) -> anyhow::Result<()> {
    let rows: Vec<(String, f64, bool)> = figures
        .iter()
        .filter_map(|f| {
            let r = f.ratio()?;
            Some((
                format!("{}: {}", f.group, f.name),
                r,
                (r <= 1.0) != f.higher_is_better,
            ))
        })
        .collect();
    let height = 80 + 26 * rows.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|(_, r, _)| *r).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0f64..max, (0..rows.len()).into_segmented())?;
    let labels: Vec<String> = rows.iter().map(|(n, _, _)| n.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("rshim / Go shim (median)")
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, r, good))| {
        // Green where rshim is ahead (less, or more for throughput), red where behind.
        let color = if *good {
            RGBColor(46, 125, 50)
        } else {
            RGBColor(198, 40, 40)
        };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*r, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        bar
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, r, _))| {
        Text::new(
            format!("{r:.2}"),
            (*r + max * 0.01, SegmentValue::CenterOf(i)),
            ("sans-serif", 12),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![
            (1.0, SegmentValue::Exact(0)),
            (1.0, SegmentValue::Exact(rows.len())),
        ],
        BLACK.stroke_width(1),
    )))?;
    root.present()?;
    Ok(())
}
