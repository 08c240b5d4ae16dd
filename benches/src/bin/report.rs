//! Assembles `papers/results.md` (machine, date, commit, and every benchmark's tables) and draws
//! the figures in `papers/figures/` (SVG, plus a PNG copy of each when python3 has cairosvg) from
//! the tables the benchmarks wrote into `papers/results/`.
//!
//! Run with: `cargo run --release -p kappa-benches --bin report -- [--suffix -quick] [--papers DIR]`
//! (`scripts/bench` runs it last).
//!
//! The figures are SVG written by hand rather than through a plotting crate: what makes a figure
//! readable at a glance here is layout (labels that wrap instead of colliding, value labels beside
//! every bar, direct labels on lines pushed apart where they would overlap, a legend only where
//! there are several series), and that is easier to get right with the coordinates in hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Which result files to read: `` (full runs) or `-quick`.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    suffix: String,
    /// The `papers/` directory.
    #[arg(long, default_value = "papers")]
    papers: PathBuf,
}

/// The benchmarks' result files, in the order they appear in the report.
const PARTS: [(&str, &str); 8] = [
    ("replay", "Replay"),
    ("recovery", "Recovery"),
    ("pipelines", "Pipelines"),
    ("nexmark", "Nexmark"),
    ("overhead", "Engine overhead"),
    ("serving", "Serving"),
    ("serving_lateness", "Serving: freshness against lateness"),
    ("segment_decode", "Segment decoding (criterion)"),
];

// ---------------------------------------------------------------------------------------------
// Reading the result tables.

/// A Markdown table: the paragraph before it, header cells and rows of cells.
struct Table {
    intro: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The index of column `name`, or an error that says the table and this file disagree.
    fn col(&self, name: &str) -> anyhow::Result<usize> {
        self.column(name).with_context(|| {
            format!(
                "no column `{name}` in the table with columns {:?}: the benchmark's table changed, so update \
                 report.rs to match",
                self.header
            )
        })
    }
}

/// Cell `i` of a row, empty if the row is short (a hand-edited table must not panic the report).
fn cell(row: &[String], i: usize) -> &str {
    row.get(i).map_or("", String::as_str)
}

fn cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('*').to_string()).collect()
}

/// Every table in a Markdown text, each with the prose paragraph just before it (the figures take
/// their subtitle from it: the workload and its size, which differ between full and quick runs).
fn tables(text: &str) -> Vec<Table> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut fresh = true;
    while let Some(line) = lines.next() {
        if !line.starts_with('|') {
            let l = line.trim();
            if l.is_empty() {
                fresh = true;
            } else if l.starts_with('#') {
                paragraph.clear();
                fresh = true;
            } else {
                if fresh {
                    paragraph.clear();
                    fresh = false;
                }
                paragraph.push(l);
            }
            continue;
        }
        let header = cells(line);
        if !lines.next().is_some_and(|sep| sep.starts_with("|-") || sep.starts_with("|--")) {
            continue;
        }
        let mut rows = Vec::new();
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            rows.push(cells(row));
        }
        out.push(Table { intro: paragraph.join(" "), header, rows });
        paragraph.clear();
        fresh = true;
    }
    out
}

fn number(cell: &str) -> Option<f64> {
    cell.trim_end_matches('x').replace(',', "").parse().ok()
}

/// The first sentence of a table's intro, for a figure's subtitle: without Markdown code marks,
/// and with long numbers grouped (`10,000,000`, not `10000000`).
fn subtitle(intro: &str) -> String {
    let text = intro.replace('`', "");
    let end = text.find(". ").unwrap_or(text.len());
    group_digits(text[..end].trim_end_matches('.'))
}

/// Thousands separators in runs of five or more digits that are not part of a decimal.
fn group_digits(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let run: String = chars[start..i].iter().collect();
        let decimal = (start > 0 && chars[start - 1] == '.')
            || (i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit());
        if run.len() < 5 || decimal {
            out.push_str(&run);
            continue;
        }
        for (k, c) in run.chars().enumerate() {
            if k > 0 && (run.len() - k).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
    }
    out
}

