//! `explain`: attributions of a model's output to its input, written as `.npy` and drawn
//! for the input's kind (see [`strata_training::explain`]). `strata explain FILE` and a
//! built executable's `explain` share this code.
//!
//! Files written to the output directory (default `explain/<model>`):
//!
//! - `attributions.npy`: `f32 [n, ...]`, the input's shape, or `[K, n, ...]` with
//!   `--target all` (one slice per output element);
//! - `inputs.npy`: the samples explained;
//! - `summary.csv`: per sample and target, the explained score `f(x)`, the sum of the
//!   attributions and, for integrated gradients, `f(baseline)`;
//! - images: `heatmaps.png` (a row per sample: the input, then a heat map per target),
//!   and with `--target all` one `heatmap-K.png` per element;
//! - tabular: `ranking.svg` and `ranking.csv` (`ranking-K.*` per element with `all`);
//! - sequences: `positions.csv` (`positions-K.csv`), also printed.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use strata_artifact::npy::{read_npy, write_npy};
use strata_artifact::{Artifact, HostTensor, TensorData};
use strata_training::driver::EvalSplit;
use strata_training::explain::methods::Method;
use strata_training::explain::pictures::{
    InputKind, heat_map_grid, position_scores, positions_csv, positions_text, rank_features,
    ranking_svg, sum_channels,
};
use strata_training::explain::samples::{SplitSamples, split_samples};
use strata_training::explain::{ExplainError, ExplainSettings, Explanation, Target, explain};

use super::ports::parse_input_arg;
use super::{Device, Failure, load_weights, runtime, written};

/// How many held-out samples are explained when no `--input` is given.
const DEFAULT_COUNT: usize = 8;

#[derive(Args, Debug, Clone)]
pub(crate) struct ExplainArgs {
    /// The samples to explain, as NAME=PATH.npy (`[n, ...]`; repeat per input)
    /// [default: the first --count samples of the train section's test split].
    #[arg(long = "input", short = 'i', value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// The output explained [default: the train section's prediction, or the only
    /// output].
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
    /// The element of each sample's output row explained: an index (a class), `all`
    /// (each in turn), or `predicted` (each sample's largest).
    #[arg(long, value_name = "N|all|predicted", default_value = "predicted")]
    target: String,
    /// The attribution method.
    #[arg(long, value_enum, default_value_t = MethodName::Ig)]
    method: MethodName,
    /// Integrated gradients: points of the path (midpoint rule).
    #[arg(long, default_value_t = 64)]
    steps: usize,
    /// Integrated gradients: the baseline, `zeros`, `mean` (the train split's mean
    /// sample) or a .npy file (one sample, or one per sample).
    #[arg(long, value_name = "zeros|mean|PATH", default_value = "zeros")]
    baseline: String,
    /// SmoothGrad: noisy copies per sample.
    #[arg(long, default_value_t = 32)]
    noise_samples: usize,
    /// SmoothGrad: the noise's deviation, as a fraction of each sample's value range.
    #[arg(long, default_value_t = 0.15)]
    sigma: f32,
    /// SmoothGrad: the seed of the noise.
    #[arg(long = "noise-seed", default_value_t = 0)]
    noise_seed: u64,
    /// The input attributed [default: the only f32 input].
    #[arg(long, value_name = "NAME")]
    wrt: Option<String>,
    /// Draw the input as this kind [default: from its shape].
    #[arg(long = "as", value_enum)]
    kind: Option<KindName>,
    /// Without --input: how many held-out samples to explain.
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    count: usize,
    /// Without --input: the data to take samples from [default: the train section's].
    #[arg(long, value_name = "SPEC")]
    data: Option<String>,
    /// Without --input: the split to take samples from (`all`: train, validation, test).
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    split: EvalSplit,
    /// The directory written [default: explain/<model>].
    #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Weights to use instead of the built-in ones (parameters, full weights or a
    /// checkpoint).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Where to run: the GPU if the model was built with GPU code, else the CPU.
    #[arg(long, value_enum)]
    device: Option<Device>,
}

impl ExplainArgs {
    /// Whether `--weights` names a file.
    pub(crate) fn has_weights(&self) -> bool {
        self.weights.is_some()
    }

