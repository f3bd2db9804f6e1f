//! A route's rules beyond scopes, judged on a verified token's kept claim values (so a cached
//! token is judged without parsing anything): `require_claims` and RFC 9470 step-up.

use serde_json::Value;

use super::Verdict;
use crate::config::{ClaimRule, ClaimTest, StepUp};

static NULL: Value = Value::Null;

/// The value at `path` (object members, one segment each); `Null` when absent.
pub fn value_at<'a>(payload: &'a Value, path: &[String]) -> &'a Value {
    let mut v = payload;
    for seg in path {
        match v.get(seg) {
            Some(next) => v = next,
            None => return &NULL,
        }
    }
    v
}

/// True when `value` satisfies `test`.
pub fn holds(test: &ClaimTest, value: &Value) -> bool {
    let has = |wanted: &String| match value {
        Value::String(s) => s == wanted,
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(wanted.as_str())),
        _ => false,
    };
    match test {
        ClaimTest::AnyOf(list) => list.iter().any(has),
        ClaimTest::AllOf(list) => list.iter().all(has),
        // Numbers compare by value (1 and 1.0 are the same claim value).
        ClaimTest::Equals(Value::Number(n)) => value.as_f64().is_some_and(|v| Some(v) == n.as_f64()),
        ClaimTest::Equals(expected) => value == expected,
    }
}

/// The first rule the verdict's claims fail, with the value it found.
pub fn first_failed_rule<'r>(v: &'r Verdict, rules: &'r [ClaimRule]) -> Option<(&'r ClaimRule, &'r Value)> {
    rules.iter().find_map(|r| {
        let value = v.rule_values.get(r.path).unwrap_or(&NULL);
        (!holds(&r.test, value)).then_some((r, value))
    })
}

/// Why the authentication event falls short of `step_up` at `now`, if it does.
pub fn step_up_shortfall(v: &Verdict, step_up: &StepUp, now: i64) -> Option<&'static str> {
    let value = |i: usize| v.rule_values.get(i).unwrap_or(&NULL);
    if !step_up.acr_values.is_empty() {
        let acr = value(step_up.acr_path).as_str();
        if !acr.is_some_and(|a| step_up.acr_values.iter().any(|w| w == a)) {
            return Some("acr");
        }
    }
    if let Some(max_age) = step_up.max_age_seconds {
        match value(step_up.auth_time_path).as_f64() {
            Some(t) if (now as f64) - t <= max_age as f64 => {}
            _ => return Some("auth_time"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tests_match_strings_arrays_and_scalars() {
        let any = ClaimTest::AnyOf(vec!["admin".into(), "ops".into()]);
        assert!(holds(&any, &json!("ops")));
        assert!(holds(&any, &json!(["user", "admin"])));
        assert!(!holds(&any, &json!(["user"])));
        assert!(!holds(&any, &json!(null)));
        assert!(!holds(&any, &json!({"admin": true})));
        let all = ClaimTest::AllOf(vec!["a".into(), "b".into()]);
        assert!(holds(&all, &json!(["b", "a", "c"])));
        assert!(!holds(&all, &json!(["a"])));
        assert!(holds(&ClaimTest::Equals(json!(3)), &json!(3.0)));
        assert!(holds(&ClaimTest::Equals(json!(true)), &json!(true)));
        assert!(!holds(&ClaimTest::Equals(json!("true")), &json!(true)));
        assert_eq!(value_at(&json!({"realm": {"roles": ["x"]}}), &["realm".into(), "roles".into()]), &json!(["x"]));
        assert_eq!(value_at(&json!({"realm": 1}), &["realm".into(), "roles".into()]), &Value::Null);
    }
}
