//! Label selectors (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`) and field
//! selectors (`path=value`, `path!=value` on any dotted JSON path such as `spec.nodeName`).

use serde_json::Value;

use crate::status::ApiError;

enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Default)]
pub struct LabelSelector(Vec<LabelTerm>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        split_terms(text)
            .into_iter()
            .map(parse_label_term)
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|term| match term {
            LabelTerm::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelTerm::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelTerm::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelTerm::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside a `( … )` value list.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn parse_label_term(term: &str) -> Result<LabelTerm, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "unable to parse requirement: invalid label selector term {term:?}"
        ))
    };
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelTerm::NotEquals(valid_key(key)?, value.trim().to_string()));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelTerm::Equals(valid_key(key)?, value.trim().to_string()));
    }
    if let Some((key, values)) = term.split_once(" notin ") {
        return Ok(LabelTerm::NotIn(valid_key(key)?, parse_set(values).ok_or_else(invalid)?));
    }
    if let Some((key, values)) = term.split_once(" in ") {
        return Ok(LabelTerm::In(valid_key(key)?, parse_set(values).ok_or_else(invalid)?));
    }
    match term.strip_prefix('!') {
        Some(key) => Ok(LabelTerm::NotExists(valid_key(key)?)),
        None => Ok(LabelTerm::Exists(valid_key(term)?)),
    }
}

fn parse_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

fn valid_key(key: &str) -> Result<String, ApiError> {
    let key = key.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
    if key.is_empty() || !key.chars().all(allowed) {
        return Err(ApiError::bad_request(format!("invalid label key {key:?}")));
    }
    Ok(key.to_string())
}

/// A field selector. Any dotted path is accepted (kube allows a per-type list such as
/// `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`); a missing field
/// compares as the empty string, as in kube.
#[derive(Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector: {term:?}")));
            };
            terms.push((path.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn with_name(mut self, name: &str) -> FieldSelector {
        self.0.push(("metadata.name".into(), true, name.to_string()));
        self
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| (field_text(object, path) == *value) == *equal)
    }
}

fn field_text(object: &Value, path: &str) -> String {
    let field = path.split('.').try_fold(object, |v, part| v.get(part));
    match field {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Label and field selectors together.
#[derive(Default)]
pub struct Selector {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selector {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}