    /// Whether `--device gpu` asks for the GPU.
    pub(crate) fn wants_gpu(&self) -> bool {
        self.device == Some(Device::Gpu)
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum MethodName {
    /// The plain gradient (saliency).
    Grad,
    /// Gradient times input.
    GradInput,
    /// Integrated gradients.
    Ig,
    /// SmoothGrad: the gradient averaged over noisy copies.
    Smoothgrad,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum KindName {
    Image,
    Tabular,
    Sequence,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn explain_failure(e: ExplainError) -> Failure {
    match e {
        ExplainError::Usage(m) => Failure::Usage(m),
        ExplainError::Failed(m) => Failure::Runtime(m),
    }
}

/// Runs `explain` on `artifact`.
pub(super) fn run(
    artifact: &Artifact,
    args: ExplainArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let target = match args.target.as_str() {
        "predicted" => Target::Predicted,
        "all" => Target::All,
        k => Target::Index(k.parse().map_err(|_| {
            usage(format!(
                "--target takes an index, `all` or `predicted`, got `{k}`"
            ))
        })?),
    };
    let config = artifact.manifest.train.as_ref();
    let mut session = super::session(artifact, args.device)?;
    if let Some(path) = &args.weights {
        load_weights(&mut session, path)?;
    }
    // The samples: given, or held out by the train section.
    let mut held_out: Option<SplitSamples> = None;
    let inputs: Vec<(String, HostTensor)> = if args.inputs.is_empty() {
        let config = config.ok_or_else(|| {
            usage("the model has no train section to take samples from: pass --input NAME=PATH.npy")
        })?;
        if args.count == 0 {
            return Err(usage("--count must be at least 1"));
        }
        let samples = split_samples(
            &artifact.manifest,
            config,
            args.data.as_deref(),
            args.split,
            args.count,
        )
        .map_err(super::train_failure)?;
        let features = samples.features.clone();
        held_out = Some(samples);
        vec![(config.features_input.clone(), features)]
    } else {
        let mut inputs = Vec::new();
        for arg in &args.inputs {
            let (name, path) = parse_input_arg(arg).map_err(Failure::Usage)?;
            inputs.push((name, read_npy(&path).map_err(runtime)?));
        }
        inputs
    };
    let method = match args.method {
        MethodName::Grad => Method::Gradient,
        MethodName::GradInput => Method::GradientTimesInput,
        MethodName::Ig => Method::IntegratedGradients {
            steps: args.steps,
            baseline: Vec::new(),
        },
        MethodName::Smoothgrad => Method::SmoothGrad {
            samples: args.noise_samples,
            sigma: args.sigma,
            seed: args.noise_seed,
        },
    };
    let mut settings = ExplainSettings {
        method,
        output: args.output.clone(),
        target,
        input: args.wrt.clone(),
    };
    let prediction = config.map(|c| c.prediction.as_str());
    if matches!(settings.method, Method::IntegratedGradients { .. }) {
        if args.steps == 0 {
            return Err(usage("--steps must be at least 1"));
        }
        let ports = strata_artifact::explain_entry::ExplainPorts::of(&artifact.manifest)
            .map_err(Failure::Usage)?;
        let (_, input) = strata_training::explain::chosen_ports(&ports, &settings, prediction)
            .map_err(explain_failure)?;
        let width = inputs
            .iter()
            .find(|(n, _)| *n == input)
            .map(|(_, t)| t.shape.iter().skip(1).product::<u64>() as usize)
            .ok_or_else(|| usage(format!("input `{input}` is missing")))?;
        let values = match args.baseline.as_str() {
            "zeros" => vec![0.0; width],
            "mean" => match (&held_out, config) {
                (Some(samples), _) => samples.train_mean.clone(),
                (None, Some(config)) => {
                    split_samples(
                        &artifact.manifest,
                        config,
                        args.data.as_deref(),
                        args.split,
                        1,
                    )
                    .map_err(super::train_failure)?
                    .train_mean
                }
                (None, None) => {
                    return Err(usage(
                        "--baseline mean needs a train section (its data's mean sample)",
                    ));
                }
            },
            path => {
                let tensor = read_npy(Path::new(path)).map_err(runtime)?;
                match tensor.data {
                    TensorData::F32(values) => values,
                    TensorData::I32(_) => {
                        return Err(usage(format!("baseline {path}: expected f32 values")));
                    }
                }
            }
        };
        if let Method::IntegratedGradients { baseline, .. } = &mut settings.method {
            *baseline = values;
        }
    }
    let explanation =
        explain(&mut session, &settings, prediction, &inputs).map_err(explain_failure)?;
    let kind = match args.kind {
        None => InputKind::of(&explanation.sample_shape),
        Some(k) => {
            let name = match k {
                KindName::Image => "image",
                KindName::Tabular => "tabular",
                KindName::Sequence => "sequence",
            };
            InputKind::named(name, &explanation.sample_shape).map_err(Failure::Usage)?
        }
    };
    let dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("explain").join(artifact.manifest.model.to_lowercase()));
    let names = Names::of(held_out.as_ref(), &explanation);
    write_all(&dir, &explanation, kind, &settings, &names, out)
}

/// What pictures call the classes and features.
struct Names {
    /// The data's class names, for labels.
    classes: Vec<String>,
    /// Whether the output's elements are the classes (one logit per class), so a target
    /// is named by its class.
    targets_are_classes: bool,
    features: Vec<String>,
    /// The true class of each sample, where the data has one.
    labels: Option<Vec<usize>>,
}

impl Names {
    fn of(held_out: Option<&SplitSamples>, e: &Explanation) -> Names {
        let width: usize = e.sample_shape.iter().product::<u64>() as usize;
        let features = match held_out {
            Some(s) if s.feature_names.len() == width => s.feature_names.clone(),
            _ => (0..width).map(|j| format!("feature {j}")).collect(),
        };
        let classes = held_out.map(|s| s.class_names.clone()).unwrap_or_default();
        Names {
            targets_are_classes: classes.len() == e.output_width,
            classes,
            features,
            labels: held_out.and_then(|s| s.labels.clone()),
        }
    }

    /// A sample's label, by its class name where it has one.
    fn label(&self, k: usize) -> String {
        match self.classes.get(k) {
            Some(name) if *name != k.to_string() => format!("{k} ({name})"),
            _ => k.to_string(),
        }
    }

    /// An output element, by its class name where the elements are the classes.
    fn target(&self, k: usize) -> String {
        match self.targets_are_classes {
            true => self.label(k),
            false => k.to_string(),
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    strata_artifact::check_output_path(path)
        .and_then(|()| std::fs::write(path, bytes))
        .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))
}

fn npy(path: &Path, shape: Vec<u64>, values: Vec<f32>) -> Result<(), Failure> {
    strata_artifact::check_output_path(path)
        .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))?;
    let tensor = HostTensor::f32(shape, values).map_err(runtime)?;
    write_npy(path, &tensor).map_err(runtime)
}

fn write_all(
    dir: &Path,
    e: &Explanation,
    kind: InputKind,
    settings: &ExplainSettings,
    names: &Names,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|err| Failure::Runtime(format!("cannot create {}: {err}", dir.display())))?;
    let width: usize = e.sample_shape.iter().product::<u64>() as usize;
    let n = e.samples;
    let all = e.targets.len() > 1;
    let with_samples = |lead: &[u64]| {
        let mut shape = lead.to_vec();
        shape.extend_from_slice(&e.sample_shape);
        shape
    };
    let attributions: Vec<f32> = e
        .targets
        .iter()
        .flat_map(|t| t.attributions.values.iter().copied())
        .collect();
    let shape = match all {
        true => with_samples(&[e.targets.len() as u64, n as u64]),
        false => with_samples(&[n as u64]),
    };
    npy(&dir.join("attributions.npy"), shape, attributions)?;
    npy(
        &dir.join("inputs.npy"),
        with_samples(&[n as u64]),
        e.x.clone(),
    )?;

