//! Server-rendered SVG charts for the admin reports: bars and lines with axes, a `<title>` on
//! every bar and point for hover, a fixed viewBox that scales to the page, and no script or
//! font of their own (the text takes the page's font; colours come from `admin.css`).
//!
//! Every text that goes into a chart is escaped here, so the markup can be placed in a page
//! as it is.

use std::fmt::Write;

/// The drawing's coordinate space; the page scales it to its width.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
/// Room for the y-axis labels and title.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
/// Room for the legend.
const TOP: f64 = 30.0;
/// Room for the x-axis labels and title.
const BOTTOM: f64 = 46.0;
/// Most x-axis labels drawn; longer ranges label every few bars or points.
const MAX_X_LABELS: usize = 12;
/// The least distance between the centres of two x-axis labels.
const MIN_LABEL_GAP: f64 = 44.0;
/// Gridlines above zero, about.
const Y_TICKS: f64 = 4.0;

/// One bar: its x-axis label, its height, and the text shown on hover.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub title: String,
}

/// One point of a line: its height and the text shown on hover.
pub struct Point {
    pub value: f64,
    pub title: String,
}

/// One line: its legend name and a point per x-axis label (`None` leaves a gap).
pub struct Series {
    pub name: String,
    pub points: Vec<Option<Point>>,
}

/// The texts around a chart.
pub struct Labels<'a> {
    /// A unique id in the page (for the accessible name).
    pub id: &'a str,
    /// What the chart shows, read by screen readers and shown on hover of the chart.
    pub caption: &'a str,
    pub x_axis: &'a str,
    pub y_axis: &'a str,
}

/// Escapes text for SVG (XML) content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A bar chart; `whole` says the values are counts, so the axis shows whole numbers.
pub fn bar_chart(labels: &Labels, bars: &[Bar], whole: bool) -> String {
    let (top, step) = y_axis(bars.iter().map(|bar| bar.value), whole);
    let mut svg = open(labels, top, step);
    x_labels(&mut svg, bars.iter().map(|bar| bar.label.as_str()));
    let slot = plot_width() / bars.len().max(1) as f64;
    for (index, bar) in bars.iter().enumerate() {
        let height = (bar.value.max(0.0) / top * plot_height()).max(0.0);
        let x = LEFT + slot * index as f64 + slot * 0.1;
        let y = TOP + plot_height() - height;
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}"><title>{}</title></rect>"#,
            slot * 0.8,
            escape(&bar.title)
        );
    }
    if bars.iter().all(|bar| bar.value <= 0.0) {
        no_data(&mut svg);
    }
    svg.push_str("</svg>");
    svg
}

/// The width a legend text takes, roughly: a wide (CJK) character counts twice a narrow one.
fn text_width(text: &str) -> f64 {
    text.chars().map(|c| if c.len_utf8() >= 3 { 13.0 } else { 7.0 }).sum()
}

/// A line chart over `x_labels`, one line per series, with a legend.
pub fn line_chart(labels: &Labels, x_labels_text: &[String], series: &[Series]) -> String {
    let values = series.iter().flat_map(|line| line.points.iter().flatten().map(|point| point.value));
    let (top, step) = y_axis(values, false);
    let mut svg = open(labels, top, step);
    x_labels(&mut svg, x_labels_text.iter().map(String::as_str));
    let slot = plot_width() / x_labels_text.len().max(1) as f64;
    let position = |index: usize, value: f64| {
        (LEFT + slot * (index as f64 + 0.5), TOP + plot_height() - value.max(0.0) / top * plot_height())
    };
    let mut legend_x = LEFT;
    for (number, line) in series.iter().enumerate() {
        let class = format!("series-{number}");
        let mut path = String::new();
        let mut pen_down = false;
        for (index, point) in line.points.iter().enumerate() {
            match point {
                Some(point) => {
                    let (x, y) = position(index, point.value);
                    let _ = write!(path, "{}{x:.1} {y:.1} ", if pen_down { 'L' } else { 'M' });
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(svg, r#"<path class="line {class}" d="{}"/>"#, path.trim_end());
        }
        for (index, point) in line.points.iter().enumerate() {
            if let Some(point) = point {
                let (x, y) = position(index, point.value);
                let _ = write!(
                    svg,
                    r#"<circle class="point {class}" cx="{x:.1}" cy="{y:.1}" r="3.5"><title>{}</title></circle>"#,
                    escape(&point.title)
                );
            }
        }
        let _ = write!(
            svg,
            r#"<rect class="swatch {class}" x="{legend_x:.1}" y="8" width="12" height="12"/><text class="legend" x="{:.1}" y="18">{}</text>"#,
            legend_x + 16.0,
            escape(&line.name)
        );
        legend_x += 28.0 + text_width(&line.name);
    }
    if series.iter().all(|line| line.points.iter().all(Option::is_none)) {
        no_data(&mut svg);
    }
    svg.push_str("</svg>");
    svg
}

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_height() -> f64 {
    HEIGHT - TOP - BOTTOM
}

/// The y axis: its top, a round number at or above the largest value, and its gridline step.
fn y_axis(values: impl Iterator<Item = f64>, whole: bool) -> (f64, f64) {
    let largest = values.filter(|value| value.is_finite()).fold(0.0_f64, f64::max);
    let step = tick_step(largest, whole);
    ((largest / step).ceil().max(1.0) * step, step)
}

/// A round distance between gridlines (1, 2 or 5 times a power of ten) for about
/// [`Y_TICKS`] gridlines up to `largest`.
fn tick_step(largest: f64, whole: bool) -> f64 {
    if largest <= 0.0 || !largest.is_finite() {
        return 1.0;
    }
    let rough = largest / Y_TICKS;
    let magnitude = 10_f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|factor| factor * magnitude).find(|step| *step >= rough);
    let step = step.unwrap_or(10.0 * magnitude);
    if whole { step.max(1.0).round() } else { step }
}

/// A tick value without needless decimals.
fn tick_text(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The opening of the drawing: accessible name, gridlines, axes and axis titles.
fn open(labels: &Labels, top: f64, step: f64) -> String {
    let id = escape(labels.id);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="report-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title"><title id="{id}-title">{}</title>"#,
        escape(labels.caption)
    );
    let n_ticks = (top / step).round() as usize;
    for tick in 0..=n_ticks {
        let value = step * tick as f64;
        let y = TOP + plot_height() - value / top * plot_height();
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_text(value)
        );
    }
    let bottom = TOP + plot_height();
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom:.1}"/>"#,
        WIDTH - RIGHT
    );
    let _ = write!(
        svg,
        r#"<text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_width() / 2.0,
        HEIGHT - 6.0,
        escape(labels.x_axis)
    );
    let middle = TOP + plot_height() / 2.0;
    let _ = write!(
        svg,
        r#"<text class="axis-title" x="14" y="{middle:.1}" text-anchor="middle" transform="rotate(-90 14 {middle:.1})">{}</text>"#,
        escape(labels.y_axis)
    );
    svg
}

