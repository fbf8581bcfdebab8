//! A small YAML walker that checks a document (the config, a policy file, the injector's
//! settings) against the keys we know and collects every problem (file, key, why) instead of
//! stopping at the first, so an operator sees them all. The one load path for every YAML file
//! the sentinel reads: [`load_file`] and [`read_document`]. Floor 0.

use std::fmt;

use serde_yaml_ng::{Mapping, Value};

pub mod survey;

use survey::{Kind, Survey};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.why)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.why)
        }
    }
}

/// Every problem found in a config file; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} error{} in config:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// One error about a whole file.
    pub fn file(file: &str, why: String) -> Self {
        Self(vec![ConfigError {
            file: file.to_string(),
            key: String::new(),
            why,
        }])
    }
}

/// Reads and checks the YAML file at `path` with `read` (see [`read_document`]).
pub fn load_file<T>(
    path: &std::path::Path,
    read: impl FnOnce(&mut Reader, &mut Section<'_>, &Value) -> Option<T>,
) -> Result<T, ConfigErrors> {
    let (text, name) = read_text(path)?;
    read_document(&text, &name, read)
}

/// A file's text and its name for errors; the error names the file.
pub fn read_text(path: &std::path::Path) -> Result<(String, String), ConfigErrors> {
    let name = path.display().to_string();
    std::fs::read_to_string(path)
        .map(|text| (text, name.clone()))
        .map_err(|e| ConfigErrors::file(&name, format!("cannot read: {e}")))
}

/// Parses `text` as YAML and hands its top-level mapping to `read`, which takes the keys it
/// knows; any key left over is an error, and so is any error `read` reported. `source` names the
/// document in errors. `read` returns `None` only after reporting an error.
pub fn read_document<T>(
    text: &str,
    source: &str,
    read: impl FnOnce(&mut Reader, &mut Section<'_>, &Value) -> Option<T>,
) -> Result<T, ConfigErrors> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigErrors::file(source, format!("not valid YAML: {e}")))?;
    let mut r = Reader::new(source);
    let mut top = r.section("", Some(&doc));
    let value = read(&mut r, &mut top, &doc);
    r.close(top);
    r.finish()?;
    Ok(value.expect("a reader that reported no error returns a value"))
}

/// Reads every document of the YAML stream `text` with `read` in survey mode (see [`survey`]):
/// the survey of them all, and every error `read` reported.
pub fn survey_documents(
    text: &str,
    source: &str,
    mut read: impl FnMut(&mut Reader, &mut Section<'_>, &Value),
) -> Result<(Survey, Vec<ConfigError>), ConfigErrors> {
    use serde::Deserialize;
    let mut survey = Survey::default();
    let mut errors = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let doc = Value::deserialize(document)
            .map_err(|e| ConfigErrors::file(source, format!("not valid YAML: {e}")))?;
        let mut r = Reader::surveying(source, survey);
        let mut top = r.section("", Some(&doc));
        read(&mut r, &mut top, &doc);
        r.close(top);
        let (s, e) = r.into_survey();
        survey = s.expect("a surveying reader keeps its survey");
        errors.extend(e);
    }
    Ok((survey, errors))
}

/// Collects errors while sections of a document are read.
pub struct Reader {
    file: String,
    errors: Vec<ConfigError>,
    /// Set while surveying: every key asked for is recorded (see [`survey`]).
    survey: Option<Survey>,
}

/// A mapping being read: keys taken are remembered so the rest can be reported as unknown.
pub struct Section<'v> {
    path: String,
    map: Option<&'v Mapping>,
    taken: Vec<&'static str>,
}