    // The summary: one line per sample and target.
    let mut summary = String::from("sample,label,target,score,attribution_sum");
    let ig = matches!(settings.method, Method::IntegratedGradients { .. });
    if ig {
        summary.push_str(",baseline_score,completeness_gap");
    }
    summary.push('\n');
    let p = |text: String, out: &mut dyn Write| writeln!(out, "{text}").map_err(written);
    p(
        format!(
            "{} of `{}` with respect to `{}`, {n} sample{}:",
            method_title(&settings.method),
            e.output,
            e.input,
            if n == 1 { "" } else { "s" }
        ),
        out,
    )?;
    for t in &e.targets {
        for i in 0..n {
            let a = &t.attributions;
            let sum: f64 = a.values[i * width..][..width]
                .iter()
                .map(|v| *v as f64)
                .sum();
            let label = names
                .labels
                .as_ref()
                .map_or(String::new(), |l| l[i].to_string());
            let mut line = format!("{i},{label},{},{},{sum}", t.targets[i], a.scores[i]);
            let mut shown = format!(
                "  sample {i}{}: target {}, score {:.4}, attributions sum to {sum:.4}",
                match &names.labels {
                    Some(l) => format!(" (label {})", names.label(l[i])),
                    None => String::new(),
                },
                names.target(t.targets[i]),
                a.scores[i]
            );
            if let Some(base) = &a.baseline_scores {
                let delta = a.scores[i] as f64 - base[i] as f64;
                line.push_str(&format!(",{},{}", base[i], sum - delta));
                shown.push_str(&format!(" (f(x) - f(baseline) = {delta:.4})"));
            }
            summary.push_str(&line);
            summary.push('\n');
            if !all {
                p(shown, out)?;
            }
        }
    }
    write_file(&dir.join("summary.csv"), summary.as_bytes())?;

