//! A small line chart rendered to PNG (for BENCHMARKS.md): x is a few named
//! points, y is logarithmic (a ceiling of 30,000/s and a hot packet's few
//! hundred opens/s must both be readable), one coloured line per series,
//! labels in an 8x8 bitmap font. No plotting library: this is all the bench needs.

use anyhow::Result;
use font8x8::UnicodeFonts;
use std::path::Path;

pub struct Series {
    pub name: String,
    pub color: [u8; 3],
    pub dashed: bool,
    pub values: Vec<f64>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_ticks: Vec<String>,
    pub series: Vec<Series>,
}

struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, pixels: vec![255; width * height * 3] }
    }

    fn dot(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: [u8; 3]) {
        for dy in 0..h {
            for dx in 0..w {
                self.dot(x + dx, y + dy, color);
            }
        }
    }

    /// A line `thickness` pixels wide (Bresenham, stamped), optionally dashed.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thickness: i64, color: [u8; 3], dashed: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut step) = (x0, y0, dx + dy, 0);
        loop {
            if !dashed || (step / 8) % 2 == 0 {
                self.rect(x - thickness / 2, y - thickness / 2, thickness, thickness, color);
            }
            step += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, text: &str, scale: i64, color: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(c).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.rect(x + (i as i64 * 8 + col) * scale, y + row as i64 * scale, scale, scale, color);
                    }
                }
            }
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(&self.pixels)?;
        Ok(())
    }
}

/// Whole decades that hold every value: (10^low, 10^high).
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (min, max) = values.filter(|v| *v > 0.0).fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let low = min.min(max).log10().floor() as i32;
    let high = (max.log10().ceil() as i32).max(low + 1);
    (low, high)
}

impl Chart {
    pub fn render(&self, path: &Path) -> Result<()> {
        let (width, height) = (960usize, 600usize);
        let (left, right, top, bottom) = (110i64, 250i64, 60i64, 80i64);
        let mut c = Canvas::new(width, height);
        let (plot_w, plot_h) = (width as i64 - left - right, height as i64 - top - bottom);
        let grey = [200, 200, 200];
        let black = [0, 0, 0];
        let (low, high) = decades(self.series.iter().flat_map(|s| s.values.iter().copied()));
        let y_of = |v: f64| {
            let fraction = (v.max(10f64.powi(low)).log10() - f64::from(low)) / f64::from(high - low);
            top + plot_h - (fraction * plot_h as f64).round() as i64
        };
        c.text(left, 20, &self.title, 2, black);
        // Horizontal grid at 1, 2 and 5 of every decade; labels on each.
        for decade in low..high {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(decade);
                let y = y_of(v);
                c.line((left, y), (left + plot_w, y), 1, if m == 1.0 { [150, 150, 150] } else { grey }, false);
                let label = format!("{v:.0}");
                c.text(left - 10 - 8 * label.len() as i64, y - 4, &label, 1, black);
            }
        }
        let label = format!("{:.0}", 10f64.powi(high));
        c.text(left - 10 - 8 * label.len() as i64, y_of(10f64.powi(high)) - 4, &label, 1, black);
        c.text(10, top - 20, &self.y_label, 1, black);
        // X ticks, evenly spaced.
        let n = self.x_ticks.len().max(2) as i64;
        let x_at = |i: usize| left + plot_w * i as i64 / (n - 1);
        for (i, tick) in self.x_ticks.iter().enumerate() {
            let x = x_at(i);
            c.line((x, top), (x, top + plot_h), 1, grey, false);
            c.text(x - 4 * tick.len() as i64, top + plot_h + 10, tick, 1, black);
        }
        c.text(left + plot_w / 2 - 4 * self.x_label.len() as i64, top + plot_h + 35, &self.x_label, 1, black);
        c.line((left, top + plot_h), (left + plot_w, top + plot_h), 2, black, false);
        c.line((left, top), (left, top + plot_h), 2, black, false);
        // Series and legend.
        for (k, s) in self.series.iter().enumerate() {
            let point = |i: usize| (x_at(i), y_of(s.values[i]));
            for i in 1..s.values.len() {
                c.line(point(i - 1), point(i), 3, s.color, s.dashed);
            }
            for i in 0..s.values.len() {
                let (x, y) = point(i);
                c.rect(x - 4, y - 4, 9, 9, s.color);
            }
            let ly = top + 20 * k as i64;
            c.line((left + plot_w + 20, ly + 4), (left + plot_w + 50, ly + 4), 3, s.color, s.dashed);
            c.text(left + plot_w + 58, ly, &s.name, 1, black);
        }
        c.save(path)
    }
}

