//! Configuration problems: every one with the key it concerns.

use super::*;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Everything wrong with a configuration; `Display` prints one `key: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

/// One problem: the dotted key it concerns (`sinks.xmpp[1].domain`; empty when it concerns the
/// file as a whole, e.g. a TOML syntax error) and what is wrong, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl ConfigErrors {
    /// The first problem about exactly `key`.
    pub fn for_key(&self, key: &str) -> Option<&ConfigProblem> {
        self.0.iter().find(|p| p.key == key)
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems during validation.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigProblem>);

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }
}

/// Turns figment's errors (one per failure) into problems keyed like the TOML file.
pub(super) fn figment_problems(
    errors: impl IntoIterator<Item = figment::Error>,
    origin: Option<&Path>,
) -> Vec<ConfigProblem> {
    use figment::error::Kind;
    errors
        .into_iter()
        .map(|e| {
            let mut key = render_path(&e.path);
            let message = match &e.kind {
                Kind::UnknownField(_, []) => "unknown key".to_owned(),
                Kind::UnknownField(_, expected) => {
                    format!("unknown key (expected one of: {})", expected.join(", "))
                }
                Kind::MissingField(field) => {
                    key = join_key(&key, field);
                    "required key is missing".to_owned()
                }
                Kind::UnknownVariant(found, expected) => {
                    format!(
                        "unknown value {found:?} (expected one of: {})",
                        expected.join(", ")
                    )
                }
                // Never echo what was found under a key named `secret`, or in a webhook's
                // `headers`: it may be the secret (or a bearer token).
                Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected)
                    if e.path.last().is_some_and(|k| k == "secret")
                        || e.path.iter().any(|k| k == "headers") =>
                {
                    format!("expected {expected}")
                }
                Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
                    let hint = if expected == "a duration" {
                        " such as \"30s\", \"100ms\" or \"1m 30s\""
                    } else {
                        ""
                    };
                    format!("expected {expected}{hint}, found {found}")
                }
                Kind::Message(message) if e.path.is_empty() => match origin {
                    Some(path) => format!("{}: {}", path.display(), one_line(message)),
                    None => one_line(message),
                },
                Kind::Message(message) => one_line(message),
                other => one_line(&other.to_string()),
            };
            let env_name = e.path.join("__");
            let from = origin_note(e.metadata.as_ref(), &env_name);
            ConfigProblem::new(key, format!("{message}{from}"))
        })
        .collect()
}

/// `" (from HERALD_…)"` when `metadata` is the environment layer, else nothing.
pub(super) fn origin_note(metadata: Option<&Metadata>, env_name: &str) -> String {
    match metadata {
        Some(md) if md.name == ENV_SOURCE => {
            format!(" (from {ENV_PREFIX}{})", env_name.to_ascii_uppercase())
        }
        _ => String::new(),
    }
}

/// `["sinks", "xmpp", "1", "domain"]` → `sinks.xmpp[1].domain`.
pub(super) fn render_path(path: &[String]) -> String {
    path.iter()
        .fold(String::new(), |key, part| join_key(&key, part))
}

pub(super) fn join_key(key: &str, part: &str) -> String {
    if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
        format!("{key}[{part}]")
    } else if key.is_empty() {
        part.to_owned()
    } else {
        format!("{key}.{part}")
    }
}

/// Squeezes a multi-line message (TOML parse errors quote the offending line) into one line.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_snippet_line(line))
        .collect::<Vec<_>>()
        .join(": ")
}

/// `|`, `1 | [component`, `|    ^`: the source excerpt of a TOML parse error.
pub(super) fn is_snippet_line(line: &str) -> bool {
    line.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

/// `No such file or directory`, without the `(os error 2)` suffix.
pub(super) fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
