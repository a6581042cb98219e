//! The grammar (every refusal), the canonical form, evaluation against a reference model
//! (property-tested), the table's refcounts and the per-message memo.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const LIMITS: FilterLimits = FilterLimits {
    bytes_max: 4096,
    depth_max: 4,
    clauses_max: 16,
    in_max: 8,
};

fn parse(text: &str) -> Result<Option<Filter>, FilterError> {
    Filter::parse(text.as_bytes(), &LIMITS)
}

fn filter(text: &str) -> Filter {
    parse(text)
        .unwrap_or_else(|e| panic!("{text}: {}", e.message))
        .expect("not null")
}

fn canonical(text: &str) -> String {
    filter(text).canonical().to_string()
}

fn refused(text: &str) -> FilterError {
    match parse(text) {
        Err(e) => e,
        Ok(f) => panic!("{text} was accepted as {f:?}"),
    }
}

fn passes(f: &str, data: &str) -> bool {
    filter(f).matches(data.as_bytes())
}

#[test]
fn null_is_no_filter() {
    assert_eq!(parse("null").unwrap(), None);
}

#[test]
fn shorthand_operator_objects_and_fields_are_one_canonical_form() {
    let c = canonical(r#"{"strategy":"mom"}"#);
    assert_eq!(c, r#"{"strategy":{"eq":"mom"}}"#);
    assert_eq!(canonical(r#"{"strategy":{"eq":"mom"}}"#), c);
    assert_eq!(canonical(r#"{"strategy":{"in":["mom"]}}"#), c);
    assert_eq!(canonical(r#"{"and":[{"strategy":"mom"}]}"#), c);
    assert_eq!(
        canonical(r#"{"or":[{"strategy":"mom"},{"strategy":"mom"}]}"#),
        c
    );
    // Order of fields, of operators, of `and`/`or` operands and of `in` values does not matter,
    // nor does nesting an `and` in an `and`.
    let a = canonical(r#"{"score":{"gte":0.8,"lt":2},"strategy":{"in":["mom","arb","mom"]}}"#);
    let b = canonical(
        r#"{"and":[{"strategy":{"in":["arb","mom"]}},{"and":[{"score":{"lt":2.0}},{"score":{"gte":0.8}}]}]}"#,
    );
    assert_eq!(a, b);
    assert_eq!(
        a,
        r#"{"and":[{"score":{"gte":0.8}},{"score":{"lt":2}},{"strategy":{"in":["arb","mom"]}}]}"#
    );
    // An `or` inside an `and` stays.
    assert_eq!(
        canonical(r#"{"a":1,"or":[{"b":2},{"c":{"exists":false}}]}"#),
        r#"{"and":[{"a":{"eq":1}},{"or":[{"b":{"eq":2}},{"c":{"exists":false}}]}]}"#
    );
    // Different meanings stay different.
    assert_ne!(
        canonical(r#"{"a":{"gt":1}}"#),
        canonical(r#"{"a":{"gte":2}}"#)
    );
    assert_ne!(canonical(r#"{"a":"1"}"#), canonical(r#"{"a":1}"#));
}

#[test]
fn canonical_text_parses_back_to_the_same_filter() {
    for text in [
        r#"{"a":1.5e300,"b":-0.25,"c":1e-7,"d":18446744073709551615,"e":-9223372036854775808}"#,
        r#"{"s":"quote \" and \\ and \u00e9 and \u0000"}"#,
        r#"{"or":[{"a":null},{"a":true},{"a":{"in":[null,false,1,"x",2.5]}}]}"#,
        r#"{"book.side":{"ne":"bid","exists":true}}"#,
    ] {
        let f = filter(text);
        let again = filter(f.canonical());
        assert_eq!(again, f, "{text}");
    }
}

#[test]
fn every_bound_is_refused_with_its_reason() {
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
    let e = refused(&big);
    assert_eq!(e.refusal, Refusal::Bytes);
    assert_eq!(
        e.message,
        "\"filter\" is 5008 bytes; the limit is 4096 (limits.filter_bytes_max)"
    );
    let deep = r#"{"and":[{"or":[{"and":[{"or":[{"a":1}]}]}]}]}"#;
    let e = refused(deep);
    assert_eq!(e.refusal, Refusal::Depth);
    assert_eq!(
        e.message,
        "\"filter\" nests \"and\"/\"or\" deeper than 4 levels (limits.filter_depth_max)"
    );
    assert!(parse(r#"{"and":[{"or":[{"and":[{"a":1}]}]}]}"#).is_ok());
    let many: Vec<String> = (0..17).map(|i| format!("\"f{i}\":1")).collect();
    let e = refused(&format!("{{{}}}", many.join(",")));
    assert_eq!(e.refusal, Refusal::Clauses);
    assert_eq!(
        e.message,
        "\"filter\" has more than 16 tests (limits.filter_clauses_max)"
    );
    assert!(parse(&format!("{{{}}}", many[..16].join(","))).is_ok());
    // Each operator of an operator object is a test.
    let e = refused(&format!(
        "{{{},\"z\":{{\"gt\":1,\"lt\":2}}}}",
        many[..15].join(",")
    ));
    assert_eq!(e.refusal, Refusal::Clauses);
    let e = refused(r#"{"sym":{"in":[1,2,3,4,5,6,7,8,9]}}"#);
    assert_eq!(e.refusal, Refusal::InList);
    assert_eq!(
        e.message,
        "\"filter\": \"in\" of field \"sym\" has 9 values; the limit is 8 (limits.filter_in_max)"
    );
    assert!(parse(r#"{"sym":{"in":[1,2,3,4,5,6,7,8]}}"#).is_ok());
}

#[test]
fn malformed_filters_are_refused_naming_what_is_wrong() {
    const SCALAR: &str = "a string, number, boolean or null";
    const LIST: &str = "a non-empty array of strings, numbers, booleans or nulls";
    // An operator of field "a" given the wrong operand: (filter, operator, what it takes).
    let operands: &[(&str, &str, &str)] = &[
        (r#"{"a":{"gt":"1"}}"#, "gt", "a number"),
        (r#"{"a":{"lte":null}}"#, "lte", "a number"),
        (r#"{"a":{"eq":[1]}}"#, "eq", SCALAR),
        (r#"{"a":{"ne":{"b":1}}}"#, "ne", SCALAR),
        (r#"{"a":{"exists":1}}"#, "exists", "true or false"),
        (r#"{"a":{"in":[]}}"#, "in", LIST),
        (r#"{"a":{"in":"x"}}"#, "in", LIST),
        (r#"{"a":{"in":[1,[2]]}}"#, "in", LIST),
    ];
    for (text, op, takes) in operands {
        let e = refused(text);
        assert_eq!(e.refusal, Refusal::Malformed, "{text}");
        let want = format!("\"filter\": \"{op}\" of field \"a\" takes {takes}");
        assert_eq!(e.message, want, "{text}");
    }
    let cases: &[(&str, &str)] = &[
        ("[1]", "\"filter\" must be an object (or null)"),
        ("\"a\"", "\"filter\" must be an object (or null)"),
        (
            "{}",
            "\"filter\": an empty object; give at least one field or \"and\"/\"or\"",
        ),
        (
            "{\"a\":",
            "\"filter\" is not valid JSON: EOF while parsing a value at line 1 column 5",
        ),
        (
            r#"{"a":{}}"#,
            "\"filter\": field \"a\" has no operator (eq, ne, in, gt, gte, lt, lte, exists)",
        ),
        (
            r#"{"a":{"gtx":1}}"#,
            "\"filter\": unknown operator \"gtx\" for field \"a\" (operators: eq, ne, in, gt, gte, lt, lte, exists)",
        ),
        (
            r#"{"a":[1,2]}"#,
            "\"filter\": field \"a\" takes a string, number, boolean or null, or an object of operators (eq, ne, in, gt, gte, lt, lte, exists); to match one of several values use \"in\"",
        ),
        (
            r#"{"and":[]}"#,
            "\"filter\": \"and\" takes a non-empty array of filter objects",
        ),
        (
            r#"{"or":{"a":1}}"#,
            "\"filter\": \"or\" takes a non-empty array of filter objects",
        ),
        (
            r#"{"or":[1]}"#,
            "\"filter\": each operand of \"and\"/\"or\" must be an object",
        ),
        (
            r#"{"or":[{}]}"#,
            "\"filter\": an empty object; give at least one field or \"and\"/\"or\"",
        ),
        (
            r#"{"a..b":1}"#,
            "\"filter\": field path \"a..b\" has an empty segment",
        ),
        (
            r#"{"":1}"#,
            "\"filter\": field path \"\" has an empty segment",
        ),
        (
            r#"{"a.":1}"#,
            "\"filter\": field path \"a.\" has an empty segment",
        ),
        (r#"{"a":1,"a":2}"#, "\"filter\": key \"a\" is repeated"),
        (
            r#"{"a":{"gt":1,"gt":2}}"#,
            "\"filter\": field \"a\" repeats operator \"gt\"",
        ),
    ];
    for (text, message) in cases {
        let e = refused(text);
        assert_eq!(e.refusal, Refusal::Malformed, "{text}");
        assert_eq!(&e.message, message, "{text}");
    }
    // A long name is cut in the message.
    let long = "k".repeat(300);
    let e = refused(&format!(r#"{{"{long}":{{"bad":1}}}}"#));
    assert!(e.message.len() < 300, "{}", e.message);
    assert!(e.message.contains("…"), "{}", e.message);
}

#[test]
fn evaluation_follows_the_documented_semantics() {
    let d = r#"{"strategy":"mom","score":0.85,"qty":3,"book":{"side":"bid","lvl":[1,2]},"n":null,"ok":true}"#;
    let cases: &[(&str, bool)] = &[
        (r#"{"strategy":"mom"}"#, true),
        (
            r#"{"strategy":{"in":["mom","arb"]},"score":{"gte":0.8}}"#,
            true,
        ),
        (r#"{"strategy":{"in":["arb","x"]}}"#, false),
        (r#"{"score":{"gte":0.85}}"#, true),
        (r#"{"score":{"gt":0.85}}"#, false),
        (r#"{"qty":3.0}"#, true),
        (r#"{"qty":{"lt":3.5,"gt":2}}"#, true),
        (r#"{"qty":"3"}"#, false),
        (r#"{"qty":{"ne":"3"}}"#, true),
        (r#"{"strategy":{"gt":1}}"#, false),
        (r#"{"book.side":"bid"}"#, true),
        (r#"{"book.lvl":{"exists":true}}"#, true),
        (r#"{"book.lvl.0":{"exists":true}}"#, false),
        (r#"{"book":{"ne":"x"}}"#, true),
        (r#"{"book":{"eq":null}}"#, false),
        (r#"{"n":null}"#, true),
        (r#"{"n":{"exists":true}}"#, true),
        (r#"{"missing":{"ne":"x"}}"#, false),
        (r#"{"missing":{"exists":false}}"#, true),
        (r#"{"missing":null}"#, false),
        (r#"{"ok":true}"#, true),
        (r#"{"ok":1}"#, false),
        (r#"{"or":[{"strategy":"arb"},{"ok":true}]}"#, true),
        (r#"{"or":[{"strategy":"arb"},{"ok":false}]}"#, false),
    ];
    for (f, want) in cases {
        assert_eq!(passes(f, d), *want, "{f}");
    }
    // Data that is not an object: only `exists: false` holds.
    for data in [
        "1",
        "\"mom\"",
        "[{\"strategy\":\"mom\"}]",
        "null",
        "{bad json",
    ] {
        assert!(!passes(r#"{"strategy":"mom"}"#, data), "{data}");
        assert!(!passes(r#"{"strategy":{"ne":"x"}}"#, data), "{data}");
        assert!(passes(r#"{"strategy":{"exists":false}}"#, data), "{data}");
    }
    // The first of repeated keys counts.
    assert!(passes(r#"{"a":1}"#, r#"{"a":1,"a":2}"#));
    assert!(!passes(r#"{"a":2}"#, r#"{"a":1,"a":2}"#));
    // Escapes are compared decoded, on both sides.
    assert!(passes(r#"{"s":"é\""}"#, r#"{"s":"\u00e9\""}"#));
    assert!(passes(r#"{"\u0073":"x"}"#, r#"{"s":"x"}"#));
}

#[test]
fn numbers_compare_exactly_whatever_their_form() {
    let cases: &[(&str, &str, bool)] = &[
        // Integers beyond 2^53 are not rounded.
        (
            r#"{"id":9007199254740993}"#,
            r#"{"id":9007199254740993}"#,
            true,
        ),
        (
            r#"{"id":9007199254740993}"#,
            r#"{"id":9007199254740992}"#,
            false,
        ),
        (
            r#"{"id":{"gt":9007199254740992}}"#,
            r#"{"id":9007199254740993}"#,
            true,
        ),
        (
            r#"{"id":18446744073709551615}"#,
            r#"{"id":18446744073709551615}"#,
            true,
        ),
        (r#"{"id":{"lt":0}}"#, r#"{"id":-9223372036854775808}"#, true),
        (r#"{"x":1}"#, r#"{"x":1.0}"#, true),
        (r#"{"x":1.0}"#, r#"{"x":1}"#, true),
        (r#"{"x":100}"#, r#"{"x":1e2}"#, true),
        (r#"{"x":{"gt":1}}"#, r#"{"x":1.0000000000000002}"#, true),
        (r#"{"x":{"lt":2}}"#, r#"{"x":1.9999999999999998}"#, true),
        (r#"{"x":{"gte":0.1}}"#, r#"{"x":0.1}"#, true),
        (r#"{"x":{"gt":0.1}}"#, r#"{"x":0.1}"#, false),
        (r#"{"x":{"gt":-1.5}}"#, r#"{"x":-1}"#, true),
        (r#"{"x":{"lt":-1.5}}"#, r#"{"x":-2}"#, true),
        (r#"{"x":{"lt":-1.5}}"#, r#"{"x":-1}"#, false),
        (r#"{"x":{"in":[1,2.5,"3"]}}"#, r#"{"x":2.50}"#, true),
        (r#"{"x":{"in":[1,2.5,"3"]}}"#, r#"{"x":3}"#, false),
        (
            r#"{"x":{"gt":1e300}}"#,
            r#"{"x":18446744073709551615}"#,
            false,
        ),
        (
            r#"{"x":{"lt":1e300}}"#,
            r#"{"x":18446744073709551615}"#,
            true,
        ),
        (r#"{"x":0}"#, r#"{"x":-0.0}"#, true),
    ];
    for (f, d, want) in cases {
        assert_eq!(passes(f, d), *want, "{f} on {d}");
    }
}

#[test]
fn the_table_interns_refcounts_and_frees() {
    let mut t = FilterTable::default();
    let a = filter(r#"{"a":1}"#);
    let a2 = filter(r#"{"a":{"eq":1.0}}"#);
    let b = filter(r#"{"b":1}"#);
    let ia = t.intern(&a, 2).unwrap();
    assert_eq!(t.intern(&a2, 2), Ok(ia), "the same canonical filter");
    assert_eq!(t.refs(ia), 2);
    let ib = t.intern(&b, 2).unwrap();
    assert_ne!(ia, ib);
    assert_eq!(t.len(), 2);
    assert_eq!(t.intern(&filter(r#"{"c":1}"#), 2), Err(TableFull));
    assert_eq!(t.intern(&a, 2), Ok(ia), "a held filter is not refused");
    t.release(ia);
    t.release(ia);
    t.release(ia);
    assert_eq!(t.refs(ia), 0);
    assert_eq!(t.len(), 1);
    assert!(t.get(ia).is_none());
    // The freed slot is reused.
    let ic = t.intern(&filter(r#"{"c":1}"#), 2).unwrap();
    assert_eq!(ic, ia);
    assert_eq!(t.get(ic).unwrap().canonical(), r#"{"c":{"eq":1}}"#);
    t.release(ic);
    t.release(ib);
    assert!(t.is_empty());
    assert!(t.holds_nothing(), "everything given back");
}

#[test]
fn a_judge_evaluates_each_filter_once_and_parses_at_most_once() {
    let mut t = FilterTable::default();
    let yes = t.intern(&filter(r#"{"a":1}"#), 10).unwrap();
    let no = t.intern(&filter(r#"{"a":2}"#), 10).unwrap();
    {
        let mut j = t.judge(br#"{"a":1}"#);
        for _ in 0..3 {
            assert!(j.passes(yes));
            assert!(!j.passes(no));
        }
        assert_eq!((j.evaluations, j.parses), (2, 1));
    }
    {
        // The next message is judged afresh.
        let mut j = t.judge(br#"{"a":2}"#);
        assert!(!j.passes(yes));
        assert!(j.passes(no));
        assert_eq!((j.evaluations, j.parses), (2, 1));
    }
    {
        // Nothing evaluated: nothing parsed.
        let j = t.judge(b"{}");
        assert_eq!((j.evaluations, j.parses), (0, 0));
    }
    {
        let mut j = t.judge(b"not json");
        assert!(!j.passes(yes));
        assert_eq!((j.evaluations, j.parses), (1, 1));
        // A free or unknown id never passes.
        assert!(!j.passes(77));
    }
    // The tape's allocation is kept for the next message.
    assert!(t.keeps_tape());
}

// ---------------------------------------------------------------------------------------------
// Property tests: the evaluator against a model written straight from the docs, over the
// client's JSON (not the canonical form).

/// The reference: docs/PROTOCOL.md "Filters", on `serde_json::Value`s.
fn model(filter: &Value, data: &Value) -> bool {
    filter
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| match k.as_str() {
            "and" => v.as_array().unwrap().iter().all(|f| model(f, data)),
            "or" => v.as_array().unwrap().iter().any(|f| model(f, data)),
            path => {
                let mut at = Some(data);
                for seg in path.split('.') {
                    at = at.and_then(|d| d.as_object()).and_then(|o| o.get(seg));
                }
                match v {
                    Value::Object(ops) => ops.iter().all(|(op, x)| model_op(op, x, at)),
                    x => model_op("eq", x, at),
                }
            }
        })
}

fn model_op(op: &str, x: &Value, at: Option<&Value>) -> bool {
    let scalar = |v: &Value| !v.is_object() && !v.is_array();
    let eq = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => scalar(a) && a == b,
    };
    match (op, at) {
        ("exists", at) => at.is_some() == x.as_bool().unwrap(),
        (_, None) => false,
        ("eq", Some(v)) => eq(v, x),
        ("ne", Some(v)) => !eq(v, x),
        ("in", Some(v)) => x.as_array().unwrap().iter().any(|x| eq(v, x)),
        (cmp, Some(v)) => match (v.as_f64(), x.as_f64()) {
            (Some(v), Some(x)) => match cmp {
                "gt" => v > x,
                "gte" => v >= x,
                "lt" => v < x,
                _ => v <= x,
            },
            _ => false,
        },
    }
}

const FIELDS: &[&str] = &["a", "b", "a.b", "b.c", "a.b.c"];

/// Scalars from small pools, so that equalities hit; `1.0` is written as a float.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(|i| json!(i)),
        prop::sample::select(vec![0.5, 1.0, -1.5, 2.25]).prop_map(|f| json!(f)),
        prop::sample::select(vec!["x", "y", "", "1"]).prop_map(|s| json!(s)),
    ]
}

fn data() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![4 => scalar(), 1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array)];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    })
}

fn operator() -> impl Strategy<Value = (String, Value)> {
    prop_oneof![
        scalar().prop_map(|x| ("eq".to_string(), x)),
        scalar().prop_map(|x| ("ne".to_string(), x)),
        prop::collection::vec(scalar(), 1..5).prop_map(|xs| ("in".to_string(), Value::Array(xs))),
        (
            prop::sample::select(vec!["gt", "gte", "lt", "lte"]),
            prop_oneof![
                (-2i64..3).prop_map(|i| json!(i)),
                Just(json!(0.5)),
                Just(json!(1.0))
            ]
        )
            .prop_map(|(op, x)| (op.to_string(), x)),
        any::<bool>().prop_map(|b| ("exists".to_string(), json!(b))),
    ]
}

fn field_member() -> impl Strategy<Value = (String, Value)> {
    (
        prop::sample::select(FIELDS.to_vec()),
        prop_oneof![
            scalar(),
            prop::collection::btree_map(
                prop::sample::select(vec!["eq", "ne", "in", "gt", "gte", "lt", "lte", "exists"]),
                operator(),
                1..3
            )
            // The key is the operator's own name.
            .prop_map(|m| Value::Object(m.into_values().collect())),
        ],
    )
        .prop_map(|(k, v)| (k.to_string(), v))
}

/// Valid filters of depth up to 3.
fn filter_json() -> impl Strategy<Value = Value> {
    let leaf = prop::collection::vec(field_member(), 1..3).prop_map(object);
    leaf.prop_recursive(2, 16, 3, |inner| {
        (
            prop::collection::vec(field_member(), 0..2),
            prop::option::of(prop::collection::vec(inner.clone(), 1..3)),
            prop::option::of(prop::collection::vec(inner, 1..3)),
        )
            .prop_filter_map("an empty object", |(fields, and, or)| {
                let mut members = fields;
                members.extend(and.map(|a| ("and".to_string(), Value::Array(a))));
                members.extend(or.map(|o| ("or".to_string(), Value::Array(o))));
                (!members.is_empty()).then(|| object(members))
            })
    })
}

/// An object of `members`, the first of repeated keys kept (the grammar refuses repeats).
fn object(members: Vec<(String, Value)>) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in members {
        map.entry(k).or_insert(v);
    }
    Value::Object(map)
}

const WIDE: FilterLimits = FilterLimits {
    bytes_max: 1 << 20,
    depth_max: 8,
    clauses_max: 1000,
    in_max: 100,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn evaluation_agrees_with_the_model(f in filter_json(), datas in prop::collection::vec(data(), 1..6)) {
        let text = f.to_string();
        let parsed = Filter::parse(text.as_bytes(), &WIDE).unwrap().unwrap();
        let again = Filter::parse(parsed.canonical().as_bytes(), &WIDE).unwrap().unwrap();
        prop_assert_eq!(&again, &parsed, "canonical text of {}", text);
        let mut table = FilterTable::default();
        let id = table.intern(&parsed, 1).unwrap();
        for d in &datas {
            let raw = d.to_string();
            let want = model(&f, d);
            prop_assert_eq!(parsed.matches(raw.as_bytes()), want, "{} on {}", text, raw);
            let mut judge = table.judge(raw.as_bytes());
            prop_assert_eq!(judge.passes(id), want);
            prop_assert_eq!(judge.passes(id), want);
            prop_assert_eq!((judge.evaluations, judge.parses), (1, 1));
        }
    }

    #[test]
    fn operand_order_does_not_change_the_canonical_form(
        members in prop::collection::vec(field_member(), 1..5),
        seed in any::<u64>(),
    ) {
        let f = object(members.clone());
        let mut shuffled: Vec<(String, Value)> = f.as_object().unwrap().clone().into_iter().collect();
        let n = shuffled.len();
        shuffled.rotate_left((seed as usize) % n);
        let wrapped = json!({"and": shuffled.iter().map(|(k, v)| json!({k: v})).collect::<Vec<_>>()});
        let a = Filter::parse(f.to_string().as_bytes(), &WIDE).unwrap().unwrap();
        let b = Filter::parse(wrapped.to_string().as_bytes(), &WIDE).unwrap().unwrap();
        prop_assert_eq!(a.canonical(), b.canonical());
    }

    /// Hostile text: never a panic, and what is accepted keeps the bounds.
    #[test]
    fn any_text_is_parsed_or_refused(raw in prop::collection::vec(
        prop::sample::select(br#"{}[]":,.0123456789-+eE\ aorndgtlxisqu"#.to_vec()), 0..200)) {
        if let Ok(Some(f)) = Filter::parse(&raw, &LIMITS) {
            let again = Filter::parse(f.canonical().as_bytes(), &WIDE).unwrap().unwrap();
            prop_assert_eq!(again, f.clone());
            f.matches(&raw);
        }
    }
}

/// Found by the fuzzer (tests/fuzz/regressions/filter/): a filter's long decimal must be read
/// as the data's is, to the same double, and its canonical text must give that double back.
#[test]
fn long_decimals_read_the_same_in_filter_and_data() {
    for x in [
        "0.446744070719551615",
        "22222222222222222222222222222222222222222222222222222222222222225.8",
        "2.2250738585072011e-308",
        "9007199254740993.5",
    ] {
        let f = filter(&format!(r#"{{"x":{x}}}"#));
        assert_eq!(filter(f.canonical()), f, "{x}");
        assert!(f.matches(format!(r#"{{"x":{x}}}"#).as_bytes()), "{x}");
        let g = filter(&format!(r#"{{"x":{{"gte":{x},"lte":{x}}}}}"#));
        assert!(g.matches(format!(r#"{{"x":{x}}}"#).as_bytes()), "{x}");
    }
}
