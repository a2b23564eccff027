//! Secrets come from the environment, never from the command line (where `ps` shows them):
//! `NAME` holds the value, or `NAME_FILE` names a file holding it (the Kubernetes secret
//! convention; one trailing newline is dropped).

use anyhow::Context as _;

/// The secret `name`, from `name` or the file `name_FILE` names; none when neither is set.
pub fn read(name: &str) -> anyhow::Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    match (std::env::var(name).ok(), std::env::var(&file_var).ok()) {
        (Some(_), Some(_)) => {
            Err(crate::exit::Usage(format!("set {name} or {file_var}, not both")).into())
        }
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{file_var}: cannot read {path}"))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            Ok(Some(value.strip_suffix('\r').unwrap_or(value).to_owned()))
        }
        (None, None) => Ok(None),
    }
}