/// The chart of a run: opens/s of its largest hot packet at each number of
/// clients, one line per host run (memory dashed), beside `/healthz`.
pub fn hot_packets(results: &crate::bench::Results, path: &Path) -> Result<()> {
    use crate::bench::{Store, name};
    let colors = [[214, 39, 40], [31, 119, 180], [44, 160, 44], [255, 127, 14], [148, 103, 189], [140, 86, 75]];
    let runs = &results.runs;
    let biggest = runs.iter().flat_map(|r| r.hot.iter().map(|h| h.shares)).max().unwrap_or(100);
    let mut series = vec![Series {
        name: "/healthz ceiling".into(),
        color: [90, 90, 90],
        dashed: true,
        values: runs.first().map(|r| r.ceiling.iter().map(|c| c.per_s).collect()).unwrap_or_default(),
    }];
    for (i, r) in runs.iter().enumerate() {
        series.push(Series {
            name: format!("{} ({})", name(r.strategy), name(r.store)),
            color: colors[i % colors.len()],
            dashed: r.store == Store::Memory,
            values: r.hot.iter().filter(|h| h.shares == biggest).map(|h| h.opens_per_s).collect(),
        });
    }
    Chart {
        title: format!("Opens/s of a hot packet ({biggest} shares) vs /healthz"),
        x_label: "concurrent clients".into(),
        y_label: "per second (log scale)".into(),
        x_ticks: results.client_counts.iter().map(|c| c.to_string()).collect(),
        series,
    }
    .render(path)
}

/// The chart of a soak: per minute, each store's opens/s, open p99 (ms),
/// resident set (MiB) and, on SQLite, its write-ahead log (MiB). Flat lines
/// are the goal; the log scale keeps them all readable on one chart.
pub fn soak(soaks: &[crate::soak::Soak], path: &Path) -> Result<()> {
    use crate::bench::{Store, name};
    let mut series = Vec::new();
    for soak in soaks {
        let store = name(soak.store);
        let dashed = soak.store == Store::Memory;
        let of = |f: &dyn Fn(&crate::soak::Minute) -> f64| soak.minutes.iter().map(f).collect::<Vec<f64>>();
        series.push(Series {
            name: format!("opens/s ({store})"),
            color: [214, 39, 40],
            dashed,
            values: of(&|m| m.opens_per_s),
        });
        series.push(Series {
            name: format!("p99 ms ({store})"),
            color: [31, 119, 180],
            dashed,
            values: of(&|m| m.p99.as_secs_f64() * 1000.0),
        });
        series.push(Series {
            name: format!("RSS MiB ({store})"),
            color: [44, 160, 44],
            dashed,
            values: of(&|m| (m.rss >> 20) as f64),
        });
        if soak.store == Store::Sqlite {
            series.push(Series {
                name: format!("WAL MiB ({store})"),
                color: [255, 127, 14],
                dashed,
                values: of(&|m| (m.wal_bytes >> 20) as f64),
            });
        }
    }
    let minutes = soaks.iter().map(|s| s.minutes.len()).max().unwrap_or(0);
    Chart {
        title: "Soak: per minute, memory dashed".into(),
        x_label: "minute".into(),
        y_label: "value (log scale)".into(),
        x_ticks: (1..=minutes).map(|m| m.to_string()).collect(),
        series,
    }
    .render(path)
}
