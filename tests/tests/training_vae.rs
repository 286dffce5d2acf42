//! `dsl-examples/vae.strata`, a VAE whose negative ELBO is written as an expression of
//! two named terms, trains on the digits: its test reconstruction error is well below
//! predicting every pixel's training mean, and the reconstruction and KL terms are
//! reported for every epoch (train and validation) and for the test split, adding up to
//! the loss.

use strata_tests::train_run::{mean_pixel_baseline, train_example};

#[test]
fn vae_reconstructs_digits_and_reports_its_reconstruction_and_kl_terms() {
    let run = train_example("vae.strata");
    let config = run
        .session
        .manifest()
        .train
        .clone()
        .expect("a train section");
    assert_eq!(config.terms, ["reconstruction", "kl"]);
    let mse = run.test_metric("mse");
    let baseline = mean_pixel_baseline(&config);
    let test = run.summary.test.as_ref().expect("a test split");
    let term = |name: &str| {
        test.terms
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("term `{name}` is not reported: {:?}", test.terms))
    };
    let (recon, kl) = (term("reconstruction"), term("kl"));
    println!(
        "vae: test MSE {mse:.4} (per-pixel mean {baseline:.4}, ratio {:.3}), reconstruction \
         {recon:.3}, KL {kl:.3}, {} epochs in {:.1} s",
        mse / baseline,
        run.summary.epochs,
        run.seconds
    );
    assert!(
        mse <= 0.7 * baseline,
        "test MSE {mse:.4} is not well below the mean predictor's {baseline:.4}"
    );
    assert!(
        kl > 0.5 && kl.is_finite(),
        "the code carries information: KL {kl}"
    );
    assert!(
        (test.loss - (recon + kl)).abs() <= 1e-4 * test.loss,
        "the loss is the sum of its terms: {} vs {recon} + {kl}",
        test.loss
    );
    for record in &run.summary.history {
        for key in [
            "train_reconstruction",
            "val_reconstruction",
            "train_kl",
            "val_kl",
        ] {
            let value = record.metrics.get(key).copied().unwrap_or(f64::NAN);
            assert!(
                value.is_finite(),
                "epoch {}: `{key}` is {value}",
                record.epoch
            );
        }
    }
    let log = std::fs::read_to_string(run.summary.paths.dir.join("metrics.jsonl"))
        .expect("the run's log");
    assert!(log.contains("\"val_kl\":"), "{log}");
}
