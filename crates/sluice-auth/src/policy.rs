//! IAM-style policy documents and their evaluation.
//!
//! A document has an optional `Version` and one statement or a list of them, each with
//! `Effect` (`Allow`/`Deny`), `Action` or `NotAction`, `Resource` or `NotResource`, and in
//! resource policies `Principal` or `NotPrincipal`. Actions and resources match with `*`
//! and `?` wildcards (actions case-insensitively, as IAM does). `Condition` blocks are
//! refused when a policy is stored rather than silently ignored.
//!
//! Evaluation follows IAM within one account: an explicit `Deny` in any applicable policy
//! wins; otherwise an `Allow` in an identity policy, or in the resource's policy naming the
//! caller (or everyone), allows; otherwise the request is implicitly denied. A resource
//! policy that names the whole account delegates to identity policies, as in IAM.

use serde_json::Value;

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// Where a policy is attached, which decides whether it names principals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Attached to an access key: no `Principal`.
    Identity,
    /// Attached to a stream or consumer: `Principal` required, `Resource` optional.
    Resource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Patterns {
    /// No element: matches anything (only for `Resource` in resource policies).
    Unstated,
    Listed(Vec<String>),
    Not(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    Unstated,
    Listed(Vec<String>),
    Not(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principals: Principals,
    actions: Patterns,
    resources: Patterns,
}

/// A parsed, validated policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// The caller, what it wants to do, and to what.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// `arn:aws:iam::<account>:user/<name>`
    pub principal: &'a str,
    pub account: &'a str,
    /// e.g. `kinesis:PutRecord`
    pub action: &'a str,
    /// e.g. `arn:aws:kinesis:us-east-1:123456789012:stream/orders`, or `*`
    pub resource: &'a str,
}

/// Which kind of policy decided a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenySource {
    Identity,
    Resource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny(DenySource),
    /// No policy allows the request.
    ImplicitDeny,
}

impl Policy {
    /// Parses and validates a JSON policy document.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        let document: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError(format!("Policy document is not valid JSON: {e}")))?;
        let Value::Object(document) = document else {
            return Err(PolicyError("Policy document must be a JSON object.".into()));
        };
        for key in document.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(PolicyError(format!(
                    "Policy document has an unknown element: {key}."
                )));
            }
        }
        match document.get("Version") {
            None => {}
            Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(other) => {
                return Err(PolicyError(format!(
                    "Policy document has an unsupported Version: {other}. Use 2012-10-17."
                )));
            }
        }
        let statements = match document.get("Statement") {
            Some(Value::Array(items)) if !items.is_empty() => items.iter().collect::<Vec<_>>(),
            Some(item @ Value::Object(_)) => vec![item],
            _ => {
                return Err(PolicyError(
                    "Policy document must contain a Statement.".into(),
                ));
            }
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(i, statement)| parse_statement(i + 1, statement, kind))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { statements })
    }

    /// The strongest effect this policy has on `request`: `Some(Deny)` beats `Some(Allow)`.
    fn effect_on(&self, request: &AccessRequest<'_>, kind: PolicyKind) -> Option<(Effect, bool)> {
        let mut result = None;
        for statement in &self.statements {
            if !statement.actions.matches(request.action, true)
                || !statement.resources.matches(request.resource, false)
            {
                continue;
            }
            let (applies, names_caller) = match kind {
                PolicyKind::Identity => (true, true),
                PolicyKind::Resource => statement.principals.matches(request),
            };
            if !applies {
                continue;
            }
            match statement.effect {
                Effect::Deny => return Some((Effect::Deny, true)),
                Effect::Allow => {
                    // An account-wide grant only counts together with an identity policy.
                    if names_caller {
                        result = Some((Effect::Allow, true));
                    }
                }
            }
        }
        result
    }
}