impl Reader {
    /// The document being read, as errors name it.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            errors: Vec::new(),
            survey: None,
        }
    }

    /// A reader that also records every key it is asked for into `survey`.
    pub fn surveying(file: impl Into<String>, survey: Survey) -> Self {
        Self {
            survey: Some(survey),
            ..Self::new(file)
        }
    }

    /// The survey (`None` when not surveying) and the errors, once a document is read.
    pub fn into_survey(self) -> (Option<Survey>, Vec<ConfigError>) {
        (self.survey, self.errors)
    }

    pub fn error(&mut self, key: impl Into<String>, why: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key: key.into(),
            why: why.into(),
        });
    }

    /// Takes in the errors of another document (a file the config names).
    pub fn extend(&mut self, errors: ConfigErrors) {
        self.errors.extend(errors.0);
    }

    /// An error was already reported for `key`.
    pub fn has_error_at(&self, key: &str) -> bool {
        self.errors.iter().any(|e| e.key == key)
    }

    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    /// Opens `value` as a mapping at `path`. A missing or null value is an empty section.
    pub fn section<'v>(&mut self, path: &str, value: Option<&'v Value>) -> Section<'v> {
        if let Some(s) = &mut self.survey {
            s.section(path);
        }
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(_) => {
                self.error(path, "must be a mapping");
                None
            }
        };
        Section {
            path: path.to_string(),
            map,
            taken: Vec::new(),
        }
    }

    /// Reads `key` from `section`, converting it with `parse`; `None` when absent or invalid.
    /// (A survey also tries `parse` on other forms of the value, to learn the forms it takes.)
    pub fn field<T>(
        &mut self,
        section: &mut Section<'_>,
        key: &'static str,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        if let Some(s) = &mut self.survey {
            let value = section.peek(key);
            s.key(&section.path, key, Kind::Field, value, |v| parse(v).is_ok());
        }
        let value = section.take(key)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(why) => {
                let path = section.key_path(key);
                self.error(path, why);
                None
            }
        }
    }

    /// Reads `key` of `section` as one of the words of `choices` (each with what it means);
    /// the error lists the words, and a survey records them.
    pub fn choice<T: Copy>(
        &mut self,
        section: &mut Section<'_>,
        key: &'static str,
        choices: &[(&'static str, T)],
    ) -> Option<T> {
        let words: Vec<&'static str> = choices.iter().map(|(w, _)| *w).collect();
        let value = self.field(section, key, |v| {
            v.as_str()
                .and_then(|w| choices.iter().find(|(c, _)| *c == w))
                .map(|(_, t)| *t)
                .ok_or_else(|| format!("must be {}", one_of(&words)))
        });
        if let Some(s) = &mut self.survey {
            s.choices(&section.path, key, &words);
        }
        value
    }

    /// Reads `key` of `section` as a list, borrowed from the document; empty when absent (an
    /// error when not a list).
    pub fn list<'v>(
        &mut self,
        section: &mut Section<'v>,
        key: &'static str,
        what: &str,
    ) -> &'v [Value] {
        if let Some(s) = &mut self.survey {
            s.key(&section.path, key, Kind::List, section.peek(key), |_| true);
        }
        match section.take(key) {
            None => &[],
            Some(Value::Sequence(items)) => items,
            Some(_) => {
                let path = section.key_path(key);
                self.error(path, format!("must be a list of {what}"));
                &[]
            }
        }
    }

    /// Opens a nested mapping `key` of `section`.
    pub fn child<'v>(&mut self, section: &mut Section<'v>, key: &'static str) -> Section<'v> {
        if let Some(s) = &mut self.survey {
            s.key(&section.path, key, Kind::Child, section.peek(key), |_| true);
        }
        let path = section.key_path(key);
        let value = section.take(key);
        self.section(&path, value)
    }

    /// The mapping as written, for sections whose keys are data (names), not settings.
    pub fn entries<'v>(&mut self, section: &Section<'v>) -> Option<&'v Mapping> {
        if let Some(s) = &mut self.survey {
            s.data_keyed(&section.path, section.map);
        }
        section.map
    }

    /// Reports every key of `section` that was not taken.
    pub fn close(&mut self, section: Section<'_>) {
        let Some(map) = section.map else { return };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if section.taken.contains(&k) => {}
                Some(k) => {
                    let path = section.key_path(k);
                    self.error(path, "unknown key");
                }
                None => self.error(section.path.clone(), "keys must be strings"),
            }
        }
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

impl<'v> Section<'v> {
    /// The section was written in the document (as a mapping).
    pub fn is_present(&self) -> bool {
        self.map.is_some()
    }

