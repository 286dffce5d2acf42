//! Attributions drawn for people: what suits the input's kind.
//!
//! - An image (`[C, H, W]`, or `[H, W]`): a PNG grid with one row per sample, the input
//!   in gray first, then one heat map per target. A heat map sums the channels; a row's
//!   maps share one scale, the largest magnitude among them, so the target with the
//!   strongest evidence stands out: red where the input pushed the explained output up,
//!   blue where it pushed it down, white where it did not matter. A header names each
//!   map's column by its target (a class index).
//! - Tabular features (`[F]`): an SVG bar chart ranking the features by their mean
//!   absolute attribution over the samples, a bar red when the mean attribution is
//!   positive and blue when negative.
//! - A sequence (`[T, F]` with few features per position): a table of per-position
//!   scores (each position's attributions summed over its features), one column a
//!   sample, as CSV and as text.

use crate::image_grid::ImageGridError;
use std::fmt::Write;

/// How an input's samples are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
    Tabular {
        features: usize,
    },
    Sequence {
        length: usize,
        features: usize,
    },
}

/// A sequence position with more features than this is drawn as an image row.
const SEQUENCE_MAX_FEATURES: u64 = 3;

impl InputKind {
    /// The kind a sample shape suggests: `[F]` tabular, `[C, H, W]` an image, `[T, F]` a
    /// sequence when `F` is at most 3 and an image otherwise; other ranks are tabular
    /// over their flattened values.
    pub fn of(sample_shape: &[u64]) -> InputKind {
        let n = |d: u64| d as usize;
        match *sample_shape {
            [c, h, w] => InputKind::Image {
                channels: n(c),
                height: n(h),
                width: n(w),
            },
            [t, f] if f <= SEQUENCE_MAX_FEATURES => InputKind::Sequence {
                length: n(t),
                features: n(f),
            },
            [h, w] => InputKind::Image {
                channels: 1,
                height: n(h),
                width: n(w),
            },
            _ => InputKind::Tabular {
                features: sample_shape.iter().product::<u64>() as usize,
            },
        }
    }

    /// The kind named on the command line (`image`, `tabular`, `sequence`) for a sample
    /// shape, or why that shape cannot be drawn so.
    pub fn named(name: &str, sample_shape: &[u64]) -> Result<InputKind, String> {
        let n = |d: u64| d as usize;
        let total = sample_shape.iter().product::<u64>() as usize;
        match (name, sample_shape) {
            ("image", &[c, h, w]) => Ok(InputKind::Image {
                channels: n(c),
                height: n(h),
                width: n(w),
            }),
            ("image", &[h, w]) => Ok(InputKind::Image {
                channels: 1,
                height: n(h),
                width: n(w),
            }),
            ("sequence", &[t, f]) => Ok(InputKind::Sequence {
                length: n(t),
                features: n(f),
            }),
            ("sequence", &[t]) => Ok(InputKind::Sequence {
                length: n(t),
                features: 1,
            }),
            ("tabular", _) => Ok(InputKind::Tabular { features: total }),
            ("image" | "sequence", _) => Err(format!(
                "a sample of shape {sample_shape:?} cannot be drawn as {name} \
                 (images are [C, H, W] or [H, W], sequences [T, F] or [T])"
            )),
            _ => Err(format!(
                "`{name}` is no input kind: image, tabular or sequence"
            )),
        }
    }
}

/// An RGB picture, row-major, three bytes a pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    fn new(width: usize, height: usize, fill: [u8; 3]) -> RgbImage {
        RgbImage {
            width,
            height,
            pixels: fill.repeat(width * height),
        }
    }

    fn block(&mut self, x: usize, y: usize, size: usize, color: [u8; 3]) {
        for row in y..y + size {
            for col in x..x + size {
                let at = (row * self.width + col) * 3;
                self.pixels[at..at + 3].copy_from_slice(&color);
            }
        }
    }

    /// The picture as a PNG file (8-bit RGB).
    pub fn to_png(&self) -> Result<Vec<u8>, ImageGridError> {
        let size = |n: usize| {
            u32::try_from(n).map_err(|_| ImageGridError::Layout(format!("{n} pixels is too wide")))
        };
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, size(self.width)?, size(self.height)?);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }
}

