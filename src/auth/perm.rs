//! Topic permissions: lists of patterns in the topic wildcard syntax (`*` one segment, `>` one
//! or more trailing segments), with `{sub}` standing for the connection's user id.
//!
//! A permission list is checked once per subscribe or publish, never per delivered message:
//! - **publish** to topic `t` is allowed when some permission pattern matches `t`;
//! - **subscribe** to pattern `p` is allowed when some permission pattern *covers* `p`, i.e.
//!   matches every topic `p` can match. `user.alice.>` covers `user.alice.orders` and
//!   `user.alice.*`, but not `user.*.orders` (which would also match Bob's orders).
//!
//! `{sub}` is replaced by the user id when the identity is built. A user id that is not a
//! valid single topic segment (it contains `.`, `*`, `>` or other characters outside the topic
//! charset) cannot be substituted safely, so every pattern using `{sub}` is dropped for that
//! user: such a user is denied, never widened.

use crate::pubsub::topic::{matches, validate_pattern, validate_topic};

/// Placeholder for the user id in permission patterns.
pub const SUB_PLACEHOLDER: &str = "{sub}";

/// A compiled permission list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Perms {
    patterns: Vec<Box<str>>,
}

/// Why a configured permission pattern is invalid (for config validation).
pub fn check_template(template: &str) -> Result<(), String> {
    // Any valid segment stands in for `{sub}` to check the rest of the syntax.
    let probe = template.replace(SUB_PLACEHOLDER, "u");
    validate_pattern(&probe)
        .map(|_| ())
        .map_err(|e| format!("{template:?}: {e}"))
}

impl Perms {
    /// Compiles `templates` for `user` (None: anonymous, templates with `{sub}` are dropped).
    /// Invalid templates are dropped too (configured ones are validated at start; token
    /// claims are not trusted to be well formed).
    pub fn compile<S: AsRef<str>>(templates: &[S], user: Option<&str>) -> Perms {
        let user = user.filter(|u| is_segment(u));
        let mut patterns: Vec<Box<str>> = Vec::with_capacity(templates.len());
        for t in templates {
            let t = t.as_ref();
            let expanded = if t.contains(SUB_PLACEHOLDER) {
                match user {
                    Some(u) => t.replace(SUB_PLACEHOLDER, u),
                    None => continue,
                }
            } else {
                t.to_string()
            };
            if validate_pattern(&expanded).is_ok() && !patterns.iter().any(|p| **p == *expanded) {
                patterns.push(expanded.into());
            }
        }
        Perms { patterns }
    }

    #[cfg(test)]
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| &**p)
    }

    /// May publish to `topic` (a valid topic).
    pub fn allows_topic(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| matches(p, topic))
    }

    /// May subscribe to `pattern` (a valid pattern): some permission covers all of it.
    pub fn allows_pattern(&self, pattern: &str) -> bool {
        self.patterns.iter().any(|p| covers(p, pattern))
    }
}

/// Whether `user` can be substituted for `{sub}`: exactly one valid topic segment.
fn is_segment(user: &str) -> bool {
    !user.contains('.') && validate_topic(user).is_ok()
}

/// Whether every topic matched by pattern `p` is matched by pattern `q` (both valid).
///
/// Segment by segment: a literal in `q` covers only the same literal; `*` in `q` covers any
/// literal or `*` (one segment) but not `>` (one or more); `>` in `q` covers whatever remains
/// of `p` as long as at least one segment remains.
pub fn covers(q: &str, p: &str) -> bool {
    let mut qs = q.split('.');
    let mut ps = p.split('.');
    loop {
        match (qs.next(), ps.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(ps_seg)) if ps_seg != ">" => {}
            (Some(qs_seg), Some(ps_seg)) if qs_seg != "*" && qs_seg != ">" => {
                if qs_seg != ps_seg {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_examples() {
        let yes = [
            ("a.b", "a.b"),
            ("a.*", "a.b"),
            ("a.*", "a.*"),
            ("a.>", "a.b"),
            ("a.>", "a.*"),
            ("a.>", "a.b.c"),
            ("a.>", "a.>"),
            ("a.>", "a.*.>"),
            (">", "x"),
            (">", ">"),
            ("*.b", "*.b"),
        ];
        for (q, p) in yes {
            assert!(covers(q, p), "{q} should cover {p}");
        }
        let no = [
            ("a.b", "a.*"),
            ("a.b", "a.>"),
            ("a.*", "a.>"),
            ("a.*", "a.b.c"),
            ("a.>", "a"),
            ("a.>", "*.b"),
            ("a.>", ">"),
            ("*", ">"),
            ("a.b", "a.c"),
            ("a.b.c", "a.b"),
            ("user.alice.>", "user.*.orders"),
        ];
        for (q, p) in no {
            assert!(!covers(q, p), "{q} must not cover {p}");
        }
    }

    #[test]
    fn sub_is_expanded_for_valid_user_ids_only() {
        let t = ["user.{sub}.>", "public.>"];
        let alice = Perms::compile(&t, Some("alice"));
        assert!(alice.allows_pattern("user.alice.orders"));
        assert!(alice.allows_pattern("user.alice.>"));
        assert!(!alice.allows_pattern("user.bob.orders"));
        assert!(!alice.allows_pattern("user.*.orders"));
        assert!(alice.allows_topic("public.x"));
        for hostile in ["a.b", ">", "*", "a b", "", "x>"] {
            let p = Perms::compile(&t, Some(hostile));
            assert_eq!(
                p.patterns().collect::<Vec<_>>(),
                ["public.>"],
                "{hostile:?}"
            );
        }
        let anon = Perms::compile(&t, None);
        assert_eq!(anon.patterns().collect::<Vec<_>>(), ["public.>"]);
    }

    #[test]
    fn invalid_claims_are_dropped() {
        let p = Perms::compile(&["a..b", "ok.*", "x.>.y", ""], Some("u"));
        assert_eq!(p.patterns().collect::<Vec<_>>(), ["ok.*"]);
        assert!(check_template("user.{sub}.>").is_ok());
        assert!(check_template("a..b").is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
            1 => Just("*".to_string()),
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 1..4), any::<bool>()).prop_map(|(mut segs, gt)| {
            if gt {
                segs.push(">".into());
            }
            segs.join(".")
        })
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..6)
            .prop_map(|s| s.join("."))
    }

    proptest! {
        /// Soundness: if q covers p, every topic p matches, q matches too.
        #[test]
        fn covers_is_sound(q in pattern(), p in pattern(), topics in prop::collection::vec(topic(), 1..40)) {
            if covers(&q, &p) {
                for t in &topics {
                    if matches(&p, t) {
                        prop_assert!(matches(&q, t), "{q} covers {p} but not {t}");
                    }
                }
            }
        }

        /// Completeness on concrete topics: for a wildcard-free p, covering is matching.
        #[test]
        fn covers_equals_matches_on_topics(q in pattern(), t in topic()) {
            prop_assert_eq!(covers(&q, &t), matches(&q, &t));
        }

        /// Every pattern covers itself, and a permission list allows what it lists.
        #[test]
        fn reflexive(p in pattern()) {
            prop_assert!(covers(&p, &p));
            prop_assert!(Perms::compile(&[p.as_str()], None).allows_pattern(&p));
        }
    }
}