    /// `key` is written in this section (and not null), valid or not.
    pub fn has(&self, key: &str) -> bool {
        self.map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null())
    }

    fn take(&mut self, key: &'static str) -> Option<&'v Value> {
        self.taken.push(key);
        self.peek(key)
    }

    /// The value of `key` (`None` when absent or null), not taken.
    fn peek(&self, key: &str) -> Option<&'v Value> {
        match self.map?.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// Value converters shared by every section.
pub mod parse {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde_yaml_ng::Value;

    pub fn string(v: &Value) -> Result<String, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| "must be a string".to_string())
    }

    /// A list of strings (a single string is a list of one).
    pub fn strings(v: &Value) -> Result<Vec<String>, String> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Sequence(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "must be a list of strings".to_string())
                })
                .collect(),
            _ => Err("must be a list of strings".into()),
        }
    }

    pub fn boolean(v: &Value) -> Result<bool, String> {
        v.as_bool()
            .ok_or_else(|| "must be true or false".to_string())
    }

    pub fn socket_addr(v: &Value) -> Result<SocketAddr, String> {
        let s = v
            .as_str()
            .ok_or("must be an address such as 0.0.0.0:15080")?;
        s.parse()
            .map_err(|_| format!("{s:?} is not an address such as 0.0.0.0:15080"))
    }

    /// A positive integer, or a string with a unit: `4MiB`, `512KiB`, `1GiB`, `100B`.
    pub fn byte_size(v: &Value) -> Result<usize, String> {
        let n = match v {
            Value::Number(n) => n.as_u64().ok_or("must be a positive number of bytes")?,
            Value::String(s) => parse_byte_size(s).map_err(|e| e.to_string())?,
            _ => return Err("must be a size such as 4MiB or 4194304".into()),
        };
        if n == 0 {
            return Err("must be greater than zero".into());
        }
        usize::try_from(n).map_err(|_| "is too large".to_string())
    }

    /// Why a size is refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum SizeError {
        #[error("{0:?} is not a size such as 4MiB")]
        NotASize(String),
        #[error("unknown size unit {0:?} (use B, KiB, MiB, GiB)")]
        Unit(String),
        #[error("is too large")]
        TooLarge,
    }

    pub fn parse_byte_size(s: &str) -> Result<u64, SizeError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: u64 = num
            .parse()
            .map_err(|_| SizeError::NotASize(s.to_string()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => return Err(SizeError::Unit(other.to_string())),
        };
        num.checked_mul(mult).ok_or(SizeError::TooLarge)
    }

    /// A duration with a unit: `250ms`, `30s`, `5m`, `1h`. Zero is allowed (it means "off"
    /// where a setting documents that).
    pub fn duration(v: &Value) -> Result<Duration, String> {
        let s = v
            .as_str()
            .ok_or("must be a duration such as 30s or 500ms")?;
        parse_duration(s).map_err(|e| e.to_string())
    }

    /// A duration refused: not a number with a unit of ms, s, m or h.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("{0:?} is not a duration such as 30s or 500ms")]
    pub struct DurationError(pub String);

    pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let bad = || DurationError(s.to_string());
        let num: u64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "ms" => Duration::from_millis(num),
            "s" => Duration::from_secs(num),
            "m" => Duration::from_secs(num.saturating_mul(60)),
            "h" => Duration::from_secs(num.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{parse_byte_size, parse_duration};
    use std::time::Duration;

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_byte_size("10"), Ok(10));
        assert_eq!(parse_byte_size("2 KiB"), Ok(2048));
        assert!(parse_byte_size("4 parsecs").is_err());
        assert!(parse_byte_size("MiB").is_err());
    }

    #[test]
    fn a_choice_names_its_words() {
        let read = |text: &str| {
            super::read_document(text, "t", |r, top, _| {
                Some(r.choice(top, "k", &[("a", 1), ("b", 2), ("c", 3)]))
            })
        };
        assert_eq!(read("k: b").unwrap(), Some(2));
        assert_eq!(read("{}").unwrap(), None);
        let errs = read("k: d").unwrap_err().0;
        assert_eq!(
            (errs[0].key.as_str(), errs[0].why.as_str()),
            ("k", "must be a, b or c")
        );
        assert_eq!(super::one_of(&["x", "y"]), "x or y");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
    }
}