/// Light gray around and between cells.
const BACKGROUND: [u8; 3] = [224, 224, 224];

/// The diverging color of `v` in `[-1, 1]`: blue, white, red.
pub fn diverging(v: f32) -> [u8; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) };
    let fade = (255.0 * (1.0 - v.abs())).round() as u8;
    if v >= 0.0 {
        [255, fade, fade]
    } else {
        [fade, fade, 255]
    }
}

/// The digits 0-9 in a 3x5 pixel font, one row of three bits a line, top first.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b001, 0b001, 0b001],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Draws the digits of `text` (other characters are skipped) with `pixel`-sized dots,
/// the top left corner at `(x, y)`.
fn draw_digits(image: &mut RgbImage, text: &str, x: usize, y: usize, pixel: usize) {
    let digits = text.chars().filter_map(|c| c.to_digit(10));
    for (n, d) in digits.enumerate() {
        let x0 = x + n * 4 * pixel;
        for (row, bits) in DIGITS[d as usize].iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    image.block(x0 + col * pixel, y + row * pixel, pixel, [0, 0, 0]);
                }
            }
        }
    }
}

/// A grid of images, one row per sample: `inputs[i]` (gray, `height x width` values,
/// channels already combined) then each of `heat[t][i]` as a heat map, the row's maps on
/// one scale. Every value is a `scale x scale` block. With `titles` (one per heat map),
/// a header row names the maps' columns by the digits of their titles (class indices).
pub fn heat_map_grid(
    height: usize,
    width: usize,
    inputs: &[Vec<f32>],
    heat: &[Vec<Vec<f32>>],
    scale: usize,
    titles: &[String],
) -> RgbImage {
    let scale = scale.max(1);
    let gap = scale.max(2);
    let columns = 1 + heat.len();
    let rows = inputs.len();
    let (cell_w, cell_h) = (width * scale, height * scale);
    let pixel = (scale / 3).max(1);
    let header = match titles.is_empty() {
        true => 0,
        false => 5 * pixel + gap,
    };
    let mut image = RgbImage::new(
        columns * cell_w + (columns + 1) * gap,
        header + rows * cell_h + (rows + 1) * gap,
        BACKGROUND,
    );
    for (t, title) in titles.iter().enumerate().take(heat.len()) {
        let digits = title.chars().filter(char::is_ascii_digit).count();
        let text_w = (4 * digits).saturating_sub(1) * pixel;
        let x0 = gap + (t + 1) * (cell_w + gap) + cell_w.saturating_sub(text_w) / 2;
        draw_digits(&mut image, title, x0, gap, pixel);
    }
    for (r, input) in inputs.iter().enumerate() {
        let y0 = header + gap + r * (cell_h + gap);
        let (lo, hi) = min_max(input);
        for (p, v) in input.iter().enumerate() {
            let level = match hi > lo {
                true => (255.0 * (v - lo) / (hi - lo)).round() as u8,
                false => 0,
            };
            let (x, y) = (gap + (p % width) * scale, y0 + (p / width) * scale);
            image.block(x, y, scale, [level; 3]);
        }
        let largest = heat
            .iter()
            .flat_map(|maps| maps[r].iter())
            .fold(0f32, |m, v| m.max(v.abs()));
        for (t, maps) in heat.iter().enumerate() {
            let map = &maps[r];
            let x0 = gap + (t + 1) * (cell_w + gap);
            for (p, v) in map.iter().enumerate() {
                let v = if largest > 0.0 { v / largest } else { 0.0 };
                let (x, y) = (x0 + (p % width) * scale, y0 + (p / width) * scale);
                image.block(x, y, scale, diverging(v));
            }
        }
    }
    image
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// Sums an image sample's channels: `[C, H, W]` values to `[H, W]`.
pub fn sum_channels(values: &[f32], channels: usize) -> Vec<f32> {
    let plane = values.len() / channels.max(1);
    (0..plane)
        .map(|p| (0..channels).map(|c| values[c * plane + p]).sum())
        .collect()
}

/// Escapes text for an SVG text node.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One feature's line of a ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct RankedFeature {
    pub index: usize,
    pub name: String,
    /// Mean absolute attribution over the samples.
    pub mean_abs: f32,
    /// Mean attribution over the samples.
    pub mean: f32,
}

