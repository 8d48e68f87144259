//! The bench's side-by-side figures as bar charts (SVG, drawn with plotters), written next to
//! `report.md` and linked from it.

use std::path::Path;

use plotters::prelude::*;

/// One chart: groups along the x axis (queries, formats, calls), a bar per series in each.
pub struct BarChart {
    /// The file name, without `.svg`.
    pub name: String,
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    /// `(series label, one value per group)`.
    pub series: Vec<(String, Vec<f64>)>,
}

/// A colour per series, in order; distinguishable in print and for common colour blindness.
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 95, 191),
    RGBColor(230, 140, 20),
    RGBColor(60, 150, 80),
    RGBColor(150, 60, 160),
    RGBColor(120, 120, 120),
];

impl BarChart {
    /// Draws the chart into `dir/<name>.svg`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(format!("{}.svg", self.name));
        let groups = self.groups.len().max(1);
        let width = (140 + groups * (24 * self.series.len().max(1) + 30)).clamp(640, 1600);
        let root = SVGBackend::new(&path, (width as u32, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let top = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE)
            * 1.12;
        let n = self.series.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..groups as f64, 0.0..top)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(&self.y_label)
            .draw()
            .map_err(draw)?;
        // Each group's name under its centre.
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        for (i, label) in self.groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(label.clone(), (x, y + 8), style.clone()))
                .map_err(draw)?;
        }
        for (s, (label, values)) in self.series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let bar = 0.8 / n;
            chart
                .draw_series(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(g, v)| {
                            let x0 = g as f64 + 0.1 + s as f64 * bar;
                            Rectangle::new([(x0, 0.0), (x0 + bar * 0.92, *v)], colour.filled())
                        }),
                )
                .map_err(draw)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw)?;
        root.present().map_err(draw)?;
        drop(chart);
        drop(root);
        Ok(path)
    }
}

fn draw(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_its_title_labels_and_a_bar_per_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chart = BarChart {
            name: "t".into(),
            title: "Queries".into(),
            y_label: "seconds".into(),
            groups: vec!["Q1.1".into(), "Q1.2".into()],
            series: vec![
                ("Spool".into(), vec![0.5, 0.25]),
                ("DuckDB".into(), vec![0.4, f64::NAN]),
            ],
        };
        let path = chart.write(dir.path()).expect("write");
        let svg = std::fs::read_to_string(path).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in ["Queries", "seconds", "Q1.1", "Q1.2", "Spool", "DuckDB"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Three finite values, three bars (plus legend swatches and the background).
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", 31, 95, 191);
        assert!(svg.matches(&fill).count() >= 2, "{svg}");
    }
}
