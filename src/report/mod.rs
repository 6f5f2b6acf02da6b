//! Line charts as PNG, for `difi report` and `difi compare`: stacked panels
//! of one or several lines, a title (and a legend), the value range on the y
//! axis and kimg on the x axis. Labels are drawn
//! with a 6×11 bitmap font rendered from DejaVu Sans Mono
//! (`scripts/make-font-atlas.py`).

use std::path::Path;

use anyhow::{Context, Result};

/// The font atlas: printable ASCII from 32 to 126, one 6×11 cell each.
const FONT: &[u8] = include_bytes!("font.png");
const CELL_W: usize = 6;
const CELL_H: usize = 11;

/// One series to draw: `(x, y)` points in order, and whether to mark each point.
pub struct Series {
    pub title: String,
    pub points: Vec<(f64, f64)>,
    pub markers: bool,
}

/// An RGB image.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
    font: Vec<bool>,
    font_width: usize,
}

const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [225, 225, 225];
const LINE: [u8; 3] = [31, 90, 180];

impl Canvas {
    fn new(width: usize, height: usize) -> Result<Self> {
        let decoder = png::Decoder::new(std::io::Cursor::new(FONT));
        let mut reader = decoder.read_info().context("font atlas")?;
        let mut buffer = vec![0; reader.output_buffer_size().context("font atlas size")?];
        let info = reader.next_frame(&mut buffer).context("font atlas")?;
        let channels = info.color_type.samples();
        let font = buffer[..info.buffer_size()].chunks(channels).map(|px| px[0] > 127).collect::<Vec<bool>>();
        Ok(Canvas { width, height, pixels: vec![255; width * height * 3], font, font_width: info.width as usize })
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let at = (y as usize * self.width + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
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

    fn text(&mut self, x: i64, y: i64, text: &str, color: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let code = ch as usize;
            let glyph = if (32..127).contains(&code) { code - 32 } else { '?' as usize - 32 };
            for gy in 0..CELL_H {
                for gx in 0..CELL_W {
                    if self.font[gy * self.font_width + glyph * CELL_W + gx] {
                        self.set(x + (i * CELL_W + gx) as i64, y + gy as i64, color);
                    }
                }
            }
        }
    }

    fn write(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().with_context(|| path.display().to_string())?;
        writer.write_image_data(&self.pixels).with_context(|| path.display().to_string())?;
        writer.finish().with_context(|| path.display().to_string())
    }
}

/// Height of the caption band above a captioned picture.
const CAPTION_HEIGHT: usize = 16;

/// `picture` (uint8 `[C, H, W]`, C = 1 or 3) under a white band holding each
/// caption at its x offset, written as an RGB PNG to `path`.
pub fn write_captioned(picture: &tch::Tensor, captions: &[(usize, String)], path: &Path) -> Result<()> {
    let size = picture.size();
    let (c, h, w) = (size[0] as usize, size[1] as usize, size[2] as usize);
    anyhow::ensure!(c == 1 || c == 3, "a picture has 1 or 3 channels, not {c}");
    let hwc = picture.permute([1, 2, 0]).contiguous();
    let mut pixels = vec![0u8; h * w * c];
    hwc.f_copy_data_u8(&mut pixels, h * w * c).context("picture pixels")?;
    let mut canvas = Canvas::new(w, h + CAPTION_HEIGHT)?;
    for y in 0..h {
        for x in 0..w {
            let at = (y * w + x) * c;
            let rgb = if c == 1 { [pixels[at]; 3] } else { [pixels[at], pixels[at + 1], pixels[at + 2]] };
            canvas.set(x as i64, (y + CAPTION_HEIGHT) as i64, rgb);
        }
    }
    for (x, text) in captions {
        canvas.text(*x as i64, 3, text, INK);
    }
    let tmp = path.with_extension("png.tmp");
    canvas.write(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

/// A number in at most 8 characters.
fn label(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e5 || value.abs() < 1e-3) {
        format!("{value:.2e}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

const WIDTH: usize = 760;
const PANEL_HEIGHT: usize = 170;
const LEFT: i64 = 64;
const RIGHT: i64 = 16;
const TOP: i64 = 22;
const BOTTOM: i64 = 22;

/// Line colours, in order (Okabe–Ito, distinguishable with colour blindness).
const PALETTE: [[u8; 3]; 8] = [
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [230, 159, 0],
    [86, 180, 233],
    [0, 0, 0],
    [150, 150, 150],
];

/// One chart: several labelled lines over a shared x axis.
pub struct Panel {
    pub title: String,
    pub lines: Vec<Series>,
    /// A logarithmic y axis (non-positive values are left out), for
    /// measures that span orders of magnitude across lines.
    pub log_y: bool,
}

/// Draws every series in its own panel, stacked, with `x_label` under each
/// x axis, and writes the PNG to `path` (through a temporary file).
pub fn draw(series: &[Series], x_label: &str, path: &Path) -> Result<()> {
    let panels: Vec<Panel> = series
        .iter()
        .map(|s| Panel {
            title: s.title.clone(),
            lines: vec![Series { title: String::new(), points: s.points.clone(), markers: s.markers }],
            log_y: false,
        })
        .collect();
    draw_panels(&panels, x_label, path)
}

/// Draws each panel with all its lines in one plot (a colour per line, named
/// in a legend beside the title), stacked, and writes the PNG to `path`.
pub fn draw_panels(panels: &[Panel], x_label: &str, path: &Path) -> Result<()> {
    let mut canvas = Canvas::new(WIDTH, PANEL_HEIGHT * panels.len().max(1))?;
    for (index, panel) in panels.iter().enumerate() {
        let top = (index * PANEL_HEIGHT) as i64;
        let (x0, x1) = (LEFT, WIDTH as i64 - RIGHT);
        let (y0, y1) = (top + TOP, top + PANEL_HEIGHT as i64 - BOTTOM);
        canvas.text(LEFT, top + 6, &panel.title, INK);
        let mut legend_x = LEFT + ((panel.title.len() + 3) * CELL_W) as i64;
        for (k, line) in panel.lines.iter().enumerate().filter(|(_, l)| !l.title.is_empty()) {
            let color = PALETTE[k % PALETTE.len()];
            canvas.line((legend_x, top + 11), (legend_x + 12, top + 11), color);
            canvas.line((legend_x, top + 12), (legend_x + 12, top + 12), color);
            canvas.text(legend_x + 16, top + 6, &line.title, color);
            legend_x += ((line.title.len() + 4) * CELL_W) as i64;
        }
        for k in 0..=4 {
            let y = y0 + (y1 - y0) * k / 4;
            canvas.line((x0, y), (x1, y), GRID);
        }
        canvas.line((x0, y0), (x0, y1), INK);
        canvas.line((x0, y1), (x1, y1), INK);
        let scale = |y: f64| if panel.log_y { y.log10() } else { y };
        let unscale = |y: f64| if panel.log_y { 10f64.powf(y) } else { y };
        let plotted = |line: &Series| -> Vec<(f64, f64)> {
            line.points.iter().map(|&(x, y)| (x, scale(y))).filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
        };
        let finite: Vec<(f64, f64)> = panel.lines.iter().flat_map(plotted).collect();
        if finite.is_empty() {
            canvas.text(x0 + 8, (y0 + y1) / 2, "no finite values", INK);
            continue;
        }
        let (mut xmin, mut xmax) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
        let (mut ymin, mut ymax) = finite.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
        if xmax <= xmin {
            xmin -= 0.5;
            xmax += 0.5;
        }
        if ymax <= ymin {
            let pad = if ymin == 0.0 { 1.0 } else { ymin.abs() * 0.05 };
            ymin -= pad;
            ymax += pad;
        }
        let px = |x: f64| x0 + ((x - xmin) / (xmax - xmin) * (x1 - x0) as f64).round() as i64;
        let py = |y: f64| y1 - ((y - ymin) / (ymax - ymin) * (y1 - y0) as f64).round() as i64;
        if panel.log_y {
            for k in 0..=4 {
                let y = y0 + (y1 - y0) * k / 4;
                let value = unscale(ymax - (ymax - ymin) * k as f64 / 4.0);
                canvas.text(2, (y - 5).clamp(y0 - 4, y1 - 8), &label(value), INK);
            }
        } else {
            canvas.text(2, y0 - 4, &label(unscale(ymax)), INK);
            canvas.text(2, y1 - 8, &label(unscale(ymin)), INK);
        }
        canvas.text(x0, y1 + 4, &label(xmin), INK);
        let right = label(xmax);
        canvas.text(x1 - (right.len() * CELL_W) as i64, y1 + 4, &right, INK);
        canvas.text((x0 + x1) / 2 - (x_label.len() * CELL_W / 2) as i64, y1 + 4, x_label, INK);
        for (k, line) in panel.lines.iter().enumerate() {
            let color = if panel.lines.len() == 1 { LINE } else { PALETTE[k % PALETTE.len()] };
            let points: Vec<(i64, i64)> = plotted(line).iter().map(|(x, y)| (px(*x), py(*y))).collect();
            for pair in points.windows(2) {
                canvas.line(pair[0], pair[1], color);
            }
            if line.markers || points.len() == 1 {
                for &(x, y) in &points {
                    for (dx, dy) in [(-1, -1), (-1, 1), (1, -1), (1, 1), (0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)] {
                        canvas.set(x + dx, y + dy, color);
                    }
                }
            }
        }
    }
    let tmp = path.with_extension("png.tmp");
    canvas.write(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_short() {
        assert_eq!(label(12.5), "12.5");
        assert_eq!(label(3.0), "3");
        assert_eq!(label(0.00012), "1.20e-4");
        assert!(label(-123456.0).len() <= 9);
    }

    #[test]
    fn draws_a_chart_with_readable_dimensions() {
        let dir = std::env::temp_dir().join(format!("difi-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.png");
        let series = [
            Series { title: "loss".into(), points: vec![(0.0, 3.0), (1.0, 2.0), (2.0, 2.5)], markers: false },
            Series { title: "flat".into(), points: vec![(0.0, 1.0), (1.0, 1.0)], markers: true },
            Series { title: "empty".into(), points: vec![(0.0, f64::NAN)], markers: true },
        ];
        draw(&series, "kimg", &path).unwrap();
        let together = Panel { title: "together".into(), lines: series.into_iter().collect(), log_y: true };
        draw_panels(&[together], "kimg", &dir.join("together.png")).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width as usize, reader.info().height as usize), (WIDTH, 3 * PANEL_HEIGHT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
