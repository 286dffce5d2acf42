//! The picture an [`ImageGrid`] setting asks for: samples drawn as grayscale images in a
//! grid, encoded as PNG.
//!
//! Each sample gets one cell; a cell holds the grid's tensors side by side (an
//! autoencoder's input beside its reconstruction), each `height x width` values. Cells
//! fill rows of `columns`. A value maps linearly from `range` to black..white and is
//! clamped outside it (NaN draws black). Images are separated by one value-sized pixel
//! of mid gray, cells by two, and every value becomes a `scale x scale` block, so 8x8
//! digits stay visible. The layout depends only on the setting, never on the values.

use strata_artifact::train_config::ImageGrid;

/// Gray between the images of a cell and between cells.
const GAP_GRAY: u8 = 128;
/// Pixels (before scaling) between the images of one cell.
const INNER_GAP: usize = 1;
/// Pixels (before scaling) around and between cells.
const CELL_GAP: usize = 2;

/// Why a grid could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ImageGridError {
    #[error("image grid: `{tensor}` has {got} values for {samples} samples, expected {expected}")]
    WrongSize {
        tensor: String,
        got: usize,
        samples: usize,
        expected: usize,
    },
    #[error("image grid: {0}")]
    Layout(String),
    #[error("image grid: cannot encode the PNG: {0}")]
    Encode(#[from] png::EncodingError),
}

/// A grayscale picture, row-major, one byte a pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl GrayImage {
    /// The picture as a PNG file (8-bit grayscale).
    pub fn to_png(&self) -> Result<Vec<u8>, ImageGridError> {
        let size = |n: usize| {
            u32::try_from(n).map_err(|_| ImageGridError::Layout(format!("{n} pixels is too wide")))
        };
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, size(self.width)?, size(self.height)?);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }
}

/// The picture's size in pixels for `samples` samples.
pub fn grid_size(grid: &ImageGrid, samples: usize) -> (usize, usize) {
    let (h, w) = (grid.height as usize, grid.width as usize);
    let tensors = grid.tensors.len().max(1);
    let columns = (grid.columns as usize).clamp(1, samples.max(1));
    let rows = samples.div_ceil(columns).max(1);
    let cell_w = tensors * w + (tensors - 1) * INNER_GAP;
    let width = columns * cell_w + (columns + 1) * CELL_GAP;
    let height = rows * h + (rows + 1) * CELL_GAP;
    let scale = grid.scale.max(1) as usize;
    (width * scale, height * scale)
}

/// Draws `samples` samples; `values[t]` holds tensor `t`'s values of every sample,
/// `height * width` per sample, in the grid's tensor order.
pub fn render_grid(
    grid: &ImageGrid,
    values: &[Vec<f32>],
    samples: usize,
) -> Result<GrayImage, ImageGridError> {
    let (h, w) = (grid.height as usize, grid.width as usize);
    let per_image = h * w;
    if per_image == 0 || values.len() != grid.tensors.len() || grid.tensors.is_empty() {
        return Err(ImageGridError::Layout(format!(
            "{} tensors of {h}x{w} values cannot be drawn for {} names",
            values.len(),
            grid.tensors.len()
        )));
    }
    for (name, v) in grid.tensors.iter().zip(values) {
        if v.len() != samples * per_image {
            return Err(ImageGridError::WrongSize {
                tensor: name.clone(),
                got: v.len(),
                samples,
                expected: samples * per_image,
            });
        }
    }
    let [lo, hi] = grid.range;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let gray = |x: f32| -> u8 {
        let t = (f64::from(x) - lo) / span;
        if t.is_nan() {
            0
        } else {
            (t.clamp(0.0, 1.0) * 255.0).round() as u8
        }
    };
    let scale = grid.scale.max(1) as usize;
    let (width, height) = grid_size(grid, samples);
    let (unscaled_w, unscaled_h) = (width / scale, height / scale);
    let mut small = vec![GAP_GRAY; unscaled_w * unscaled_h];
    let columns = (grid.columns as usize).clamp(1, samples.max(1));
    let cell_w = values.len() * w + (values.len() - 1) * INNER_GAP;
    for sample in 0..samples {
        let (row, column) = (sample / columns, sample % columns);
        let top = CELL_GAP + row * (h + CELL_GAP);
        let cell_left = CELL_GAP + column * (cell_w + CELL_GAP);
        for (t, v) in values.iter().enumerate() {
            let left = cell_left + t * (w + INNER_GAP);
            let image = &v[sample * per_image..(sample + 1) * per_image];
            for y in 0..h {
                for x in 0..w {
                    small[(top + y) * unscaled_w + left + x] = gray(image[y * w + x]);
                }
            }
        }
    }
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = &small[(y / scale) * unscaled_w..(y / scale + 1) * unscaled_w];
        pixels.extend(row.iter().flat_map(|&p| std::iter::repeat_n(p, scale)));
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(tensors: &[&str], columns: u64, scale: u64) -> ImageGrid {
        ImageGrid {
            tensors: tensors.iter().map(|s| s.to_string()).collect(),
            samples: 4,
            columns,
            height: 2,
            width: 3,
            range: [0.0, 1.0],
            scale,
            file: "images.png".into(),
        }
    }

    #[test]
    fn places_each_sample_and_tensor_in_its_cell() {
        let g = grid(&["x", "y"], 2, 1);
        let x: Vec<f32> = (0..3 * 6).map(|_| 1.0).collect();
        let y: Vec<f32> = (0..3 * 6).map(|_| 0.0).collect();
        let image = render_grid(&g, &[x, y], 3).unwrap();
        // Two cells of 3 + 1 + 3 values across, two rows of 2: gaps of 2 around.
        assert_eq!((image.width, image.height), (2 * 7 + 3 * 2, 2 * 2 + 3 * 2));
        let at = |x: usize, y: usize| image.pixels[y * image.width + x];
        assert_eq!(at(2, 2), 255, "first sample's x");
        assert_eq!(at(5, 2), GAP_GRAY, "between x and y");
        assert_eq!(at(6, 2), 0, "first sample's y");
        assert_eq!(at(11, 2), 255, "second sample's x");
        assert_eq!(at(2, 6), 255, "third sample, second row");
        assert_eq!(at(11, 6), GAP_GRAY, "no fourth sample");
    }

    #[test]
    fn clamps_to_the_range_and_scales_up() {
        let g = grid(&["x"], 1, 3);
        let image = render_grid(&g, &[vec![-5.0, 0.5, 9.0, f32::NAN, 0.0, 1.0]], 1).unwrap();
        assert_eq!((image.width, image.height), ((3 + 4) * 3, (2 + 4) * 3));
        let at = |x: usize, y: usize| image.pixels[(y * 3) * image.width + x * 3];
        assert_eq!([at(2, 2), at(3, 2), at(4, 2)], [0, 128, 255]);
        assert_eq!([at(2, 3), at(3, 3), at(4, 3)], [0, 0, 255]);
    }

    #[test]
    fn refuses_values_of_the_wrong_size() {
        let g = grid(&["x"], 2, 1);
        let err = render_grid(&g, &[vec![0.0; 5]], 1).unwrap_err();
        assert!(err.to_string().contains("`x` has 5 values"), "{err}");
    }

    #[test]
    fn encodes_a_png_that_decodes_to_the_same_pixels() {
        let g = grid(&["x"], 2, 2);
        let image = render_grid(&g, &[(0..12).map(|i| i as f32 / 11.0).collect()], 2).unwrap();
        let bytes = image.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (image.width, image.height)
        );
        assert_eq!(&buf[..info.buffer_size()], &image.pixels[..]);
    }
}
