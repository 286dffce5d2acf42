//! Binding `--input` / `--output` arguments to an entry's inputs and outputs: `NAME=PATH`,
//! or a lone `PATH` when the entry has a single one.

use std::path::PathBuf;

/// Parses `NAME=PATH` (as given to `--input`).
pub fn parse_input_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH, got `{s}`")),
    }
}

/// True if `arg` is `NAME=...` for one of `names`.
fn is_named(arg: &str, names: &[&str]) -> bool {
    arg.split_once('=').is_some_and(|(n, _)| names.contains(&n))
}

/// Matches `--input` arguments to an entry's inputs: each is `NAME=PATH`, or, when the
/// entry has a single input, a lone `PATH`. Unknown names are left for the session to
/// report (it lists the entry's inputs).
pub fn bind_input_args(
    input_names: &[&str],
    args: &[String],
) -> Result<Vec<(String, PathBuf)>, String> {
    if let ([only], [arg]) = (input_names, args)
        && !is_named(arg, input_names)
    {
        return Ok(vec![(only.to_string(), PathBuf::from(arg))]);
    }
    args.iter().map(|a| parse_input_arg(a)).collect()
}

/// Matches `--output` arguments to an entry's outputs: each is `NAME=PATH` with a known
/// name, or, when the entry has a single output, a lone `PATH`.
pub fn bind_output_args(
    output_names: &[&str],
    args: &[String],
) -> Result<Vec<(String, PathBuf)>, String> {
    if let ([only], [arg]) = (output_names, args)
        && !is_named(arg, output_names)
    {
        return Ok(vec![(only.to_string(), PathBuf::from(arg))]);
    }
    let mut bound: Vec<(String, PathBuf)> = Vec::with_capacity(args.len());
    for arg in args {
        if !is_named(arg, output_names) {
            return Err(format!(
                "--output `{arg}`: expected NAME=PATH with NAME one of {}",
                output_names.join(", ")
            ));
        }
        let (name, path) = parse_input_arg(arg)?;
        if bound.iter().any(|(n, _)| *n == name) {
            return Err(format!("--output `{name}` is given twice"));
        }
        bound.push((name, path));
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_equals_path() {
        assert_eq!(
            parse_input_arg("x=data/x.npy"),
            Ok(("x".to_string(), PathBuf::from("data/x.npy")))
        );
        assert!(parse_input_arg("x.npy").is_err());
        assert!(parse_input_arg("=x.npy").is_err());
        assert!(parse_input_arg("x=").is_err());
    }

    #[test]
    fn a_single_input_needs_no_name() {
        let bound = bind_input_args(&["x"], &["a=b.npy".to_string()]).unwrap();
        assert_eq!(bound, vec![("x".to_string(), PathBuf::from("a=b.npy"))]);
        let bound = bind_input_args(&["x"], &["x=b.npy".to_string()]).unwrap();
        assert_eq!(bound, vec![("x".to_string(), PathBuf::from("b.npy"))]);
        assert!(bind_input_args(&["x", "y"], &["b.npy".to_string()]).is_err());
    }

    #[test]
    fn outputs_must_be_named_when_there_are_several() {
        let names = ["a", "b"];
        assert!(bind_output_args(&names, &["out.npy".to_string()]).is_err());
        assert!(bind_output_args(&names, &["c=out.npy".to_string()]).is_err());
        let twice = ["a=1.npy".to_string(), "a=2.npy".to_string()];
        assert!(bind_output_args(&names, &twice).is_err());
        let bound = bind_output_args(&names, &["b=out.npy".to_string()]).unwrap();
        assert_eq!(bound, vec![("b".to_string(), PathBuf::from("out.npy"))]);
    }
}
