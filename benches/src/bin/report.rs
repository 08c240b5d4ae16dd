//! Assembles `papers/results.md` (machine, date, commit, and every benchmark's tables) and draws
//! the figures in `papers/figures/` from the tables the benchmarks wrote into `papers/results/`.
//!
//! Run with: `cargo run --release -p kappa-benches --bin report -- [--suffix -quick]`
//! (`scripts/bench` runs it last).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use clap::Parser;
use plotters::prelude::*;

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

/// A Markdown table: header cells and rows of cells.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

fn cells(line: &str) -> Vec<String> {
    line.trim().trim_matches('|').split('|').map(|c| c.trim().trim_matches('*').to_string()).collect()
}

/// Every table in a Markdown text.
fn tables(text: &str) -> Vec<Table> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with('|') {
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
        out.push(Table { header, rows });
    }
    out
}

fn number(cell: &str) -> Option<f64> {
    cell.trim_end_matches('x').replace(',', "").parse().ok()
}

/// Bars from a table: labelled by the `labels` columns (workers as `2w`), valued by `value` × `scale`.
fn bars(t: &Table, labels: &[&str], value: &str, scale: f64) -> anyhow::Result<Vec<(String, f64)>> {
    let columns: Vec<(usize, bool)> = labels
        .iter()
        .map(|c| t.column(c).map(|i| (i, *c == "workers")).with_context(|| format!("no column `{c}`")))
        .collect::<anyhow::Result<_>>()?;
    let v = t.column(value).with_context(|| format!("no column `{value}`"))?;
    Ok(t.rows
        .iter()
        .filter_map(|row| {
            let label: Vec<String> =
                columns.iter().map(|&(i, w)| if w { format!("{}w", row[i]) } else { row[i].clone() }).collect();
            Some((label.join(" "), number(&row[v])? * scale))
        })
        .collect())
}

/// A bar chart of `bars` into `path` (SVG).
fn bar_chart(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)]) -> anyhow::Result<()> {
    if bars.is_empty() {
        return Ok(());
    }
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = bars.len() as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(70)
        .y_label_area_size(80)
        .build_cartesian_2d((0u32..n).into_segmented(), 0f64..top.max(1e-9))?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 11))
        .draw()?;
    chart.draw_series(
        Histogram::vertical(&chart)
            .style(RGBColor(52, 101, 164).filled())
            .margin(8)
            .data(bars.iter().enumerate().map(|(i, b)| (i as u32, b.1))),
    )?;
    root.present()?;
    Ok(())
}

