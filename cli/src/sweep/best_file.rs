//! The chosen configuration as a model file: the original text with each swept value
//! written where the file sets it (`model Mlp(hidden = 128)` -> `hidden = 256`,
//! `adam(lr = 1e-3)` -> `lr = 0.0042`), comments and layout kept.
//!
//! The rewrite is textual, so the sweep proves it: it compiles the new file without
//! overrides and compares it with the original compiled with the trial's `--set`
//! values, and writes the file only if the two are the same model.

/// `text` with every `NAME = LITERAL` (outside comments) of each swept name set to its
/// value; an error names a value the file does not write as such.
pub fn rewrite(text: &str, config: &[(String, String)]) -> Result<String, String> {
    let mut out = text.to_string();
    for (name, value) in config {
        let spots = assignments(&out, name);
        if spots.is_empty() {
            return Err(format!(
                "the file does not write `{name} = …` (the value comes from a default)"
            ));
        }
        for (start, end) in spots.into_iter().rev() {
            out.replace_range(start..end, value);
        }
    }
    Ok(out)
}

/// Byte ranges of the literals in `name = literal` outside comments.
fn assignments(text: &str, name: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        // The language has `//` and `#` comments.
        let code = line.split("//").next().unwrap_or("");
        let code = code.split('#').next().unwrap_or("");
        let mut from = 0;
        while let Some(i) = code[from..].find(name) {
            let at = line_start + from + i;
            from += i + name.len();
            let before_ok = at == 0 || !ident(bytes[at - 1]);
            let mut j = at + name.len();
            if !before_ok || (j < bytes.len() && ident(bytes[j])) {
                continue;
            }
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] != b'=' || bytes.get(j + 1) == Some(&b'=') {
                continue;
            }
            j += 1;
            while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
                j += 1;
            }
            let start = j;
            while j < bytes.len()
                && (ident(bytes[j])
                    || bytes[j] == b'.'
                    || ((bytes[j] == b'-' || bytes[j] == b'+')
                        && (j == start || matches!(bytes[j - 1], b'e' | b'E'))))
            {
                j += 1;
            }
            // A literal, not an expression: what follows is a separator.
            let next = bytes[j..].iter().find(|b| **b != b' ' && **b != b'\t');
            let literal = j > start
                && next.is_none_or(|b| {
                    matches!(b, b',' | b')' | b'\n' | b'\r' | b'}' | b'/' | b'#')
                        || b.is_ascii_alphabetic()
                });
            if literal && line_start + code.len() >= j {
                found.push((start, j));
            }
        }
        line_start += line.len();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP: &str = "// hidden = 1 in a comment\n# lr = 2 too\nmodel Mlp(hidden = 128, classes = 10) {\n  h = x |> dense(hidden)\n}\ntrain Mlp {\n  optimizer = adam(lr = 1e-3)\n  batch = 32   epochs = 30\n}\n";

    #[test]
    fn rewrites_model_parameters_and_train_settings_in_place() {
        let config = vec![
            ("hidden".to_string(), "256".to_string()),
            ("lr".to_string(), "0.0042".to_string()),
            ("batch".to_string(), "64".to_string()),
        ];
        let out = rewrite(MLP, &config).unwrap();
        assert_eq!(
            out,
            MLP.replace("hidden = 128", "hidden = 256")
                .replace("lr = 1e-3", "lr = 0.0042")
                .replace("batch = 32", "batch = 64")
        );
        assert!(out.starts_with("// hidden = 1 in a comment\n# lr = 2 too\n"));
    }

    #[test]
    fn a_value_the_file_does_not_write_is_an_error() {
        let e = rewrite(MLP, &[("patience".to_string(), "3".to_string())]).unwrap_err();
        assert!(e.contains("`patience = …`"), "{e}");
        // `h = x |> …` is an expression, not a literal to replace.
        assert!(rewrite(MLP, &[("h".to_string(), "3".to_string())]).is_err());
    }
}