/// The features ranked by mean absolute attribution, largest first (ties by index).
/// `attributions` holds `samples * names.len()` values.
pub fn rank_features(attributions: &[f32], names: &[String]) -> Vec<RankedFeature> {
    let f = names.len().max(1);
    let samples = (attributions.len() / f).max(1);
    let mut ranked: Vec<RankedFeature> = names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let column = attributions.iter().skip(j).step_by(f);
            let (abs, sum) = column.fold((0f64, 0f64), |(a, s), v| {
                (a + v.abs() as f64, s + *v as f64)
            });
            RankedFeature {
                index: j,
                name: name.clone(),
                mean_abs: (abs / samples as f64) as f32,
                mean: (sum / samples as f64) as f32,
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.mean_abs
            .total_cmp(&a.mean_abs)
            .then(a.index.cmp(&b.index))
    });
    ranked
}

/// A horizontal bar chart of a ranking, as SVG.
pub fn ranking_svg(title: &str, ranked: &[RankedFeature]) -> String {
    let label_w = 16
        + 7 * ranked
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0);
    let bar_w = 360usize;
    let row_h = 18usize;
    let top = 44usize;
    let width = label_w + bar_w + 90;
    let height = top + row_h * ranked.len() + 30;
    let largest = ranked.iter().fold(0f32, |m, r| m.max(r.mean_abs));
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<text x="10" y="36" fill="#555">mean |attribution| over the samples; red: raises the output on average, blue: lowers it</text>"##
    );
    for (i, r) in ranked.iter().enumerate() {
        let y = top + i * row_h;
        let w = match largest > 0.0 {
            true => (bar_w as f32 * r.mean_abs / largest).max(0.5),
            false => 0.5,
        };
        let color = if r.mean >= 0.0 { "#d73027" } else { "#4575b4" };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 6,
            y + 13,
            escape(&r.name)
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{label_w}" y="{}" width="{w:.1}" height="{}" fill="{color}"/>"#,
            y + 3,
            row_h - 5
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}">{:.3e}</text>"#,
            label_w as f32 + w + 4.0,
            y + 13,
            r.mean_abs
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Per-position scores of sequence samples: `scores[i][t]` is sample `i`'s attributions
/// at position `t` summed over its `features`.
pub fn position_scores(attributions: &[f32], length: usize, features: usize) -> Vec<Vec<f32>> {
    let per_sample = (length * features).max(1);
    attributions
        .chunks(per_sample)
        .map(|sample| {
            sample
                .chunks(features.max(1))
                .map(|position| position.iter().sum())
                .collect()
        })
        .collect()
}

/// The per-position table as CSV: `position,lag,sample_0,…`, where `lag` counts
/// positions back from the end (the last position is lag 1: "one step before the
/// prediction").
pub fn positions_csv(scores: &[Vec<f32>]) -> String {
    let length = scores.first().map_or(0, Vec::len);
    let mut csv = String::from("position,lag");
    for i in 0..scores.len() {
        let _ = write!(csv, ",sample_{i}");
    }
    csv.push('\n');
    for t in 0..length {
        let _ = write!(csv, "{t},{}", length - t);
        for sample in scores {
            let _ = write!(csv, ",{}", sample[t]);
        }
        csv.push('\n');
    }
    csv
}

