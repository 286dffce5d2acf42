//! The binary-classification and regression examples train to the bars the training
//! issue sets: breast cancer reaches AUC-ROC >= 0.97 on its test split; diabetes reports
//! MAE and MSE and beats predicting the training mean.

use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::elaborate::ElaborateOptions;
use strata_runtime::Session;
use strata_runtime::train::{TrainOptions, TrainSummary, builtin, train};
use strata_tests::{load_example, root};

fn train_example(file: &str) -> TrainSummary {
    let source = load_example(&root().join("dsl-examples").join(file));
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let artifact = compile(&source, &options)
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact;
    let config = artifact.manifest.train.clone().expect("a train section");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(&artifact).expect("loads");
    let options = TrainOptions {
        run_dir: dir.path().to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    train(&mut session, &config, &options).expect("training runs")
}

#[test]
fn breast_cancer_reaches_auc_097() {
    let summary = train_example("breast_cancer.strata");
    let test = summary.test.as_ref().expect("a test split");
    let auc = test.metrics.value("auc").expect("auc is reported");
    let accuracy = test
        .metrics
        .value("accuracy")
        .expect("accuracy is reported");
    println!(
        "breast_cancer: test AUC {auc:.4}, accuracy {accuracy:.4} after {} epochs",
        summary.epochs
    );
    assert!(auc >= 0.97, "test AUC {auc:.4} < 0.97");
}

#[test]
fn diabetes_beats_predicting_the_mean() {
    let summary = train_example("diabetes.strata");
    let test = summary.test.as_ref().expect("a test split");
    let mse = test.metrics.value("mse").expect("mse is reported");
    let mae = test.metrics.value("mae").expect("mae is reported");
    // The baseline: the variance of the targets around their mean (the MSE of always
    // predicting the mean), over the whole data set.
    let data = builtin("diabetes").expect("built in");
    let strata_runtime::train::Labels::Targets { values, .. } = &data.labels else {
        panic!("diabetes is a regression set")
    };
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let baseline = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    println!(
        "diabetes: test MSE {mse:.1} (mean-predictor {baseline:.1}), MAE {mae:.2}, {} epochs",
        summary.epochs
    );
    assert!(
        mse < 0.8 * baseline,
        "test MSE {mse:.1} does not beat the mean predictor's {baseline:.1}"
    );
}