    let mut written = vec!["attributions.npy", "inputs.npy", "summary.csv"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    match kind {
        InputKind::Image {
            channels,
            height,
            width: image_width,
        } => {
            let plane =
                |values: &[f32], i: usize| sum_channels(&values[i * width..][..width], channels);
            let inputs: Vec<Vec<f32>> = (0..n).map(|i| plane(&e.x, i)).collect();
            let maps: Vec<Vec<Vec<f32>>> = e
                .targets
                .iter()
                .map(|t| (0..n).map(|i| plane(&t.attributions.values, i)).collect())
                .collect();
            let scale = (96 / height.max(image_width)).clamp(1, 16);
            // Column titles: the class of each map, where all samples share it.
            let titles: Vec<String> = e
                .targets
                .iter()
                .map(|t| match t.targets.iter().all(|k| *k == t.targets[0]) {
                    true => t.targets[0].to_string(),
                    false => String::new(),
                })
                .collect();
            let titles = match titles.iter().any(String::is_empty) {
                true => Vec::new(),
                false => titles,
            };
            let grid = heat_map_grid(height, image_width, &inputs, &maps, scale, &titles);
            write_file(&dir.join("heatmaps.png"), &grid.to_png().map_err(runtime)?)?;
            written.push("heatmaps.png".into());
            if all {
                for (k, m) in maps.iter().enumerate() {
                    let title = titles.get(k).cloned().into_iter().collect::<Vec<_>>();
                    let one = heat_map_grid(
                        height,
                        image_width,
                        &inputs,
                        std::slice::from_ref(m),
                        scale,
                        &title,
                    );
                    let name = format!("heatmap-{k}.png");
                    write_file(&dir.join(&name), &one.to_png().map_err(runtime)?)?;
                    written.push(name);
                }
            }
        }
        InputKind::Tabular { .. } => {
            for (k, t) in e.targets.iter().enumerate() {
                let ranked = rank_features(&t.attributions.values, &names.features);
                let suffix = if all { format!("-{k}") } else { String::new() };
                let target = match all {
                    true => format!("target {}", names.target(k)),
                    false => match t.targets.iter().all(|x| *x == t.targets[0]) {
                        true => format!("target {}", names.target(t.targets[0])),
                        false => "each sample's predicted class".to_string(),
                    },
                };
                let title = format!(
                    "{} of `{}` ({target}), {n} sample{}",
                    method_title(&settings.method),
                    e.output,
                    if n == 1 { "" } else { "s" }
                );
                let mut csv = String::from("rank,feature,name,mean_abs,mean\n");
                for (r, f) in ranked.iter().enumerate() {
                    csv.push_str(&format!(
                        "{},{},\"{}\",{},{}\n",
                        r + 1,
                        f.index,
                        f.name.replace('"', "\"\""),
                        f.mean_abs,
                        f.mean
                    ));
                }
                write_file(&dir.join(format!("ranking{suffix}.csv")), csv.as_bytes())?;
                write_file(
                    &dir.join(format!("ranking{suffix}.svg")),
                    ranking_svg(&title, &ranked).as_bytes(),
                )?;
                written.push(format!("ranking{suffix}.svg"));
                if !all {
                    p(
                        format!(
                            "  {:<30} {:>12} {:>12}",
                            "feature", "mean |attr|", "mean attr"
                        ),
                        out,
                    )?;
                    for f in ranked.iter().take(10) {
                        p(
                            format!("  {:<30} {:>12.4e} {:>12.4e}", f.name, f.mean_abs, f.mean),
                            out,
                        )?;
                    }
                }
            }
        }
        InputKind::Sequence { length, features } => {
            for (k, t) in e.targets.iter().enumerate() {
                let scores = position_scores(&t.attributions.values, length, features);
                let suffix = if all { format!("-{k}") } else { String::new() };
                write_file(
                    &dir.join(format!("positions{suffix}.csv")),
                    positions_csv(&scores).as_bytes(),
                )?;
                written.push(format!("positions{suffix}.csv"));
                if !all {
                    p(
                        "  per-position scores (lag 1 is the last position):".into(),
                        out,
                    )?;
                    write!(out, "{}", positions_text(&scores)).map_err(super::written)?;
                }
            }
        }
    }
    p(
        format!("wrote {} in {}", written.join(", "), dir.display()),
        out,
    )
}

fn method_title(method: &Method) -> String {
    match method {
        Method::Gradient => "gradient".into(),
        Method::GradientTimesInput => "gradient x input".into(),
        Method::IntegratedGradients { steps, .. } => {
            format!("integrated gradients ({steps} steps)")
        }
        Method::SmoothGrad { samples, sigma, .. } => {
            format!("SmoothGrad ({samples} samples, sigma {sigma})")
        }
    }
}