/// The per-position table as aligned text, with a bar of `#` per sample's largest
/// magnitude for the first sample.
pub fn positions_text(scores: &[Vec<f32>]) -> String {
    let length = scores.first().map_or(0, Vec::len);
    let mut text = String::from("position   lag");
    for i in 0..scores.len() {
        let _ = write!(text, " {:>11}", format!("sample {i}"));
    }
    text.push('\n');
    let largest = scores
        .first()
        .map_or(0f32, |s| s.iter().fold(0f32, |m, v| m.max(v.abs())));
    for t in 0..length {
        let _ = write!(text, "{t:>8} {:>5}", length - t);
        for sample in scores {
            let _ = write!(text, " {:>11.4}", sample[t]);
        }
        if let Some(first) = scores.first()
            && largest > 0.0
        {
            let bar = (20.0 * first[t].abs() / largest).round() as usize;
            let mark = if first[t] >= 0.0 { '+' } else { '-' };
            let _ = write!(text, "  {}", mark.to_string().repeat(bar));
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_pick_their_kind() {
        assert_eq!(InputKind::of(&[30]), InputKind::Tabular { features: 30 });
        assert_eq!(
            InputKind::of(&[1, 8, 8]),
            InputKind::Image {
                channels: 1,
                height: 8,
                width: 8
            }
        );
        assert_eq!(
            InputKind::of(&[20, 1]),
            InputKind::Sequence {
                length: 20,
                features: 1
            }
        );
        assert_eq!(
            InputKind::of(&[28, 28]),
            InputKind::Image {
                channels: 1,
                height: 28,
                width: 28
            }
        );
        assert!(InputKind::named("image", &[30]).is_err());
        assert!(InputKind::named("picture", &[30]).is_err());
    }

    #[test]
    fn the_heat_map_is_red_for_positive_and_blue_for_negative() {
        assert_eq!(diverging(1.0), [255, 0, 0]);
        assert_eq!(diverging(-1.0), [0, 0, 255]);
        assert_eq!(diverging(0.0), [255, 255, 255]);
        let image = heat_map_grid(1, 2, &[vec![0.0, 1.0]], &[vec![vec![2.0, -1.0]]], 1, &[]);
        // One row: gap 2, input 2 px, gap 2, heat 2 px, gap 2.
        assert_eq!((image.width, image.height), (10, 5));
        let pixel = |x: usize, y: usize| &image.pixels[(y * image.width + x) * 3..][..3];
        assert_eq!(pixel(2, 2), [0, 0, 0]);
        assert_eq!(pixel(3, 2), [255, 255, 255]);
        assert_eq!(pixel(6, 2), [255, 0, 0]);
        assert_eq!(pixel(7, 2), [128, 128, 255]);
        assert!(image.to_png().is_ok());
        // A title adds a header of five font pixels and a gap.
        let titled = heat_map_grid(
            1,
            2,
            &[vec![0.0, 1.0]],
            &[vec![vec![2.0, -1.0]]],
            3,
            &["7".into()],
        );
        assert_eq!(titled.height, 5 + 3 + 3 + 3 + 3);
    }

    #[test]
    fn features_rank_by_mean_magnitude() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // Two samples.
        let ranked = rank_features(&[1.0, -4.0, 0.0, 1.0, 2.0, 0.5], &names);
        let order: Vec<&str> = ranked.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert_eq!(ranked[0].mean_abs, 3.0);
        assert_eq!(ranked[0].mean, -1.0);
        let svg = ranking_svg("t <1>", &ranked);
        assert!(
            svg.contains("t &lt;1&gt;") && svg.contains("#4575b4"),
            "{svg}"
        );
    }

    #[test]
    fn positions_sum_their_features() {
        let scores = position_scores(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        assert_eq!(scores, [vec![3.0, 7.0]]);
        assert_eq!(
            positions_csv(&scores),
            "position,lag,sample_0\n0,2,3\n1,1,7\n"
        );
    }
}
