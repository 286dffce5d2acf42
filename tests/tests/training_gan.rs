//! `dsl-examples/gan.strata` learns to draw digits: a classifier trained on the real
//! digits (`dsl-examples/mlp.strata`) labels 1000 generated samples, and at least 70% of
//! them get a class with probability >= 0.9, and at least 8 of the 10 classes each get at
//! least 1% of the samples that way.
//! The run also writes its grid of samples.

use strata_artifact::HostTensor;
use strata_tests::train_run::{Trained, train_example};

const SAMPLES: usize = 1000;
const CONFIDENT: f32 = 0.9;

/// `SAMPLES` generator outputs, 100 a batch, each batch from its own noise draw (steps
/// far past any training step).
fn generate(gan: &mut Trained) -> Vec<f32> {
    let batch = 100usize;
    let mut out = Vec::with_capacity(SAMPLES * 64);
    for k in 0..SAMPLES / batch {
        let inputs = [
            (
                "x",
                HostTensor::f32(vec![batch as u64, 64], vec![0.0; batch * 64]).unwrap(),
            ),
            (
                "step",
                HostTensor::f32(vec![], vec![1_000_000.0 + k as f32]).unwrap(),
            ),
        ];
        let outputs = gan
            .session
            .run("infer", &inputs)
            .expect("the generator runs");
        let fake = outputs
            .iter()
            .find(|(n, _)| n == "fake")
            .expect("a `fake` output");
        out.extend_from_slice(fake.1.as_f32().expect("f32"));
    }
    out
}

/// The classifier's most likely class and its probability, per sample. The samples are
/// in the GAN's normalized units; the classifier takes raw pixels and normalizes them
/// itself, so they are mapped back with its own statistics (`x * scale + offset`).
fn classify(classifier: &mut Trained, images: &[f32]) -> Vec<(usize, f32)> {
    let n = images.len() / 64;
    let stat = |key: &str| {
        classifier
            .session
            .weights()
            .find(|(k, _)| *k == key)
            .and_then(|(_, t)| t.as_f32().map(<[f32]>::to_vec))
            .unwrap_or_else(|| panic!("the classifier normalizes its input (`{key}`)"))
    };
    let (offset, scale) = (stat("normalize.offset"), stat("normalize.scale"));
    let raw: Vec<f32> = images
        .iter()
        .enumerate()
        .map(|(i, &v)| v * scale[i % 64] + offset[i % 64])
        .collect();
    let x = HostTensor::f32(vec![n as u64, 64], raw).unwrap();
    let outputs = classifier
        .session
        .run("infer", &[("x", x)])
        .expect("the classifier runs");
    let probs = outputs
        .iter()
        .find(|(n, _)| n == "probs")
        .expect("`probs`")
        .1
        .as_f32()
        .unwrap();
    probs
        .chunks(10)
        .map(|p| {
            let (class, &best) = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .expect("10 classes");
            (class, best)
        })
        .collect()
}

#[test]
fn gan_samples_are_confidently_classified_digits_of_at_least_8_classes() {
    let mut classifier = train_example("mlp.strata");
    let accuracy = classifier.test_metric("accuracy");
    assert!(
        accuracy >= 0.95,
        "the judge itself must be good: {accuracy:.3}"
    );
    let mut gan = train_example("gan.strata");
    let images = generate(&mut gan);
    assert_eq!(images.len(), SAMPLES * 64);
    assert!(images.iter().all(|v| v.is_finite()), "samples are finite");
    let labels = classify(&mut classifier, &images);
    let confident: Vec<usize> = labels
        .iter()
        .filter(|(_, p)| *p >= CONFIDENT)
        .map(|(c, _)| *c)
        .collect();
    let mut per_class = [0usize; 10];
    confident.iter().for_each(|&c| per_class[c] += 1);
    let classes = per_class.iter().filter(|&&n| n >= SAMPLES / 100).count();
    let share = confident.len() as f64 / SAMPLES as f64;
    println!(
        "gan: {:.1}% of {SAMPLES} samples classified with p >= {CONFIDENT} (classifier test \
         accuracy {accuracy:.3}); per class {per_class:?}; {} epochs in {:.1} s",
        100.0 * share,
        gan.summary.epochs,
        gan.seconds
    );
    let grid = gan.summary.images.as_ref().expect("the grid of samples");
    assert!(std::fs::metadata(grid).expect("written").len() > 0);
    assert!(
        share >= 0.70,
        "only {:.1}% confident samples",
        100.0 * share
    );
    assert!(
        classes >= 8,
        "confident samples cover only {classes} classes: {per_class:?}"
    );
}
