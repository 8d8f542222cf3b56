//! The benchmark's picture: one bar per figure, rshim's median over the Go shim's, with the
//! parity line at 1.

use plotters::prelude::*;

use crate::stats::Figure;

/// Green where rshim is ahead (less, or more for throughput), grey within 3%, red behind.
enum Verdict {
    Ahead,
    Even,
    Behind,
}

pub fn ratios_svg(figures: &[Figure], path: &std::path::Path, title: &str) -> anyhow::Result<()> {
    // Top to bottom in table order; a reference measured once for both (runc alone) is left out.
    let rows: Vec<(String, f64, Verdict)> = figures
        .iter()
        .rev()
        .filter(|f| f.go != f.rshim)
        .filter_map(|f| {
            let r = f.ratio()?;
            let verdict = if (r - 1.0).abs() < 0.03 {
                Verdict::Even
            } else if (r < 1.0) != f.higher_is_better {
                Verdict::Ahead
            } else {
                Verdict::Behind
            };
            Some((format!("{}: {}", f.group, f.name), r, verdict))
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
        .light_line_style(TRANSPARENT)
        .x_desc("rshim / Go shim (median)")
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, r, verdict))| {
        let color = match verdict {
            Verdict::Ahead => RGBColor(46, 125, 50),
            Verdict::Even => RGBColor(120, 120, 120),
            Verdict::Behind => RGBColor(198, 40, 40),
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

/// Redraws the plot from a CSV the bench wrote (`rshim-bench --replot DIR`).
pub fn figures_from_csv(text: &str) -> Vec<Figure> {
    let mut figures: Vec<Figure> = Vec::new();
    for line in text.lines().skip(1) {
        // group,"figure",unit,runtime,index,value
        let Some((group, rest)) = line.split_once(",\"") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once("\",") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(',').collect();
        let [unit, runtime, _, value] = fields[..] else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let key = (group.to_string(), name.to_string());
        let pos = figures
            .iter()
            .position(|f| (f.group.to_string(), f.name.clone()) == key);
        let f = match pos {
            Some(i) => &mut figures[i],
            None => {
                let group: &'static str = Box::leak(group.to_string().into_boxed_str());
                let unit: &'static str = Box::leak(unit.to_string().into_boxed_str());
                let mut f = Figure::new(group, name, unit);
                f.higher_is_better = unit == "MB/s";
                figures.push(f);
                figures.last_mut().expect("just pushed")
            }
        };
        match runtime {
            "go" => f.go.push(value),
            _ => f.rshim.push(value),
        }
    }
    figures
}
