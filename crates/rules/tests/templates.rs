//! Property tests of substitution templates (`${expr}` in action parameters, untrusted input
//! from CreateTopicRule): compiling any text either succeeds or is refused without a panic,
//! text without `${` expands to itself, and a compiled template expands on any payload.

use fleetcore_rules::sql::Template;
use fleetcore_rules::{MessageContext, Payload, RuleEnv, SqlVersion};
use proptest::prelude::*;

fn message(payload: &[u8]) -> MessageContext<'_> {
    MessageContext {
        topic: "devices/d1/telemetry",
        client_id: Some("c1"),
        payload,
        received_at_ms: 1_464_111_961_123,
        ..MessageContext::default()
    }
}

/// Template-ish text: literal pieces, `${`, `}`, quotes, braces and expression fragments.
fn templateish() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "alerts/",
        "${",
        "}",
        "'",
        "{",
        "topic(2)",
        "a.b",
        "concat('x', y)",
        "1 + ",
        "*",
        "$$",
        "/",
        "timestamp()",
        "arr[0]",
        "CASE WHEN t > 1 THEN 'h' ELSE 'c' END",
        " ",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn any_text_compiles_or_is_refused_and_expands(text in prop_oneof![templateish(), any::<String>()],
                                                   payload in any::<Vec<u8>>()) {
        if let Ok(template) = Template::compile(&text, SqlVersion::V2016_03_23) {
            let parsed = Payload::parse(&payload);
            let _ = template.expand(&message(&payload), &parsed, &RuleEnv::default());
        }
    }

    #[test]
    fn text_without_templates_is_itself(text in "[^$]*") {
        let template = Template::compile(&text, SqlVersion::V2016_03_23).expect("plain text compiles");
        prop_assert!(template.is_literal());
        let payload = br#"{"a": 1}"#;
        prop_assert_eq!(template.expand(&message(payload), &Payload::parse(payload), &RuleEnv::default()), text);
    }
}
