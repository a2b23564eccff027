//! Secrets come from the environment, never from the command line (where `ps` shows them):
//! `NAME` holds the value, or `NAME_FILE` names a file holding it (the Kubernetes secret
//! convention; one trailing newline is dropped).
//!
//! Every secret read here is remembered, so that [`scrub`] can take it out of whatever Tandem
//! prints: its logs (through [`ScrubbedStderr`]) and its error messages. Passwords written
//! into URLs (`postgres://user:password@host/…`) are taken out too.

use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};

use anyhow::Context as _;

/// Secrets read so far; they are short and few.
static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Shorter values are not scrubbed: they would match ordinary text.
const SHORTEST: usize = 4;

/// The secret `name`, from `name` or the file `name_FILE` names; none when neither is set.
pub fn read(name: &str) -> anyhow::Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    let value = match (std::env::var(name).ok(), std::env::var(&file_var).ok()) {
        (Some(_), Some(_)) => {
            return Err(crate::exit::Usage(format!("set {name} or {file_var}, not both")).into())
        }
        (Some(value), None) => value,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{file_var}: cannot read {path}"))?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            value.strip_suffix('\r').unwrap_or(value).to_owned()
        }
        (None, None) => return Ok(None),
    };
    remember(&value);
    Ok(Some(value))
}

/// Scrubs `value` from everything printed from now on.
pub fn remember(value: &str) {
    if value.len() >= SHORTEST {
        let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
        if !known.iter().any(|k| k == value) {
            known.push(value.to_owned());
        }
    }
}

/// Remembers the values of librdkafka properties that hold secrets (given with `-X`).
pub fn remember_properties(properties: &[(String, String)]) {
    for (key, value) in properties {
        if key.contains("password") || key.contains("secret") || key.ends_with(".pem") {
            remember(value);
        }
    }
}

/// Sets `PGPASSWORD` from the file `PGPASSWORD_FILE` names, for every PostgreSQL connection
/// (stores and legacy databases) that has no password of its own. Called before any thread is
/// started: changing the environment is safe only then.
pub fn export_database_password() -> anyhow::Result<()> {
    if let Some(password) = read("PGPASSWORD")? {
        if std::env::var_os("PGPASSWORD").is_none() {
            std::env::set_var("PGPASSWORD", password);
        }
    }
    Ok(())
}

/// `text` with every remembered secret and every password in a URL replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if let Some(scrubbed) = scrub_url_passwords(&out) {
        out = Cow::Owned(scrubbed);
    }
    let known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), "***"));
        }
    }
    out
}

/// `scheme://user:password@host` becomes `scheme://user:***@host`; `None` when there is
/// none.
fn scrub_url_passwords(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\''
            })
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@').and_then(|at| {
            let userinfo = &authority[..at];
            userinfo.find(':').map(|colon| (colon, at))
        }) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
                changed = true;
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Standard error, with secrets scrubbed from every line written: the writer of Tandem's logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedStderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_scrubbed() {
        assert_eq!(
            scrub("cannot open postgres://tandem:hunter22@db:5432/x?sslmode=require: refused"),
            "cannot open postgres://tandem:***@db:5432/x?sslmode=require: refused"
        );
        assert_eq!(
            scrub("no password: postgres://tandem@db/x and http://h:80/p"),
            "no password: postgres://tandem@db/x and http://h:80/p"
        );
    }

    #[test]
    fn remembered_secrets_are_scrubbed() {
        remember("s3cret-value-for-scrub-test");
        assert_eq!(
            scrub("token s3cret-value-for-scrub-test refused"),
            "token *** refused"
        );
        remember("abc");
        assert_eq!(
            scrub("abc is too short to hide"),
            "abc is too short to hide"
        );
    }
}