/// Bars in groups: one group per row of `t` (labelled by `labels`), one coloured bar per column
/// of `series`, with a legend.
fn grouped_bar_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    t: &Table,
    labels: &[&str],
    series: &[&str],
) -> anyhow::Result<()> {
    let groups: Vec<(String, f64)> = bars(t, labels, series[0], 1.0)?;
    let values: Vec<Vec<Option<f64>>> = series
        .iter()
        .map(|c| {
            let i = t.column(c).with_context(|| format!("no column `{c}`"))?;
            Ok(t.rows.iter().map(|row| number(&row[i])).collect())
        })
        .collect::<anyhow::Result<_>>()?;
    if groups.is_empty() {
        return Ok(());
    }
    // Each group takes one slot per series and one empty slot between groups.
    let width = series.len() as u32 + 1;
    let n = groups.len() as u32 * width;
    // Head room above the bars for the legend.
    let top = values.iter().flatten().flatten().fold(0.0f64, |a, &b| a.max(b)) * 1.6;
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0u32..n).into_segmented(), 0f64..top.max(1e-9))?;
    let names: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let middle = (series.len() as u32 - 1) / 2;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_label)
        .x_labels(n as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if i % width == middle => {
                names.get((i / width) as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 12))
        .draw()?;
    let colours = [RGBColor(52, 101, 164), RGBColor(115, 115, 115), RGBColor(204, 102, 0), RGBColor(78, 154, 6)];
    for (j, (name, column)) in series.iter().zip(&values).enumerate() {
        let colour = colours[j % colours.len()];
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(colour.filled())
                    .margin(2)
                    .data(column.iter().enumerate().filter_map(|(g, v)| Some((g as u32 * width + j as u32, (*v)?)))),
            )?
            .label(name.trim_end_matches(" s").trim_end_matches(',').to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let results = args.papers.join("results");
    let figures = args.papers.join("figures");
    std::fs::create_dir_all(&figures)?;
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
    let mut found = Vec::new();
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
        found.push((name, tables(&text)));
    }

    for (name, tables) in &found {
        match *name {
            "replay" => {
                if let Some(t) = tables.iter().find(|t| t.column("records/s per worker").is_some()) {
                    let bars = bars(t, &["source", "workers", "backfill granularity"], "records/s per worker", 1e-3)?;
                    bar_chart(&figures.join("replay.svg"), "Replay: like counts", "k records/s per worker", &bars)?;
                }
            }
            "recovery" => {
                if let Some(t) = tables.iter().find(|t| t.column("history").is_some()) {
                    let (h, c, run, secs) = (
                        t.column("history").context("history")?,
                        t.column("codec").context("codec")?,
                        t.column("run").context("run")?,
                        t.column("seconds").context("seconds")?,
                    );
                    let bars: Vec<(String, f64)> = t
                        .rows
                        .iter()
                        .filter(|row| row[run].contains("full replay") || row[run].contains("restart"))
                        .filter_map(|row| {
                            let what = if row[run].contains("restart") {
                                format!("restart {}", row[c])
                            } else {
                                "full replay".into()
                            };
                            Some((format!("{}: {what}", row[h]), number(&row[secs])?))
                        })
                        .collect();
                    bar_chart(&figures.join("recovery.svg"), "Recovery after a crash at 99%", "seconds", &bars)?;
                }
            }
            "nexmark" => {
                if let Some(t) = tables.iter().find(|t| t.column("query").is_some()) {
                    let bars = bars(t, &["query", "workers"], "events/s per worker", 1e-3)?;
                    bar_chart(&figures.join("nexmark.svg"), "Nexmark in process", "k events/s per worker", &bars)?;
                }
            }
            "serving_lateness" => {
                if let Some(t) = tables.iter().find(|t| t.column("lateness ms").is_some()) {
                    grouped_bar_chart(
                        &figures.join("serving_lateness.svg"),
                        "Produce to visible against --lateness-ms (like counts live on Tansu)",
                        "ms",
                        t,
                        &["lateness ms"],
                        &["produce→visible p50 ms", "produce→visible p99 ms"],
                    )?;
                }
            }
            "overhead" => {
                if let Some(t) = tables.iter().find(|t| t.column("Kappa / bare").is_some()) {
                    let mut engines = vec!["Kappa s", "bare s"];
                    engines.extend(
                        ["bare, one time per round, s", "DBSP s"].into_iter().filter(|c| t.column(c).is_some()),
                    );
                    grouped_bar_chart(
                        &figures.join("overhead.svg"),
                        "The same queries on Kappa, bare differential dataflow and DBSP",
                        "seconds",
                        t,
                        &["pipeline", "workers"],
                        &engines,
                    )?;
                }
            }
            "pipelines" => {
                if let Some(t) = tables.iter().find(|t| t.column("measure").is_some()) {
                    let (m, v) = (t.column("measure").context("measure")?, t.column("ms").context("ms")?);
                    let bars: Vec<(String, f64)> = t
                        .rows
                        .iter()
                        .filter_map(|row| {
                            let label = row[m].split(':').next().unwrap_or(&row[m]).chars().take(28).collect();
                            Some((label, number(&row[v])?))
                        })
                        .collect();
                    bar_chart(&figures.join("ranked_feed.svg"), "Ranked feed: one update vs recompute", "ms", &bars)?;
                }
            }
            _ => {}
        }
    }
    let out = args.papers.join("results.md");
    std::fs::write(&out, md)?;
    eprintln!("wrote {} and the figures in {}", out.display(), figures.display());
    Ok(())
}
