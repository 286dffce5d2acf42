//! `dsl-examples/autoencoder.strata` trains without labels on the built-in digits: its
//! test-split reconstruction error is at most half that of predicting every pixel's
//! training-split mean, and the run directory holds the PNG grid its `images` setting
//! asks for (inputs beside their reconstructions). `tied_autoencoder.strata` does as well
//! with its decoder reusing the encoder's weights, and `conv_autoencoder.strata`, a
//! denoising autoencoder decoding with transposed convolutions, from a 16-value code.

use strata_artifact::train_config::{Task, TrainConfig};
use strata_tests::train_run::{Trained, mean_pixel_baseline, train_example};

/// Decodes a PNG: (width, height, 8-bit gray pixels).
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut buf).expect("the image decodes");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn check_image_grid(run: &Trained, config: &TrainConfig) {
    let grid = config.images.as_ref().expect("the example asks for images");
    let path = run
        .summary
        .images
        .as_ref()
        .expect("the driver wrote the grid");
    assert_eq!(path, &run.summary.paths.dir.join("images.png"));
    let (width, height, pixels) = decode_png(&std::fs::read(path).expect("readable"));
    // The documented layout: cells of the two 8x8 images with a 1-pixel gap, 2 pixels
    // around and between cells, 8 cells a row, every value a scale x scale block.
    assert_eq!((grid.samples, grid.columns, grid.scale), (32, 8, 4));
    let cell = 8 + 1 + 8;
    let expected_width = (8 * cell + 9 * 2) * 4;
    let expected_height = (4 * 8 + 5 * 2) * 4;
    assert_eq!((width, height), (expected_width, expected_height));
    let distinct = {
        let mut seen = [false; 256];
        pixels.iter().for_each(|&p| seen[p as usize] = true);
        seen.iter().filter(|&&s| s).count()
    };
    assert!(distinct > 16, "the grid has only {distinct} gray levels");
}

#[test]
fn autoencoder_halves_the_mean_pixel_error_and_draws_its_reconstructions() {
    let run = train_example("autoencoder.strata");
    let source =
        strata_tests::load_example(&strata_tests::root().join("dsl-examples/autoencoder.strata"));
    let config =
        strata_compiler::driver::compile(&source, &strata_tests::train_check::training_options())
            .expect("compiles")
            .train_config
            .expect("a train section");
    assert_eq!(config.label_input, None, "training is label-free");
    assert_eq!(
        config.task,
        Task::Unlabelled {
            reconstruction: true
        }
    );
    let (mse, mae) = (run.test_metric("mse"), run.test_metric("mae"));
    let baseline = mean_pixel_baseline(&config);
    println!(
        "autoencoder: test MSE {mse:.4} (per-pixel mean {baseline:.4}, ratio {:.3}), MAE {mae:.4}, \
         {} epochs ({:?}) in {:.1} s",
        mse / baseline,
        run.summary.epochs,
        run.summary.stop,
        run.seconds
    );
    let test_loss = run.summary.test.as_ref().expect("a test split").loss;
    assert!(
        (test_loss - mse).abs() <= 1e-4 * mse.max(1e-3),
        "the loss is the reconstruction MSE: {test_loss} vs {mse}"
    );
    assert!(
        mse <= 0.5 * baseline,
        "test MSE {mse:.4} is more than half the mean predictor's {baseline:.4}"
    );
    check_image_grid(&run, &config);
}

/// `dsl-examples/tied_autoencoder.strata`: the decoder reuses the encoder's weights
/// (`matmul(h, enc1.weight)`), so the model holds under 60% of the untied one's
/// weights (both count their 128 normalization values), and still reconstructs the test split at under 0.3x the mean predictor's
/// error.
#[test]
fn tied_autoencoder_reconstructs_with_under_60_percent_of_the_weights() {
    let run = train_example("tied_autoencoder.strata");
    let untied = train_example_parameters("autoencoder.strata");
    let source = strata_tests::load_example(
        &strata_tests::root().join("dsl-examples/tied_autoencoder.strata"),
    );
    let config =
        strata_compiler::driver::compile(&source, &strata_tests::train_check::training_options())
            .expect("compiles")
            .train_config
            .expect("a train section");
    let (mse, mae) = (run.test_metric("mse"), run.test_metric("mae"));
    let baseline = mean_pixel_baseline(&config);
    println!(
        "tied autoencoder: {} parameters (untied {untied}), test MSE {mse:.4} (per-pixel mean \
         {baseline:.4}, ratio {:.3}), MAE {mae:.4}, {} epochs ({:?}) in {:.1} s",
        run.parameters,
        mse / baseline,
        run.summary.epochs,
        run.summary.stop,
        run.seconds
    );
    assert!(
        10 * run.parameters < 6 * untied,
        "{} parameters are more than 60% of the untied {untied}",
        run.parameters
    );
    assert!(
        mse <= 0.3 * baseline,
        "test MSE {mse:.4} is more than 0.3x the mean predictor's {baseline:.4}"
    );
    check_image_grid(&run, &config);
}

/// `dsl-examples/conv_autoencoder.strata`: trained on noisy images (`noise` in the train
/// step), scored on clean ones, its two `conv_transpose2d` layers decode a 4x2x2 code to
/// under 0.3x the mean predictor's error.
#[test]
fn conv_autoencoder_denoises_through_transposed_convolutions() {
    let run = train_example("conv_autoencoder.strata");
    let source = strata_tests::load_example(
        &strata_tests::root().join("dsl-examples/conv_autoencoder.strata"),
    );
    let config =
        strata_compiler::driver::compile(&source, &strata_tests::train_check::training_options())
            .expect("compiles")
            .train_config
            .expect("a train section");
    let (mse, mae) = (run.test_metric("mse"), run.test_metric("mae"));
    let baseline = mean_pixel_baseline(&config);
    println!(
        "conv autoencoder: {} parameters, test MSE {mse:.4} (per-pixel mean {baseline:.4}, \
         ratio {:.3}), MAE {mae:.4}, {} epochs ({:?}) in {:.1} s",
        run.parameters,
        mse / baseline,
        run.summary.epochs,
        run.summary.stop,
        run.seconds
    );
    assert!(
        mse <= 0.5 * baseline,
        "test MSE {mse:.4} is more than half the mean predictor's {baseline:.4}"
    );
    check_image_grid(&run, &config);
}

/// The weights an example's session holds, but its optimizer state.
fn train_example_parameters(file: &str) -> u64 {
    let source = strata_tests::load_example(&strata_tests::root().join("dsl-examples").join(file));
    let artifact =
        strata_compiler::driver::compile(&source, &strata_tests::train_check::training_options())
            .expect("compiles")
            .artifact;
    strata_runtime::Session::new(&artifact)
        .expect("loads")
        .weights()
        .filter(|(name, _)| !name.starts_with("optim."))
        .map(|(_, t)| t.shape.iter().product::<u64>())
        .sum()
}