/// Labels under the x axis, thinned out so they never overlap.
fn x_labels<'a>(svg: &mut String, labels: impl ExactSizeIterator<Item = &'a str>) {
    let count = labels.len();
    let every = count.div_ceil(MAX_X_LABELS).max(1);
    let slot = plot_width() / count.max(1) as f64;
    let y = TOP + plot_height() + 16.0;
    for (index, label) in labels.enumerate() {
        // The last label shows where a range ends, when it has room next to the one before.
        let is_last_with_room = index + 1 == count && (index % every) as f64 * slot >= MIN_LABEL_GAP;
        if index % every != 0 && !is_last_with_room {
            continue;
        }
        let x = LEFT + slot * (index as f64 + 0.5);
        let _ =
            write!(svg, r#"<text class="tick" x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#, escape(label));
    }
}

fn no_data(svg: &mut String) {
    let _ = write!(
        svg,
        r#"<text class="no-data" x="{:.1}" y="{:.1}" text-anchor="middle">No data in this range</text>"#,
        LEFT + plot_width() / 2.0,
        TOP + plot_height() / 2.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels<'static> {
        Labels { id: "daily", caption: "Conversations <per> day", x_axis: "Day & \"UTC\"", y_axis: "Conversations" }
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let bars = [Bar { label: "<b>".into(), value: 3.0, title: "3 & 'more'".into() }];
        let svg = bar_chart(&labels(), &bars, true);
        assert!(svg.contains("<title id=\"daily-title\">Conversations &lt;per&gt; day</title>"));
        assert!(svg.contains("Day &amp; &quot;UTC&quot;"));
        assert!(svg.contains("&lt;b&gt;"));
        assert!(svg.contains("<title>3 &amp; &#39;more&#39;</title>"));
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn bars_scale_to_a_round_axis_and_each_has_a_title() {
        let bars: Vec<Bar> = (0..30)
            .map(|day| Bar { label: format!("11-{day:02}"), value: f64::from(day % 7), title: format!("day {day}") })
            .collect();
        let svg = bar_chart(&labels(), &bars, true);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 30);
        assert_eq!(svg.matches("<title>day ").count(), 30);
        assert!(svg.contains(">6</text>"), "the axis reaches 6: {svg}");
        assert!(svg.matches("class=\"tick\"").count() < 30 + 8, "x labels are thinned out");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("No data"));
    }

    #[test]
    fn empty_charts_say_so() {
        let bars = [Bar { label: "1".into(), value: 0.0, title: "none".into() }];
        assert!(bar_chart(&labels(), &bars, true).contains("No data in this range"));
        let series = [Series { name: "Median".into(), points: vec![None, None] }];
        let svg = line_chart(&labels(), &["a".into(), "b".into()], &series);
        assert!(svg.contains("No data in this range"));
        assert!(!svg.contains("<path"));
    }

    #[test]
    fn lines_break_at_gaps() {
        let point = |value: f64| Some(Point { value, title: format!("{value}") });
        let series = [Series { name: "Median".into(), points: vec![point(1.0), point(2.5), None, point(2.0)] }];
        let x: Vec<String> = ["a", "b", "c", "d"].into_iter().map(str::to_owned).collect();
        let svg = line_chart(&labels(), &x, &series);
        let path = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert_eq!(path.matches('L').count(), 1, "{path}");
        assert_eq!(svg.matches("<circle").count(), 3);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(0.0, true), 1.0);
        assert_eq!(tick_step(3.0, true), 1.0);
        assert_eq!(tick_step(37.0, true), 10.0);
        assert_eq!(tick_step(0.9, false), 0.5);
        assert_eq!(y_axis([37.0].into_iter(), true), (40.0, 10.0));
        assert_eq!(y_axis([0.9].into_iter(), false), (1.0, 0.5));
        assert_eq!(y_axis([].into_iter(), true), (1.0, 1.0));
        assert_eq!(tick_text(2.5), "2.5");
        assert_eq!(tick_text(40.0), "40");
    }
}
