use super::*;

const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
const ORDERS: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/orders";
const AUDIT: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/audit";

fn request<'a>(action: &'a str, resource: &'a str) -> AccessRequest<'a> {
    AccessRequest {
        principal: ALICE,
        account: "123456789012",
        action,
        resource,
    }
}

fn identity(text: &str) -> Policy {
    Policy::parse(text, PolicyKind::Identity).unwrap()
}

fn resource(text: &str) -> Policy {
    Policy::parse(text, PolicyKind::Resource).unwrap()
}

#[test]
fn wildcards_match_as_iam_does() {
    assert!(wildcard_match("kinesis:*", "kinesis:PutRecord", true));
    assert!(wildcard_match("kinesis:get*", "kinesis:GetRecords", true));
    assert!(!wildcard_match("kinesis:Get*", "kinesis:PutRecord", true));
    assert!(wildcard_match(
        "kinesis:?utRecord",
        "kinesis:PutRecord",
        false
    ));
    assert!(wildcard_match("*", "", false));
    assert!(wildcard_match(
        "arn:aws:kinesis:*:*:stream/ord*",
        ORDERS,
        false
    ));
    assert!(!wildcard_match(
        "arn:aws:kinesis:*:*:stream/Orders",
        ORDERS,
        false
    ));
    assert!(wildcard_match("a*b*c", "aXXbYYbZc", false));
    assert!(!wildcard_match("a*b*c", "aXXbYYbZ", false));
}

#[test]
fn allow_by_action_and_resource_else_implicit_deny() {
    let policy = identity(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kinesis:PutRecord","kinesis:PutRecords"],"Resource":"arn:aws:kinesis:*:*:stream/orders"}]}"#,
    );
    let policies = [policy];
    assert_eq!(
        evaluate(&request("kinesis:PutRecord", ORDERS), &policies, None),
        Decision::Allow
    );
    assert_eq!(
        evaluate(&request("kinesis:GetRecords", ORDERS), &policies, None),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&request("kinesis:PutRecord", AUDIT), &policies, None),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&request("kinesis:PutRecord", ORDERS), [], None),
        Decision::ImplicitDeny
    );
}

#[test]
fn an_explicit_deny_wins_over_any_allow() {
    let policies = [
        identity(r#"{"Statement":{"Effect":"Allow","Action":"kinesis:*","Resource":"*"}}"#),
        identity(r#"{"Statement":{"Effect":"Deny","Action":"kinesis:Delete*","Resource":"*"}}"#),
    ];
    assert_eq!(
        evaluate(&request("kinesis:DescribeStream", ORDERS), &policies, None),
        Decision::Allow
    );
    assert_eq!(
        evaluate(&request("kinesis:DeleteStream", ORDERS), &policies, None),
        Decision::ExplicitDeny(DenySource::Identity)
    );
    let deny_all =
        resource(r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"kinesis:PutRecord"}}"#);
    assert_eq!(
        evaluate(
            &request("kinesis:PutRecord", ORDERS),
            &policies,
            Some(&deny_all)
        ),
        Decision::ExplicitDeny(DenySource::Resource)
    );
}

#[test]
fn not_action_and_not_resource_invert_the_match() {
    let policies = [identity(
        r#"{"Statement":{"Effect":"Allow","NotAction":"kinesis:DeleteStream","NotResource":"arn:aws:kinesis:*:*:stream/audit"}}"#,
    )];
    assert_eq!(
        evaluate(&request("kinesis:PutRecord", ORDERS), &policies, None),
        Decision::Allow
    );
    assert_eq!(
        evaluate(&request("kinesis:DeleteStream", ORDERS), &policies, None),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&request("kinesis:PutRecord", AUDIT), &policies, None),
        Decision::ImplicitDeny
    );
}

#[test]
fn resource_policies_grant_to_named_principals_and_delegate_for_the_account() {
    let to_alice = resource(&format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ALICE}"}},"Action":"kinesis:GetRecords","Resource":"{ORDERS}"}}]}}"#
    ));
    assert_eq!(
        evaluate(&request("kinesis:GetRecords", ORDERS), &[], Some(&to_alice)),
        Decision::Allow
    );
    let to_account = resource(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kinesis:*"}]}"#,
    );
    assert_eq!(
        evaluate(
            &request("kinesis:GetRecords", ORDERS),
            &[],
            Some(&to_account)
        ),
        Decision::ImplicitDeny
    );
    let to_bob = resource(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/bob"]},"Action":"kinesis:*"}]}"#,
    );
    assert_eq!(
        evaluate(&request("kinesis:GetRecords", ORDERS), &[], Some(&to_bob)),
        Decision::ImplicitDeny
    );
}

#[test]
fn malformed_or_unsupported_documents_are_refused_with_a_reason() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            "unsupported Version",
        ),
        (r#"{"Statement":[]}"#, "must contain a Statement"),
        (
            r#"{"Statement":{"Effect":"Maybe","Action":"*","Resource":"*"}}"#,
            "Effect of Allow or Deny",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Resource":"*"}}"#,
            "needs an Action",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
            "needs a Resource",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}}"#,
            "Condition elements are not supported",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}}"#,
            "cannot name a Principal",
        ),
        (
            r#"{"Statement":{"Effect":"Allow","Action":5,"Resource":"*"}}"#,
            "must be a string or a list",
        ),
    ];
    for (text, expected) in cases {
        let error = Policy::parse(text, PolicyKind::Identity).unwrap_err();
        assert!(error.0.contains(expected), "{text}: {error}");
    }
    let error = Policy::parse(
        r#"{"Statement":{"Effect":"Allow","Action":"*"}}"#,
        PolicyKind::Resource,
    )
    .unwrap_err();
    assert!(error.0.contains("must name a Principal"), "{error}");
}
