//! The side-by-side table over `--runs` runs: each cell is the median across one server's runs
//! (component-wise for `a / b` cells); key rows also get the min..max across runs and the
//! watchkv/etcd ratio of the medians.

use std::fmt::Write as _;

use crate::report::Report;
use crate::server::Kind;

/// One run's value of one row.
pub enum Cell {
    /// Nothing to show: the scenario did not run or had no samples.
    Empty,
    /// Figures printed with this many decimals, joined by " / ".
    Nums(Vec<f64>, usize),
    /// Whether the run passed a check (or hit a limit); across runs, "true runs/runs".
    Count(bool),
}

impl Cell {
    pub fn num(v: f64, decimals: usize) -> Self {
        Self::Nums(vec![v], decimals)
    }

    /// Whole numbers, e.g. "sent / acked / errors".
    pub fn ints(vs: &[u64]) -> Self {
        Self::Nums(vs.iter().map(|&v| v as f64).collect(), 0)
    }
}

/// Each server's reports, one per run, in run order.
pub type Columns = [(Kind, Vec<Report>)];

/// One printed row: its cells per server, then for key rows the ratio and the per-server spread.
struct Line {
    name: String,
    cells: Vec<String>,
    ratio: Option<String>,
    spread: Option<Vec<String>>,
}

/// The rows of a table, built from closures over one run's `Report`.
pub struct Rows<'a> {
    columns: &'a Columns,
    lines: Vec<Line>,
    /// Column headings instead of the servers' names.
    labels: Option<Vec<String>>,
}

/// The median of unsorted values (the mean of the middle two for an even count).
pub fn median(mut vs: Vec<f64>) -> Option<f64> {
    vs.sort_by(f64::total_cmp);
    let n = vs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(vs[n / 2]),
        _ => Some((vs[n / 2 - 1] + vs[n / 2]) / 2.0),
    }
}

/// One server's cells of one row across its runs: the median text, the min..max text, and the
/// first figure's median (for the ratio).
fn aggregate(cells: &[Cell]) -> (String, String, Option<f64>) {
    let counts: Vec<bool> = cells.iter().filter_map(|c| if let Cell::Count(b) = c { Some(*b) } else { None }).collect();
    if !counts.is_empty() {
        let text = format!("{}/{}", counts.iter().filter(|&&b| b).count(), cells.len());
        return (text, String::new(), None);
    }
    // Runs where the scenario did not run are left out of the figures (the exactly-once count
    // row shows them as failed).
    let runs: Vec<(&Vec<f64>, usize)> =
        cells.iter().filter_map(|c| if let Cell::Nums(v, d) = c { Some((v, *d)) } else { None }).collect();
    let Some(&(first, decimals)) = runs.first() else {
        return ("-".into(), "-".into(), None);
    };
    let (mut mid, mut span, mut first_median) = (Vec::new(), Vec::new(), None);
    for i in 0..first.len() {
        let vs: Vec<f64> = runs.iter().filter_map(|(v, _)| v.get(i).copied()).collect();
        let m = median(vs.clone()).unwrap_or(f64::NAN);
        first_median = first_median.or(Some(m));
        mid.push(format!("{m:.decimals$}"));
        let (lo, hi) = vs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        span.push(format!("{lo:.decimals$}..{hi:.decimals$}"));
    }
    (mid.join(" / "), span.join(" / "), first_median)
}

impl<'a> Rows<'a> {
    pub fn new(columns: &'a Columns) -> Self {
        Self { columns, lines: Vec::new(), labels: None }
    }

    /// Heads the columns with `labels` instead of the servers' names (e.g. when one server's
    /// runs fill the only column).
    pub fn label_columns(&mut self, labels: &[&str]) {
        self.labels = Some(labels.iter().map(|l| l.to_string()).collect());
    }

    /// A heading: a name with no values.
    pub fn title(&mut self, name: &str) {
        let cells = vec![String::new(); self.columns.len()];
        self.lines.push(Line { name: name.to_string(), cells, ratio: None, spread: None });
    }

    pub fn row(&mut self, name: &str, f: impl Fn(&Report) -> Cell) {
        self.push(name, false, f);
    }

    /// A row that matters for the comparison: with the watchkv/etcd ratio of the medians (when
    /// both ran) and, over several runs, each server's min..max.
    pub fn key(&mut self, name: &str, f: impl Fn(&Report) -> Cell) {
        self.push(name, true, f);
    }

    fn push(&mut self, name: &str, key: bool, f: impl Fn(&Report) -> Cell) {
        let mut line = Line { name: name.to_string(), cells: Vec::new(), ratio: None, spread: None };
        let (mut spread, mut medians) = (Vec::new(), Vec::new());
        for (kind, reports) in self.columns {
            let cells: Vec<Cell> = reports.iter().map(&f).collect();
            let (text, span, m) = aggregate(&cells);
            line.cells.push(text);
            spread.push(span);
            medians.push((*kind, m));
        }
        if key {
            let of = |k: Kind| medians.iter().find(|(kind, _)| *kind == k).and_then(|(_, m)| *m);
            if let (Some(w), Some(e)) = (of(Kind::Watchkv), of(Kind::Etcd)) {
                line.ratio = Some(if e == 0.0 { "-".into() } else { format!("{:.2}", w / e) });
            }
            let runs = self.columns.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
            if runs > 1 && spread.iter().any(|s| !s.is_empty()) {
                line.spread = Some(spread);
            }
        }
        self.lines.push(line);
    }

    pub fn print(&self) {
        let with_ratio = self.lines.iter().any(|l| l.ratio.is_some());
        // Headings have no values, so they may run past the first column.
        let named = self.lines.iter().filter(|l| !l.cells.iter().all(String::is_empty));
        let w0 = named.map(|l| l.name.len()).max().unwrap_or(0).max(14);
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                let cells = self.lines.iter().map(|l| l.cells[i].len());
                let spreads = self.lines.iter().filter_map(|l| l.spread.as_ref().map(|s| s[i].len()));
                cells.chain(spreads).max().unwrap_or(0).max(14)
            })
            .collect();
        let mut header = format!("{:<w0$}", "");
        for (i, (kind, _)) in self.columns.iter().enumerate() {
            let name = match self.labels.as_ref().and_then(|l| l.get(i)) {
                Some(label) => label.as_str(),
                None if *kind == Kind::Etcd => "etcd 3.4",
                None => kind.name(),
            };
            let _ = write!(header, " | {:>w$}", name, w = widths[i]);
        }
        if with_ratio {
            header.push_str(" | watchkv/etcd");
        }
        println!("{header}");
        println!("{}", "-".repeat(header.len()));
        let print_line = |name: &str, vals: &[String], ratio: Option<&String>| {
            if vals.iter().all(String::is_empty) {
                println!("{name}");
                return;
            }
            let mut line = format!("{name:<w0$}");
            for (i, v) in vals.iter().enumerate() {
                let _ = write!(line, " | {:>w$}", v, w = widths[i]);
            }
            if let Some(r) = ratio {
                let _ = write!(line, " | {r:>12}");
            }
            println!("{line}");
        };
        for l in &self.lines {
            print_line(&l.name, &l.cells, l.ratio.as_ref());
            if let Some(spread) = &l.spread {
                print_line("      min..max", spread, None);
            }
        }
    }
}