/// Decides a request from the caller's identity policies and the resource's policy.
pub fn evaluate<'a>(
    request: &AccessRequest<'_>,
    identity_policies: impl IntoIterator<Item = &'a Policy>,
    resource_policy: Option<&Policy>,
) -> Decision {
    let mut allowed = false;
    for policy in identity_policies {
        match policy.effect_on(request, PolicyKind::Identity) {
            Some((Effect::Deny, _)) => return Decision::ExplicitDeny(DenySource::Identity),
            Some((Effect::Allow, _)) => allowed = true,
            None => {}
        }
    }
    if let Some(policy) = resource_policy {
        match policy.effect_on(request, PolicyKind::Resource) {
            Some((Effect::Deny, _)) => return Decision::ExplicitDeny(DenySource::Resource),
            Some((Effect::Allow, _)) => allowed = true,
            None => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

fn parse_statement(
    index: usize,
    statement: &Value,
    kind: PolicyKind,
) -> Result<Statement, PolicyError> {
    let Value::Object(fields) = statement else {
        return Err(PolicyError(format!(
            "Statement {index} must be a JSON object."
        )));
    };
    for key in fields.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
            | "Principal" | "NotPrincipal" => {}
            "Condition" => {
                return Err(PolicyError(format!(
                    "Statement {index}: Condition elements are not supported."
                )));
            }
            other => {
                return Err(PolicyError(format!(
                    "Statement {index} has an unknown element: {other}."
                )));
            }
        }
    }
    let effect = match fields.get("Effect") {
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        _ => {
            return Err(PolicyError(format!(
                "Statement {index} needs an Effect of Allow or Deny."
            )));
        }
    };
    let actions = patterns(index, fields, "Action", "NotAction")?;
    if actions == Patterns::Unstated {
        return Err(PolicyError(format!(
            "Statement {index} needs an Action or NotAction."
        )));
    }
    let resources = patterns(index, fields, "Resource", "NotResource")?;
    let principals = match (fields.get("Principal"), fields.get("NotPrincipal")) {
        (None, None) => Principals::Unstated,
        (Some(p), None) => Principals::Listed(principal_list(index, p)?),
        (None, Some(p)) => Principals::Not(principal_list(index, p)?),
        (Some(_), Some(_)) => {
            return Err(PolicyError(format!(
                "Statement {index} has both Principal and NotPrincipal."
            )));
        }
    };
    match kind {
        PolicyKind::Identity => {
            if principals != Principals::Unstated {
                return Err(PolicyError(format!(
                    "Statement {index}: identity policies cannot name a Principal."
                )));
            }
            if resources == Patterns::Unstated {
                return Err(PolicyError(format!(
                    "Statement {index} needs a Resource or NotResource."
                )));
            }
        }
        PolicyKind::Resource => {
            if principals == Principals::Unstated {
                return Err(PolicyError(format!(
                    "Statement {index}: resource policies must name a Principal."
                )));
            }
        }
    }
    Ok(Statement {
        effect,
        principals,
        actions,
        resources,
    })
}

fn patterns(
    index: usize,
    fields: &serde_json::Map<String, Value>,
    positive: &str,
    negative: &str,
) -> Result<Patterns, PolicyError> {
    match (fields.get(positive), fields.get(negative)) {
        (None, None) => Ok(Patterns::Unstated),
        (Some(v), None) => Ok(Patterns::Listed(string_list(index, positive, v)?)),
        (None, Some(v)) => Ok(Patterns::Not(string_list(index, negative, v)?)),
        (Some(_), Some(_)) => Err(PolicyError(format!(
            "Statement {index} has both {positive} and {negative}."
        ))),
    }
}

fn string_list(index: usize, name: &str, value: &Value) -> Result<Vec<String>, PolicyError> {
    let bad = || {
        PolicyError(format!(
            "Statement {index}: {name} must be a string or a list of strings."
        ))
    };
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

fn principal_list(index: usize, value: &Value) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) if s == "*" => Ok(vec!["*".into()]),
        Value::Object(map) => {
            let mut out = Vec::new();
            for (kind, ids) in map {
                if kind != "AWS" {
                    return Err(PolicyError(format!(
                        "Statement {index}: only AWS principals are supported, not {kind}."
                    )));
                }
                out.extend(string_list(index, "Principal", ids)?);
            }
            Ok(out)
        }
        _ => Err(PolicyError(format!(
            "Statement {index}: Principal must be \"*\" or {{\"AWS\": ...}}."
        ))),
    }
}

impl Patterns {
    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        let any = |patterns: &[String]| {
            patterns
                .iter()
                .any(|pattern| wildcard_match(pattern, value, ignore_case))
        };
        match self {
            Patterns::Unstated => true,
            Patterns::Listed(patterns) => any(patterns),
            Patterns::Not(patterns) => !any(patterns),
        }
    }
}

impl Principals {
    /// Whether the statement applies to the caller, and whether it names the caller
    /// itself (or everyone) rather than only its account.
    fn matches(&self, request: &AccessRequest<'_>) -> (bool, bool) {
        let account_root = format!("arn:aws:iam::{}:root", request.account);
        let names = |ids: &[String]| -> (bool, bool) {
            let mut applies = false;
            let mut names_caller = false;
            for id in ids {
                if id == "*" || id == request.principal {
                    applies = true;
                    names_caller = true;
                } else if id == request.account || *id == account_root {
                    applies = true;
                }
            }
            (applies, names_caller)
        };
        match self {
            Principals::Unstated => (false, false),
            Principals::Listed(ids) => names(ids),
            Principals::Not(ids) => {
                let (excluded, _) = names(ids);
                (!excluded, !excluded)
            }
        }
    }
}

/// `*` matches any run of characters, `?` any one character.
pub fn wildcard_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let normalize = |s: &str| -> Vec<char> {
        if ignore_case {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (pattern, value) = (normalize(pattern), normalize(value));
    // Iterative matcher with one backtrack point: linear in practice, never exponential.
    let (mut p, mut v) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == value[v]) {
            p += 1;
            v += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, v));
            p += 1;
        } else if let Some((star_p, star_v)) = star {
            p = star_p + 1;
            v = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests;