/// `1 worker`, `2 workers`.
fn workers(cell: &str) -> String {
    if cell == "1" {
        "1 worker".into()
    } else {
        format!("{cell} workers")
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers as a reader wants them: three significant digits, a unit that fits the magnitude.

/// Three significant digits (two below 1), no trailing zeros: `1130`, `13.5`, `2.61`, `0.03`.
fn sig3(x: f64) -> String {
    let a = x.abs();
    let decimals = if a >= 99.95 {
        0
    } else if a >= 9.995 {
        1
    } else if a >= 0.09995 {
        2
    } else {
        3
    };
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `955k`, `1.36M`, `523`.
fn si(x: f64) -> String {
    if x.abs() >= 999_500.0 {
        format!("{}M", sig3(x / 1e6))
    } else if x.abs() >= 999.5 {
        format!("{}k", sig3(x / 1e3))
    } else {
        sig3(x)
    }
}

/// A duration given in seconds: `0.2 ms`, `276 ms`, `1.13 s`.
fn duration(seconds: f64) -> String {
    if seconds == 0.0 {
        "0".into()
    } else if seconds * 1e3 < 999.5 {
        format!("{} ms", sig3(seconds * 1e3))
    } else {
        format!("{} s", sig3(seconds))
    }
}

/// How to print durations that sit side by side along one linear axis: all in seconds once any
/// reaches a second (`0.89 s` beside `1.53 s`, not `890 ms`); along a logarithmic one (values
/// spanning more than [`LOG_SPAN`]) each in the unit that fits it.
fn durations(values: &[f64]) -> impl Fn(f64) -> String {
    let max = values.iter().copied().fold(0.0, f64::max);
    let min = values.iter().copied().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let seconds = max >= 1.0 && max / min <= LOG_SPAN;
    move |v| if seconds && v != 0.0 { format!("{} s", sig3(v)) } else { duration(v) }
}

/// How `time` compares with a `reference` time, named `than` if given: `2.42x faster`,
/// `1.3x slower than the batch reference`, or `as fast` within 3% (where `1x faster` would read
/// as a claim).
fn faster(reference: f64, time: f64, than: Option<&str>) -> String {
    let r = reference / time;
    let (comparison, word) = if (r - 1.0).abs() < 0.03 {
        ("as fast".to_string(), "as")
    } else if r > 1.0 {
        (format!("{}x faster", sig3(r)), "than")
    } else {
        (format!("{}x slower", sig3(1.0 / r)), "than")
    };
    match than {
        Some(name) => format!("{comparison} {word} {name}"),
        None => comparison,
    }
}

/// What a figure's values measure.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    /// Durations, in seconds.
    Seconds,
    /// Rates: records, events or lookups per second.
    PerSecond,
}

impl Unit {
    /// A value as its label beside a bar or point: `1.13 s`, `13.9k/s`.
    fn show(self, v: f64) -> String {
        match self {
            Unit::Seconds => duration(v),
            Unit::PerSecond => format!("{}/s", si(v)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Axes.

/// Values spanning more than this factor get a logarithmic axis: on a linear one the small ones
/// would be slivers next to the large ones.
const LOG_SPAN: f64 = 20.0;

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    /// Logarithmic when the values span more than [`LOG_SPAN`], else linear from zero.
    Auto,
    /// Linear from zero whatever the span (a relation that is linear, such as lateness against
    /// latency, or bars, whose length must be proportional to the value).
    Linear,
}

#[derive(Clone, Copy)]
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

/// The smallest of 1, 2, 5 × 10^k at or above `v` (> 0).
fn nice_above(v: f64) -> f64 {
    let e = v.log10().floor();
    let m = v / 10f64.powf(e);
    let s = [1.0, 2.0, 5.0, 10.0].into_iter().find(|&s| s >= m * (1.0 - 1e-9)).unwrap_or(10.0);
    s * 10f64.powf(e)
}

impl Axis {
    /// An axis for `values`, with `head` room above the largest (1.0: none beyond the next tick).
    fn fit(values: &[f64], head: f64, scale: Scale) -> Axis {
        let max = values.iter().copied().fold(0.0f64, f64::max).max(1e-12);
        let min = values.iter().copied().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        if scale == Scale::Auto && min.is_finite() && max / min > LOG_SPAN {
            // The ends are not rounded out to a tick: on a log axis that can leave most of a
            // decade empty, a quarter of the plot.
            return Axis { log: true, lo: min / 1.15, hi: max * 1.15 * head };
        }
        let step = nice_above(max * head / 5.0);
        Axis { log: false, lo: 0.0, hi: (max * head / step - 1e-9).ceil() * step }
    }

    /// Where `v` falls along the axis, 0 at its start and 1 at its end.
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            // Past a few decades 1-2-5 ticks crowd: decades only.
            let decades_only = (self.hi / self.lo).log10() > 2.5;
            let steps: &[f64] = if decades_only { &[1.0] } else { &[1.0, 2.0, 5.0] };
            let (first, last) = (self.lo.log10().floor() as i32, self.hi.log10().ceil() as i32);
            (first..=last)
                .flat_map(|e| steps.iter().map(move |s| s * 10f64.powi(e)))
                .filter(|v| *v >= self.lo * (1.0 - 1e-9) && *v <= self.hi * (1.0 + 1e-9))
                .collect()
        } else {
            let step = nice_above(self.hi / 5.0 * (1.0 - 1e-9));
            let n = (self.hi / step + 1e-9).floor() as usize;
            (0..=n).map(|i| self.lo + i as f64 * step).collect()
        }
    }

    /// A tick's label: one unit along a linear axis (`0`, `0.5 s`, `1 s`), the unit that fits each
    /// tick along a logarithmic one (`20 ms` … `5 s`); rates without `/s`, which the title says.
    fn tick_label(&self, v: f64, unit: Unit) -> String {
        match unit {
            Unit::PerSecond => si(v),
            Unit::Seconds if self.log => duration(v),
            Unit::Seconds if v == 0.0 => "0".into(),
            Unit::Seconds if self.hi >= 1.0 => format!("{} s", sig3(v)),
            Unit::Seconds => format!("{} ms", sig3(v * 1e3)),
        }
    }

    /// An axis title, saying so when the scale is logarithmic.
    fn title(&self, title: &str) -> String {
        if self.log {
            format!("{title} (log scale)")
        } else {
            title.to_string()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SVG.

/// Figure width in pixels (a page column at 96 dpi; the PNGs are drawn at twice this).
const W: f64 = 900.0;
/// Outer margin.
const M: f64 = 16.0;
const INK: &str = "#222222";
const MUTED: &str = "#555555";
const GRID: &str = "#e4e4e4";
const AXIS: &str = "#444444";
const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#e6730b";
const PALE_ORANGE: &str = "#f7c08a";
const GREEN: &str = "#2ca02c";
const GREY: &str = "#7f7f7f";
const LIGHT_GREY: &str = "#c0c0c0";
/// Distinct series colours, dark enough for text drawn in them on white.
const PALETTE: [&str; 9] = [BLUE, ORANGE, GREEN, "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17a2b8", "#595959"];
/// The fonts the width estimate below is made for (DejaVu Sans is wide, so others fit too).
const FONT: &str = "DejaVu Sans, Verdana, Arial, sans-serif";

/// The width of `s` in DejaVu Sans at `size`, estimated per character class: layout needs it to
/// wrap labels and keep them apart, and an SVG cannot measure its own text.
fn text_width(s: &str, size: f64) -> f64 {
    s.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | 'I' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.30,
            'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '/' | '-' | ' ' => 0.38,
            'm' | 'w' | 'M' | 'W' => 0.92,
            'A'..='Z' => 0.72,
            '0'..='9' => 0.64,
            c if c.is_ascii() => 0.61,
            _ => 0.85,
        })
        .sum::<f64>()
        * size
}

/// `s` broken at spaces into lines no wider than `width` (a longer word keeps its own line).
fn wrap(s: &str, width: f64, size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in s.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}"), size) <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

#[derive(Clone, Copy)]
struct Font {
    size: f64,
    anchor: Anchor,
    fill: &'static str,
    bold: bool,
    vertical: bool,
}

impl Font {
    fn new(size: f64) -> Font {
        Font { size, anchor: Anchor::Start, fill: INK, bold: false, vertical: false }
    }
    fn end(self) -> Font {
        Font { anchor: Anchor::End, ..self }
    }
    fn middle(self) -> Font {
        Font { anchor: Anchor::Middle, ..self }
    }
    fn fill(self, fill: &'static str) -> Font {
        Font { fill, ..self }
    }
    fn bold(self) -> Font {
        Font { bold: true, ..self }
    }
    /// Read bottom to top (a y-axis title).
    fn vertical(self) -> Font {
        Font { vertical: true, ..self }
    }
}

#[derive(Clone, Copy)]
struct Stroke {
    colour: &'static str,
    width: f64,
    dash: &'static str,
}

impl Stroke {
    fn solid(colour: &'static str, width: f64) -> Stroke {
        Stroke { colour, width, dash: "" }
    }
    fn dashed(colour: &'static str, width: f64) -> Stroke {
        Stroke { colour, width, dash: "6 4" }
    }
    fn attributes(&self) -> String {
        let dash = if self.dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{}""#, self.dash) };
        format!(r#"stroke="{}" stroke-width="{}"{dash}"#, self.colour, self.width)
    }
}

/// An SVG document being drawn; its height is known only at the end.
struct Svg {
    body: String,
}

impl Svg {
    fn new() -> Svg {
        Svg { body: String::new() }
    }

    fn text(&mut self, x: f64, y: f64, font: Font, s: &str) {
        let anchor = match font.anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let weight = if font.bold { r#" font-weight="bold""# } else { "" };
        let rotate = if font.vertical { format!(r#" transform="rotate(-90 {x:.1} {y:.1})""#) } else { String::new() };
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{}" text-anchor="{anchor}" fill="{}"{weight}{rotate}>{}</text>"#,
            font.size,
            font.fill,
            escape(s)
        );
    }

    /// Text centred vertically on `y` (SVG places text by its baseline).
    fn text_mid(&mut self, x: f64, y: f64, font: Font, s: &str) {
        self.text(x, y + 0.36 * font.size, font, s);
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str) {
        let _ = writeln!(self.body, r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"/>"#);
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: Stroke) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {}/>"#,
            stroke.attributes()
        );
    }

    fn polyline(&mut self, points: &[(f64, f64)], stroke: Stroke) {
        let points: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke-linejoin="round" {}/>"#,
            points.join(" "),
            stroke.attributes()
        );
    }

    fn circle(&mut self, (x, y): (f64, f64), r: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}" stroke="white" stroke-width="1"/>"#
        );
    }

    fn finish(self, height: f64) -> String {
        let h = height.ceil();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" font-family=\"{FONT}\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            self.body
        )
    }
}

/// A figure's title and subtitle; returns where the content below them starts.
fn header(svg: &mut Svg, title: &str, subtitle: &str) -> f64 {
    let mut y = 8.0;
    for line in wrap(title, W - 2.0 * M, 17.0) {
        y += 22.0;
        svg.text(M, y, Font::new(17.0).bold(), &line);
    }
    for line in wrap(subtitle, W - 2.0 * M, 12.0) {
        y += 17.0;
        svg.text(M, y, Font::new(12.0).fill(MUTED), &line);
    }
    y + 14.0
}

/// How a legend entry draws its series.
#[derive(Clone, Copy)]
enum Key {
    Swatch,
    Dot,
    Line,
    Wide,
    Dashed,
}

/// A legend laid out in rows across `width` from (`x`, `y`); returns its height.
fn legend(svg: &mut Svg, x: f64, y: f64, width: f64, items: &[(String, &'static str, Key)]) -> f64 {
    const ROW: f64 = 19.0;
    let font = Font::new(12.0);
    let (mut cx, mut cy) = (x, y + ROW / 2.0);
    for (name, colour, key) in items {
        let w = 22.0 + 6.0 + text_width(name, font.size);
        if cx > x && cx + w > x + width {
            cx = x;
            cy += ROW;
        }
        match key {
            Key::Swatch => svg.rect(cx + 4.0, cy - 6.0, 14.0, 12.0, colour),
            Key::Dot => svg.circle((cx + 11.0, cy), 5.0, colour),
            Key::Line => {
                svg.line((cx, cy), (cx + 22.0, cy), Stroke::solid(colour, 2.5));
                svg.circle((cx + 11.0, cy), 3.5, colour);
            }
            Key::Wide => svg.line((cx, cy), (cx + 22.0, cy), Stroke::solid(colour, 9.0)),
            Key::Dashed => svg.line((cx, cy), (cx + 22.0, cy), Stroke::dashed(colour, 2.0)),
        }
        svg.text_mid(cx + 28.0, cy, font, name);
        cx += w + 20.0;
    }
    cy + ROW / 2.0 - y
}

/// A region of the figure.
#[derive(Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// Labels wanted at heights `ys` moved apart to at least `gap` without leaving [`lo`, `hi`] where
/// there is room: lines that end close together must not print their labels on top of each other.
fn dodge(ys: &[f64], gap: f64, lo: f64, hi: f64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..ys.len()).collect();
    order.sort_by(|&a, &b| ys[a].total_cmp(&ys[b]));
    let mut placed: Vec<f64> = order.iter().map(|&i| ys[i].max(lo)).collect();
    for k in 1..placed.len() {
        placed[k] = placed[k].max(placed[k - 1] + gap);
    }
    if placed.last().is_some_and(|&last| last > hi) {
        let n = placed.len();
        placed[n - 1] = hi;
        for k in (0..n - 1).rev() {
            placed[k] = placed[k].min(placed[k + 1] - gap);
        }
    }
    let mut out = vec![0.0; ys.len()];
    for (k, &i) in order.iter().enumerate() {
        out[i] = placed[k];
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Horizontal bars in groups (a dot plot on a logarithmic axis).

/// What one row of a group shows.
#[derive(Clone, Copy)]
enum Mark {
    Value(f64),
    /// From p50 to p99: a percentile ladder's two rungs.
    Range(f64, f64),
}

impl Mark {
    fn lo(&self) -> f64 {
        match *self {
            Mark::Value(v) | Mark::Range(v, _) => v,
        }
    }
    fn hi(&self) -> f64 {
        match *self {
            Mark::Value(v) | Mark::Range(_, v) => v,
        }
    }
}

struct Bar {
    series: usize,
    mark: Mark,
    /// Printed left of a range's low end.
    left: String,
    /// Printed right of the bar's end (a range's high end).
    right: String,
}

struct Group {
    label: String,
    /// A second, smaller line under the label.
    note: String,
    bars: Vec<Bar>,
}

struct HBars {
    series: Vec<(String, &'static str)>,
    groups: Vec<Group>,
    unit: Unit,
    axis_title: String,
    /// Vertical dashed lines (a goal), with their labels.
    refs: Vec<(f64, String)>,
}

/// Horizontal bars, because their labels have the whole left column instead of a bar's width:
/// one row per bar, grouped with the group's label on the left and a legend for the series (only
/// the series present are drawn in a group, so a group never has an empty slot). On a logarithmic
/// axis each value is a dot, since a bar's length from an arbitrary axis start would mean nothing.
/// Returns the figure's height.
fn draw_hbars(svg: &mut Svg, top: f64, chart: &HBars) -> f64 {
    const LABEL_MAX: f64 = 300.0;
    const GAP: f64 = 3.0;
    const GROUP_GAP: f64 = 14.0;
    let (label_size, note_size, value_size) = (13.0, 11.0, 12.0);
    let values: Vec<f64> = chart
        .groups
        .iter()
        .flat_map(|g| g.bars.iter().flat_map(|b| [b.mark.lo(), b.mark.hi()]))
        .chain(chart.refs.iter().map(|r| r.0))
        .collect();
    let axis = Axis::fit(&values, 1.0, Scale::Auto);
    let dots = axis.log;

    let labels: Vec<(Vec<String>, Vec<String>)> = chart
        .groups
        .iter()
        .map(|g| (wrap(&g.label, LABEL_MAX, label_size), wrap(&g.note, LABEL_MAX, note_size)))
        .collect();
    let label_w = labels
        .iter()
        .flat_map(|(l, n)| {
            l.iter().map(|s| text_width(s, label_size)).chain(n.iter().map(|s| text_width(s, note_size)))
        })
        .fold(0.0, f64::max);
    let x0 = M + label_w + 14.0;
    let right = W - M;
    // The plot is as wide as it can be with every bar's label still inside the figure.
    let mut pw = right - x0;
    for bar in chart.groups.iter().flat_map(|g| &g.bars) {
        let f = axis.frac(bar.mark.hi());
        let room = text_width(&bar.right, value_size) + if dots { 12.0 } else { 6.0 };
        if f > 0.0 {
            pw = pw.min((right - x0 - room) / f);
        }
    }
    let x = |v: f64| x0 + axis.frac(v) * pw;

    let mut y = top;
    if chart.series.len() > 1 {
        let key = if dots { Key::Dot } else { Key::Swatch };
        let items: Vec<_> = chart.series.iter().map(|(n, c)| (n.clone(), *c, key)).collect();
        y += legend(svg, M, y, W - 2.0 * M, &items) + 8.0;
    }
    if !chart.refs.is_empty() {
        y += 16.0;
    }
    let plot_top = y;
    let bar_h = |g: &Group| if g.bars.len() == 1 { 22.0 } else { 17.0 };
    let mut rows = Vec::new();
    for (g, (l, n)) in chart.groups.iter().zip(&labels) {
        let bars = g.bars.len() as f64 * (bar_h(g) + GAP) - GAP;
        let text = l.len() as f64 * 16.0 + n.len() as f64 * 14.0;
        let h = bars.max(text);
        rows.push((y, h));
        y += h + GROUP_GAP;
    }
    let plot_bottom = y - GROUP_GAP + 8.0;

    for t in axis.ticks() {
        svg.line((x(t), plot_top - 4.0), (x(t), plot_bottom), Stroke::solid(GRID, 1.0));
    }
    for (v, label) in &chart.refs {
        svg.line((x(*v), plot_top - 6.0), (x(*v), plot_bottom), Stroke::dashed("#b22222", 1.5));
        let w = text_width(label, 11.0);
        let font = Font::new(11.0).fill("#b22222");
        let font = if x(*v) - w / 2.0 < M {
            font
        } else if x(*v) + w / 2.0 > right {
            font.end()
        } else {
            font.middle()
        };
        let lx = match font.anchor {
            Anchor::Start => x(*v) - 4.0,
            _ => x(*v),
        };
        svg.text(lx.max(M), plot_top - 10.0, font, label);
    }

    for ((g, (l, n)), &(gy, gh)) in chart.groups.iter().zip(&labels).zip(&rows) {
        let bh = bar_h(g);
        let bars = g.bars.len() as f64 * (bh + GAP) - GAP;
        let mut cy = gy + (gh - bars) / 2.0 + bh / 2.0;
        for bar in &g.bars {
            let colour = chart.series.get(bar.series).map_or(GREY, |s| s.1);
            let end = x(bar.mark.hi());
            if dots || matches!(bar.mark, Mark::Range(..)) {
                svg.line((x0, cy), (x0 + pw, cy), Stroke { colour: "#c8c8c8", width: 1.0, dash: "1 3" });
                if let Mark::Range(lo, hi) = bar.mark {
                    svg.line((x(lo), cy), (x(hi), cy), Stroke::solid(colour, 4.0));
                    svg.circle((x(lo), cy), 5.5, colour);
                    svg.text_mid(x(lo) - 9.0, cy, Font::new(value_size).end(), &bar.left);
                }
                svg.circle((end, cy), 5.5, colour);
                svg.text_mid(end + 10.0, cy, Font::new(value_size), &bar.right);
            } else {
                svg.rect(x0, cy - bh / 2.0, end - x0, bh, colour);
                svg.text_mid(end + 5.0, cy, Font::new(value_size), &bar.right);
            }
            cy += bh + GAP;
        }
        let text = l.len() as f64 * 16.0 + n.len() as f64 * 14.0;
        let mut ty = gy + (gh - text) / 2.0;
        for line in l {
            svg.text(x0 - 10.0, ty + 12.0, Font::new(label_size).end(), line);
            ty += 16.0;
        }
        for line in n {
            svg.text(x0 - 10.0, ty + 11.0, Font::new(note_size).end().fill(MUTED), line);
            ty += 14.0;
        }
    }

    svg.line((x0, plot_bottom), (x0 + pw, plot_bottom), Stroke::solid(AXIS, 1.0));
    for t in axis.ticks() {
        svg.line((x(t), plot_bottom), (x(t), plot_bottom + 4.0), Stroke::solid(AXIS, 1.0));
        svg.text(x(t), plot_bottom + 17.0, Font::new(11.0).middle(), &axis.tick_label(t, chart.unit));
    }
    svg.text(x0 + pw / 2.0, plot_bottom + 36.0, Font::new(12.0).middle(), &axis.title(&chart.axis_title));
    plot_bottom + 48.0
}

// ---------------------------------------------------------------------------------------------
// Lines against a numeric x (workers, a setting, or the rungs of a percentile ladder).

/// How a line is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Style {
    /// A line with a dot at each point.
    Dots,
    /// A wide pale line without dots, drawn first: a series that would otherwise hide another it
    /// lies almost on (p99 under p50 where they are a few ms apart).
    Wide,
    /// A dashed reference, without dots.
    Dashed,
}

struct Series {
    colour: &'static str,
    style: Style,
    points: Vec<(f64, f64)>,
    /// Printed left of the first point.
    left: String,
    /// Printed right of the last point.
    right: String,
}

struct Lines {
    x_ticks: Vec<(f64, String)>,
    x_title: String,
    unit: Unit,
    y_title: String,
    scale: Scale,
    /// Room above the highest value (1.0: none).
    head: f64,
    series: Vec<Series>,
    /// Text above the plot at an x (the values at that x, when points are too close to label).
    notes: Vec<(f64, Vec<String>)>,
}

/// A line chart in `frame` (axes included). Labels at the lines' ends name them directly, pushed
/// apart where lines end close together, so a reader need not match colours against a legend.
fn draw_lines(svg: &mut Svg, frame: Rect, chart: &Lines) {
    let label_size = 11.5;
    let ys: Vec<f64> = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
    let axis = Axis::fit(&ys, chart.head, chart.scale);
    let ticks = axis.ticks();
    let tick_w = ticks.iter().map(|&t| text_width(&axis.tick_label(t, chart.unit), 11.0)).fold(0.0, f64::max);
    let plot_x = frame.x + 22.0 + tick_w + 6.0;
    let plot_r = frame.x + frame.w;
    let note_lines = chart.notes.iter().map(|n| n.1.len()).max().unwrap_or(0);
    let plot_y = frame.y + note_lines as f64 * 14.0 + 6.0;
    let plot_b = frame.y + frame.h - 40.0;
    let room = |f: &dyn Fn(&Series) -> &String| {
        let w = chart.series.iter().map(|s| text_width(f(s), label_size)).fold(0.0, f64::max);
        if w > 0.0 {
            w + 12.0
        } else {
            14.0
        }
    };
    let (left_room, right_room) = (room(&|s| &s.left), room(&|s| &s.right));
    let xs: Vec<f64> = chart
        .x_ticks
        .iter()
        .map(|t| t.0)
        .chain(chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        .collect();
    let (xlo, xhi) =
        (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let (ax0, ax1) = (plot_x + left_room, plot_r - right_room);
    let px = |x: f64| if xhi > xlo { ax0 + (x - xlo) / (xhi - xlo) * (ax1 - ax0) } else { (ax0 + ax1) / 2.0 };
    let py = |y: f64| plot_b - axis.frac(y) * (plot_b - plot_y);

    for &t in &ticks {
        svg.line((plot_x, py(t)), (plot_r, py(t)), Stroke::solid(GRID, 1.0));
        svg.text_mid(plot_x - 6.0, py(t), Font::new(11.0).end(), &axis.tick_label(t, chart.unit));
    }
    svg.text(frame.x + 12.0, (plot_y + plot_b) / 2.0, Font::new(12.0).middle().vertical(), &axis.title(&chart.y_title));
    svg.line((plot_x, plot_b), (plot_r, plot_b), Stroke::solid(AXIS, 1.0));
    svg.line((plot_x, plot_y), (plot_x, plot_b), Stroke::solid(AXIS, 1.0));
    for (x, label) in &chart.x_ticks {
        svg.line((px(*x), plot_b), (px(*x), plot_b + 4.0), Stroke::solid(AXIS, 1.0));
        svg.text(px(*x), plot_b + 17.0, Font::new(11.5).middle(), label);
    }
    svg.text((plot_x + plot_r) / 2.0, plot_b + 34.0, Font::new(12.0).middle(), &chart.x_title);

    let mut order: Vec<&Series> = chart.series.iter().collect();
    order.sort_by_key(|s| s.style != Style::Wide);
    for s in order {
        let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (px(x), py(y))).collect();
        let stroke = match s.style {
            Style::Dots => Stroke::solid(s.colour, 2.5),
            Style::Wide => Stroke::solid(s.colour, 9.0),
            Style::Dashed => Stroke::dashed(s.colour, 2.0),
        };
        svg.polyline(&points, stroke);
        if s.style == Style::Dots {
            for &p in &points {
                svg.circle(p, 4.0, s.colour);
            }
        }
    }
    let ends = |first: bool| {
        let wanted: Vec<(usize, f64, f64)> = chart
            .series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let p = if first { s.points.first() } else { s.points.last() }?;
                Some((i, px(p.0), py(p.1)))
            })
            .filter(|&(i, _, _)| !(if first { &chart.series[i].left } else { &chart.series[i].right }).is_empty())
            .collect();
        let placed = dodge(&wanted.iter().map(|w| w.2).collect::<Vec<_>>(), 14.0, plot_y + 4.0, plot_b - 4.0);
        wanted.into_iter().zip(placed).map(|((i, x, _), y)| (i, x, y)).collect::<Vec<_>>()
    };
    for (i, x, y) in ends(true) {
        let s = &chart.series[i];
        svg.text_mid(x - 9.0, y, Font::new(label_size).end().fill(s.colour), &s.left);
    }
    for (i, x, y) in ends(false) {
        let s = &chart.series[i];
        svg.text_mid(x + 9.0, y, Font::new(label_size).fill(s.colour), &s.right);
    }
    for (x, lines) in &chart.notes {
        let w = lines.iter().map(|l| text_width(l, 11.0)).fold(0.0, f64::max);
        let (font, nx) = if px(*x) - w / 2.0 < plot_x + 4.0 {
            (Font::new(11.0), px(*x).max(plot_x + 4.0))
        } else if px(*x) + w / 2.0 > plot_r {
            (Font::new(11.0).end(), px(*x))
        } else {
            (Font::new(11.0).middle(), px(*x))
        };
        for (k, line) in lines.iter().enumerate() {
            svg.text(nx, frame.y + 11.0 + k as f64 * 14.0, font.fill(MUTED), line);
        }
    }
}

/// Vertical bars in `frame`, one per (label, value, colour), each with its value on top.
fn draw_vbars(svg: &mut Svg, frame: Rect, bars: &[(String, f64, &'static str)], unit: Unit, y_title: &str) {
    let values: Vec<f64> = bars.iter().map(|b| b.1).collect();
    let axis = Axis::fit(&values, 1.12, Scale::Linear);
    let ticks = axis.ticks();
    let tick_w = ticks.iter().map(|&t| text_width(&axis.tick_label(t, unit), 11.0)).fold(0.0, f64::max);
    let plot_x = frame.x + 22.0 + tick_w + 6.0;
    let plot_r = frame.x + frame.w;
    let (plot_y, plot_b) = (frame.y + 6.0, frame.y + frame.h - 40.0);
    let py = |y: f64| plot_b - axis.frac(y) * (plot_b - plot_y);
    for &t in &ticks {
        svg.line((plot_x, py(t)), (plot_r, py(t)), Stroke::solid(GRID, 1.0));
        svg.text_mid(plot_x - 6.0, py(t), Font::new(11.0).end(), &axis.tick_label(t, unit));
    }
    svg.text(frame.x + 12.0, (plot_y + plot_b) / 2.0, Font::new(12.0).middle().vertical(), &axis.title(y_title));
    svg.line((plot_x, plot_b), (plot_r, plot_b), Stroke::solid(AXIS, 1.0));
    let slot = (plot_r - plot_x) / bars.len().max(1) as f64;
    let bw = (slot * 0.55).min(64.0);
    for (k, (label, v, colour)) in bars.iter().enumerate() {
        let cx = plot_x + slot * (k as f64 + 0.5);
        svg.rect(cx - bw / 2.0, py(*v), bw, plot_b - py(*v), colour);
        svg.text(cx, py(*v) - 6.0, Font::new(12.0).middle(), &unit.show(*v));
        svg.text(cx, plot_b + 17.0, Font::new(11.5).middle(), label);
    }
}

// ---------------------------------------------------------------------------------------------
// The figures.

/// Index of `name` in `names`, added at the end if new (series in order of first appearance).
fn index_of(names: &mut Vec<String>, name: &str) -> usize {
    names.iter().position(|n| n == name).unwrap_or_else(|| {
        names.push(name.to_string());
        names.len() - 1
    })
}

/// Replay throughput: one group per worker count and backfill granularity, one bar per source, so
/// that "the sources are as fast as each other" and "two workers are faster" both show at once.
/// Bars are the whole job's records/s (per worker would make two workers look slower); the label
/// gives per worker too, the figure the goals use.
fn replay_figure(t: &Table) -> anyhow::Result<String> {
    let (src, w, gran, rate) =
        (t.col("source")?, t.col("workers")?, t.col("backfill granularity")?, t.col("records/s")?);
    let mut sources = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for row in &t.rows {
        let Some(r) = number(cell(row, rate)) else { continue };
        let series = index_of(&mut sources, cell(row, src));
        let key = (cell(row, w).to_string(), cell(row, gran).to_string());
        let g = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            let note = match key.1.split_whitespace().next().and_then(number) {
                Some(ms) => format!("backfill granularity {}", duration(ms / 1e3)),
                None if key.1 == "exact" => "exact times".into(),
                None => key.1.clone(),
            };
            groups.push(Group { label: workers(&key.0), note, bars: Vec::new() });
            keys.push(key.clone());
            keys.len() - 1
        });
        let n = number(&key.0).unwrap_or(1.0);
        let right = if n > 1.0 {
            format!("{} ({} per worker)", Unit::PerSecond.show(r), Unit::PerSecond.show(r / n))
        } else {
            Unit::PerSecond.show(r)
        };
        groups[g].bars.push(Bar { series, mark: Mark::Value(r), left: String::new(), right });
    }
    anyhow::ensure!(!groups.is_empty(), "the replay table has no rows with a records/s value");
    let series = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // The names the paper uses: `local archive`, `S3 (moto)`, `broker (Tansu)`.
            let name = if s == "local" {
                "local archive".to_string()
            } else {
                s.replace("s3", "S3").replace("tansu", "Tansu")
            };
            (name, PALETTE[i % PALETTE.len()])
        })
        .collect();
    let mut svg = Svg::new();
    let top = header(&mut svg, "Replay: like counts, records/s from each source", &subtitle(&t.intro));
    let chart =
        HBars { series, groups, unit: Unit::PerSecond, axis_title: "records/s, the whole job".into(), refs: vec![] };
    let h = draw_hbars(&mut svg, top, &chart);
    Ok(svg.finish(h))
}

/// The ranked feed: one update (p50 to p99) against recomputing from scratch, on a logarithmic
/// axis with the goal (a p50 update 100x faster than the batch reference) drawn in, so the gap to
/// it shows.
fn ranked_feed_figure(t: &Table, text: &str) -> anyhow::Result<String> {
    let (m, v) = (t.col("measure")?, t.col("ms")?);
    let (mut p50, mut p99) = (None, None);
    let mut others = Vec::new();
    for row in &t.rows {
        let Some(ms) = number(cell(row, v)) else { continue };
        match cell(row, m) {
            "update p50" => p50 = Some(ms / 1e3),
            "update p99" => p99 = Some(ms / 1e3),
            name => others.push((name.to_string(), ms / 1e3)),
        }
    }
    let batch = others.iter().find(|o| o.0.contains("batch reference")).map(|o| o.1);
    let mut groups = Vec::new();
    let note = match (p50, batch) {
        (Some(p), Some(b)) => {
            format!("until the output is complete; p50 {}", faster(b, p, Some("the batch reference")))
        }
        _ => "until the output is complete".into(),
    };
    let label = "one follow or unfollow".to_string();
    match (p50, p99) {
        (Some(lo), Some(hi)) => groups.push(Group {
            label,
            note,
            bars: vec![Bar {
                series: 0,
                mark: Mark::Range(lo, hi),
                left: format!("p50 {}", duration(lo)),
                right: format!("p99 {}", duration(hi)),
            }],
        }),
        (Some(x), None) | (None, Some(x)) => groups.push(Group {
            label,
            note,
            bars: vec![Bar { series: 0, mark: Mark::Value(x), left: String::new(), right: duration(x) }],
        }),
        (None, None) => {}
    }
    for (name, s) in others {
        // "recompute: the batch reference (ranks and all feeds, BTreeMaps)": the parenthesis is
        // detail, under the label.
        let (label, note) = match name.split_once(" (") {
            Some((l, n)) => (l.to_string(), n.trim_end_matches(')').to_string()),
            None => (name, String::new()),
        };
        groups.push(Group {
            label,
            note,
            bars: vec![Bar { series: 1, mark: Mark::Value(s), left: String::new(), right: duration(s) }],
        });
    }
    anyhow::ensure!(!groups.is_empty(), "the ranked-feed table has no rows with a ms value");
    // The goal is stated in the prose after the table ("Goal: 100x."): draw it where it is given.
    let goal =
        text.split("Goal: ").nth(1).and_then(|rest| rest.split('x').next()).and_then(|g| g.trim().parse::<f64>().ok());
    let refs = match (goal, batch) {
        (Some(g), Some(b)) => {
            vec![(b / g, format!("goal: {}x faster than the batch reference ({})", sig3(g), duration(b / g)))]
        }
        _ => vec![],
    };
    let series = vec![
        ("one update (p50 to p99 over all updates)".to_string(), BLUE),
        ("recomputing from scratch".to_string(), GREY),
    ];
    let mut svg = Svg::new();
    let top = header(&mut svg, "Ranked feed: one update against recomputing from scratch", &subtitle(&t.intro));
    let chart = HBars { series, groups, unit: Unit::Seconds, axis_title: "time".into(), refs };
    let h = draw_hbars(&mut svg, top, &chart);
    Ok(svg.finish(h))
}

/// Recovery: per history, a full replay against a restart from each codec's checkpoint, with the
/// restart's speed-up and checkpoint size beside its bar. (The checkpointing runs until the crash
/// are a different comparison, the price of checkpointing, and stay in the table.)
fn recovery_figure(t: &Table) -> anyhow::Result<String> {
    let (h, c, run, secs) = (t.col("history")?, t.col("codec")?, t.col("run")?, t.col("seconds")?);
    let mib = t.column("checkpoint MiB");
    let full: Vec<(String, f64)> = t
        .rows
        .iter()
        .filter(|row| cell(row, run).contains("full replay"))
        .filter_map(|row| Some((cell(row, h).to_string(), number(cell(row, secs))?)))
        .collect();
    let all: Vec<f64> = t.rows.iter().filter_map(|row| number(cell(row, secs))).collect();
    let show = durations(&all);
    let mut names = Vec::new();
    let mut histories = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    for row in &t.rows {
        let Some(s) = number(cell(row, secs)) else { continue };
        let history = cell(row, h);
        let (name, right) = if cell(row, run).contains("full replay") {
            ("full replay, no checkpoints".to_string(), show(s))
        } else if cell(row, run).contains("restart") {
            let mut right = show(s);
            if let Some(f) = full.iter().find(|f| f.0 == history).map(|f| f.1) {
                right.push_str(&format!(" ({})", faster(f, s, None)));
            }
            if let Some(size) = mib.and_then(|i| number(cell(row, i))) {
                right.push_str(&format!(", {} MiB checkpoint", sig3(size)));
            }
            (format!("restart from the {} checkpoint", cell(row, c)), right)
        } else {
            continue;
        };
        let series = index_of(&mut names, &name);
        let g = index_of(&mut histories, history);
        if g == groups.len() {
            let note = match history {
                "wide" => "the state grows with the history",
                "churn" => "likes churn over a small key space",
                _ => "",
            };
            groups.push(Group { label: format!("{history} history"), note: note.into(), bars: Vec::new() });
        }
        groups[g].bars.push(Bar { series, mark: Mark::Value(s), left: String::new(), right });
    }
    anyhow::ensure!(!groups.is_empty(), "the recovery table has no full-replay or restart rows");
    let mut restarts = 0;
    let series = names
        .into_iter()
        .map(|n| {
            let colour = if n.starts_with("full") {
                GREY
            } else {
                restarts += 1;
                [BLUE, ORANGE, GREEN, "#9467bd"][(restarts - 1) % 4]
            };
            (n, colour)
        })
        .collect();
    let mut svg = Svg::new();
    let top = header(&mut svg, "Recovery after a crash at 99% of the history", &subtitle(&t.intro));
    let chart = HBars {
        series,
        groups,
        unit: Unit::Seconds,
        axis_title: "time of the run, lower is better".into(),
        refs: vec![],
    };
    let h = draw_hbars(&mut svg, top, &chart);
    Ok(svg.finish(h))
}

/// Nexmark: each query's events/s against workers, one line per query labelled at both ends, on a
/// logarithmic axis (the queries span 35x).
fn nexmark_figure(t: &Table) -> anyhow::Result<String> {
    let (q, w, eps) = (t.col("query")?, t.col("workers")?, t.col("events/s")?);
    let mut queries = Vec::new();
    let mut points: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    for row in &t.rows {
        let (Some(n), Some(r)) = (number(cell(row, w)), number(cell(row, eps))) else { continue };
        let i = index_of(&mut queries, cell(row, q));
        points.resize(queries.len(), Vec::new());
        points[i].push((n, r));
        if !counts.contains(&n) {
            counts.push(n);
        }
    }
    anyhow::ensure!(!queries.is_empty(), "the Nexmark table has no rows with workers and events/s");
    counts.sort_by(f64::total_cmp);
    let series = queries
        .iter()
        .zip(points)
        .enumerate()
        .map(|(i, (name, mut points))| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = |p: &(f64, f64)| format!("{name} {}", Unit::PerSecond.show(p.1));
            let left = points.first().map(label).unwrap_or_default();
            // The speed-up over the fewest workers: how well the query scales, read off directly.
            let right = match (points.first(), points.last()) {
                (Some(a), Some(b)) if points.len() > 1 => format!("{} ({}x)", label(b), sig3(b.1 / a.1)),
                _ => String::new(),
            };
            Series { colour: PALETTE[i % PALETTE.len()], style: Style::Dots, points, left, right }
        })
        .collect();
    let chart = Lines {
        x_ticks: counts.iter().map(|&n| (n, workers(&sig3(n)))).collect(),
        x_title: "workers in one process (in brackets: the speed-up over one worker)".into(),
        unit: Unit::PerSecond,
        y_title: "events/s, all workers together".into(),
        scale: Scale::Auto,
        head: 1.0,
        series,
        notes: vec![],
    };
    let mut svg = Svg::new();
    let top = header(&mut svg, "Nexmark: each query's throughput against workers", &subtitle(&t.intro));
    let frame = Rect { x: M, y: top, w: W - 2.0 * M, h: 420.0 };
    draw_lines(&mut svg, frame, &chart);
    Ok(svg.finish(top + frame.h + 8.0))
}

/// Engine overhead: per pipeline and worker count, one bar per engine, with the ratios the goals
/// are stated in under the group's label.
fn overhead_figure(t: &Table) -> anyhow::Result<String> {
    let (p, w) = (t.col("pipeline")?, t.col("workers")?);
    let engines: Vec<(usize, &str, &'static str)> = [
        ("Kappa s", "Kappa", BLUE),
        ("bare s", "bare timely/differential", GREY),
        ("bare, one time per round, s", "bare, one time per round (DBSP's granularity)", LIGHT_GREY),
        ("DBSP s", "DBSP", GREEN),
    ]
    .into_iter()
    .filter_map(|(c, name, colour)| Some((t.column(c)?, name, colour)))
    .collect();
    anyhow::ensure!(!engines.is_empty(), "the overhead table has none of the columns `Kappa s`, `bare s`, `DBSP s`");
    let all: Vec<f64> =
        t.rows.iter().flat_map(|row| engines.iter().filter_map(|&(i, _, _)| number(cell(row, i)))).collect();
    let show = durations(&all);
    let ratios: Vec<(usize, &str)> =
        ["Kappa / bare", "Kappa / DBSP"].into_iter().filter_map(|c| Some((t.column(c)?, c))).collect();
    let groups: Vec<Group> = t
        .rows
        .iter()
        .map(|row| Group {
            label: format!("{}, {}", cell(row, p), workers(cell(row, w))),
            note: ratios
                .iter()
                .filter_map(|&(i, name)| Some(format!("{name} {}x", sig3(number(cell(row, i))?))))
                .collect::<Vec<_>>()
                .join(", "),
            bars: engines
                .iter()
                .enumerate()
                .filter_map(|(k, &(i, _, _))| {
                    let s = number(cell(row, i))?;
                    Some(Bar { series: k, mark: Mark::Value(s), left: String::new(), right: show(s) })
                })
                .collect(),
        })
        .filter(|g| !g.bars.is_empty())
        .collect();
    let title = if engines.iter().any(|e| e.1 == "DBSP") {
        "Engine overhead: the same queries on Kappa, bare differential dataflow and DBSP"
    } else {
        "Engine overhead: the same queries on Kappa and bare differential dataflow"
    };
    let series = engines.iter().map(|&(_, name, colour)| (name.to_string(), colour)).collect();
    let mut svg = Svg::new();
    let top = header(&mut svg, title, &subtitle(&t.intro));
    let chart = HBars { series, groups, unit: Unit::Seconds, axis_title: "time, lower is better".into(), refs: vec![] };
    let h = draw_hbars(&mut svg, top, &chart);
    Ok(svg.finish(h))
}

/// Freshness against lateness: produce→visible p50 and p99 against `--lateness-ms`, on linear axes
/// with the lateness itself dashed in, since the point is that one follows the other one for one.
fn lateness_figure(t: &Table) -> anyhow::Result<String> {
    let l = t.col("lateness ms")?;
    let (p50, p99) = (t.col("produce→visible p50 ms")?, t.col("produce→visible p99 ms")?);
    let trials = t.column("RYW trials");
    let rows: Vec<(f64, f64, f64, Option<f64>)> = t
        .rows
        .iter()
        .filter_map(|row| {
            Some((
                number(cell(row, l))?,
                number(cell(row, p50))? / 1e3,
                number(cell(row, p99))? / 1e3,
                trials.and_then(|i| number(cell(row, i))),
            ))
        })
        .collect();
    anyhow::ensure!(!rows.is_empty(), "the lateness table has no rows with lateness, p50 and p99");
    let max_lateness = rows.iter().map(|r| r.0).fold(0.0, f64::max);
    let series = vec![
        Series {
            colour: BLUE,
            style: Style::Dots,
            points: rows.iter().map(|r| (r.0, r.1)).collect(),
            left: String::new(),
            right: String::new(),
        },
        Series {
            colour: PALE_ORANGE,
            style: Style::Wide,
            points: rows.iter().map(|r| (r.0, r.2)).collect(),
            left: String::new(),
            right: String::new(),
        },
        Series {
            colour: GREY,
            style: Style::Dashed,
            points: vec![(0.0, 0.0), (max_lateness, max_lateness / 1e3)],
            left: String::new(),
            right: String::new(),
        },
    ];
    // p50 and p99 lie a few ms apart, too close to label on the lines: the values go above each
    // setting instead, with the number of trials (a p99 of four trials is their maximum).
    let notes = rows
        .iter()
        .map(|r| {
            let mut lines = vec![format!("p50 {}", duration(r.1)), format!("p99 {}", duration(r.2))];
            if let Some(n) = r.3 {
                lines.push(format!("{} trials", sig3(n)));
            }
            (r.0, lines)
        })
        .collect();
    let chart = Lines {
        x_ticks: rows.iter().map(|r| (r.0, sig3(r.0))).collect(),
        x_title: "--lateness-ms".into(),
        unit: Unit::Seconds,
        y_title: "produce → visible".into(),
        scale: Scale::Linear,
        head: 1.08,
        series,
        notes,
    };
    let mut svg = Svg::new();
    let mut top =
        header(&mut svg, "Freshness against lateness: produce → visible for each --lateness-ms", &subtitle(&t.intro));
    let items = [
        ("p50".to_string(), BLUE, Key::Line),
        ("p99".to_string(), PALE_ORANGE, Key::Wide),
        ("the lateness itself".to_string(), GREY, Key::Dashed),
    ];
    top += legend(&mut svg, M, top, W - 2.0 * M, &items) + 8.0;
    let frame = Rect { x: M, y: top, w: W - 2.0 * M, h: 400.0 };
    draw_lines(&mut svg, frame, &chart);
    Ok(svg.finish(top + frame.h + 8.0))
}

/// Serving, Kappa beside PostgreSQL: lookups/s, and lookup and produce→visible latency each as a
/// percentile ladder (p50 to p99, one line per system; logarithmic where they span orders of
/// magnitude, as they do here).
fn serving_figure(t: &Table) -> anyhow::Result<String> {
    let from = t.col("served from")?;
    let (rate, l50, l99) = (t.col("lookups/s")?, t.col("lookup p50 ms")?, t.col("lookup p99 ms")?);
    let (v50, v99) = (t.col("produce→visible p50 ms")?, t.col("produce→visible p99 ms")?);
    let systems: Vec<(String, String, &'static str, &Vec<String>)> = t
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let full = cell(row, from).replace('`', "");
            let short = full.split(" (").next().unwrap_or(&full).to_string();
            (full, short, PALETTE[i % PALETTE.len()], row)
        })
        .collect();
    anyhow::ensure!(!systems.is_empty(), "the serving table has no rows");
    let mut svg = Svg::new();
    let mut top =
        header(&mut svg, "Serving: Kappa's view beside a PostgreSQL table kept by the output", &subtitle(&t.intro));
    let items: Vec<_> = systems.iter().map(|s| (s.0.clone(), s.2, Key::Swatch)).collect();
    top += legend(&mut svg, M, top, W - 2.0 * M, &items) + 10.0;
    let gap = 30.0;
    let pw = (W - 2.0 * M - 2.0 * gap) / 3.0;
    let frame = |k: usize| Rect { x: M + k as f64 * (pw + gap), y: top + 22.0, w: pw, h: 300.0 };
    let titles = ["lookups served", "lookup latency", "produce → visible (read your writes)"];
    for (k, title) in titles.iter().enumerate() {
        svg.text(frame(k).x + pw / 2.0, top + 8.0, Font::new(13.0).bold().middle(), title);
    }
    let bars: Vec<(String, f64, &'static str)> =
        systems.iter().filter_map(|s| Some((s.1.clone(), number(cell(s.3, rate))?, s.2))).collect();
    draw_vbars(&mut svg, frame(0), &bars, Unit::PerSecond, "lookups/s");
    let ladder = |p50: usize, p99: usize| Lines {
        x_ticks: vec![(0.0, "p50".into()), (1.0, "p99".into())],
        x_title: "percentile".into(),
        unit: Unit::Seconds,
        y_title: "latency".into(),
        scale: Scale::Auto,
        head: 1.0,
        series: systems
            .iter()
            .filter_map(|s| {
                let (lo, hi) = (number(cell(s.3, p50))? / 1e3, number(cell(s.3, p99))? / 1e3);
                Some(Series {
                    colour: s.2,
                    style: Style::Dots,
                    points: vec![(0.0, lo), (1.0, hi)],
                    left: duration(lo),
                    right: duration(hi),
                })
            })
            .collect(),
        notes: vec![],
    };
    draw_lines(&mut svg, frame(1), &ladder(l50, l99));
    draw_lines(&mut svg, frame(2), &ladder(v50, v99));
    Ok(svg.finish(frame(0).y + frame(0).h + 8.0))
}

/// The figures drawn from one result file: (file name without extension, the SVG or why not).
fn figures(name: &str, text: &str, tables: &[Table]) -> Vec<(&'static str, anyhow::Result<String>)> {
    let find = |column: &str| {
        tables.iter().find(|t| t.column(column).is_some()).with_context(|| {
            format!("no table with a column `{column}`: the benchmark's output changed, so update report.rs to match")
        })
    };
    match name {
        "replay" => vec![("replay", find("records/s per worker").and_then(replay_figure))],
        "recovery" => vec![("recovery", find("history").and_then(recovery_figure))],
        "pipelines" => vec![("ranked_feed", find("measure").and_then(|t| ranked_feed_figure(t, text)))],
        "nexmark" => vec![("nexmark", find("query").and_then(nexmark_figure))],
        "overhead" => vec![("overhead", find("Kappa / bare").and_then(overhead_figure))],
        "serving" => vec![("serving", find("served from").and_then(serving_figure))],
        "serving_lateness" => vec![("serving_lateness", find("lateness ms").and_then(lateness_figure))],
        _ => vec![],
    }
}

/// A PNG beside each SVG, for readers and tools that do not show SVG, drawn by python's cairosvg
/// rather than a Rust rasteriser: resvg with text pulls in about 70 crates (fonts, shaping, a 2D
/// renderer) for a crate that `scripts/bench` builds on two cores before every run, for files that
/// are only a convenience beside the SVGs; cairosvg is one `pip install`. Without it the SVGs are
/// still complete, so its absence is a note, not a failure.
fn write_pngs(svgs: &[PathBuf], dir: &Path) {
    let found = Command::new("python3").args(["-c", "import cairosvg"]).output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "note: no PNG copies of the figures: python3 with cairosvg is missing (`pip install cairosvg`, then run \
             report again). The SVGs are complete; any PNGs in {} are from an earlier run.",
            dir.display()
        );
        return;
    }
    for svg in svgs {
        let png = svg.with_extension("png");
        // Twice the SVG's size: sharp on high-density screens and when a page scales it down.
        let out =
            Command::new("python3").args(["-m", "cairosvg"]).arg(svg).arg("-o").arg(&png).args(["-s", "2"]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                eprintln!("note: no {}: cairosvg failed: {}", png.display(), String::from_utf8_lossy(&o.stderr).trim())
            }
            Err(e) => eprintln!("note: no {}: could not run python3: {e}", png.display()),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let results = args.papers.join("results");
    let figures_dir = args.papers.join("figures");
    std::fs::create_dir_all(&figures_dir).with_context(|| {
        format!("cannot create {}: pass the papers/ directory with --papers", figures_dir.display())
    })?;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let provenance = if args.suffix.is_empty() {
        "Every figure in `papers/kappa.md` comes from here. Regenerate with `scripts/bench`.".to_string()
    } else {
        "A quick run (`scripts/bench --quick`, smaller inputs) to check that every benchmark runs: \
         `papers/kappa.md` quotes the full run (`scripts/bench`), which `git checkout papers/` restores."
            .to_string()
    };
    let mut md = format!(
        "# Results\n\n{provenance}\n\n- machine: {}\n- date: {}\n- commit (assembled at): {commit}\n- figures: `papers/figures/`\n",
        kappa_benches::machine(true),
        &date[..10],
    );
    let mut drawn = Vec::new();
    let mut failed = Vec::new();
    for (name, title) in PARTS {
        let file = if name == "segment_decode" {
            results.join("segment_decode.txt")
        } else {
            results.join(format!("{name}{}.md", args.suffix))
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            md.push_str(&format!("\n## {title}\n\n(not run: {} is missing)\n", file.display()));
            continue;
        };
        md.push_str(&format!("\n## {title}\n\nFrom `{}`.\n\n", file.display()));
        if name == "segment_decode" {
            md.push_str(&format!("```\n{}\n```\n", text.trim()));
            continue;
        }
        // Demote the file's headings under this section.
        for line in text.lines().skip_while(|l| l.starts_with("# ")) {
            if line.starts_with('#') {
                md.push_str(&format!("#{line}\n"));
            } else {
                md.push_str(&format!("{line}\n"));
            }
        }
        for (figure, svg) in figures(name, &text, &tables(&text)) {
            let path = figures_dir.join(format!("{figure}.svg"));
            match svg {
                Ok(svg) => {
                    std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
                    drawn.push(path);
                }
                Err(e) => failed.push(format!("{} (from {}): {e:#}", path.display(), file.display())),
            }
        }
    }
    let out = args.papers.join("results.md");
    std::fs::write(&out, md).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {} and {} figures in {}", out.display(), drawn.len(), figures_dir.display());
    write_pngs(&drawn, &figures_dir);
    anyhow::ensure!(
        failed.is_empty(),
        "these figures were not drawn (the rest and results.md were written):\n  {}",
        failed.join("\n  ")
    );
    Ok(())
}
