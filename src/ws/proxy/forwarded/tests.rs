use super::*;

fn trusted(list: &[&str]) -> Trusted {
    Trusted::parse(list).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn xff(lines: &[&str], t: &Trusted) -> Walk {
    let lines = lines.iter().map(|l| l.as_bytes());
    client(lines, Field::XForwardedFor, ip("10.0.0.1"), t)
}

fn fwd(lines: &[&str], t: &Trusted) -> Walk {
    let lines = lines.iter().map(|l| l.as_bytes());
    client(lines, Field::Forwarded, ip("10.0.0.1"), t)
}

#[test]
fn the_right_most_untrusted_address_is_the_client() {
    let t = trusted(&["10.0.0.0/8"]);
    assert_eq!(xff(&["203.0.113.5"], &t), Walk::Client(ip("203.0.113.5")));
    // What the client wrote itself (left) is passed over: the proxies' part is on the right.
    assert_eq!(
        xff(&["1.1.1.1, 203.0.113.5, 10.0.0.7"], &t),
        Walk::Client(ip("203.0.113.5"))
    );
    // Several lines are one list, in order.
    assert_eq!(
        xff(&["1.1.1.1", "203.0.113.5", "10.0.0.7"], &t),
        Walk::Client(ip("203.0.113.5"))
    );
    // Every address trusted: the left-most.
    assert_eq!(
        xff(&["10.9.9.9, 10.0.0.7"], &t),
        Walk::Client(ip("10.9.9.9"))
    );
    assert_eq!(xff(&[], &t), Walk::Absent);
    assert_eq!(xff(&["", " , "], &t), Walk::Absent);
}

#[test]
fn ports_brackets_and_mapped_addresses_are_read() {
    let t = trusted(&["10.0.0.0/8"]);
    for (value, want) in [
        ("203.0.113.5:4711", "203.0.113.5"),
        ("2001:db8::5", "2001:db8::5"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("[2001:db8::5]:4711", "2001:db8::5"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("\t203.0.113.5 ", "203.0.113.5"),
    ] {
        assert_eq!(xff(&[value], &t), Walk::Client(ip(want)), "{value}");
    }
}

#[test]
fn an_element_that_is_no_address_stops_at_the_last_trusted_one() {
    let t = trusted(&["10.0.0.0/8"]);
    for value in [
        "unknown",
        "_hidden",
        "203.0.113.5:99999",
        "[2001:db8::5",
        "[203.0.113.5]",
        "203.0.113.5 10.0.0.2",
        "2001:db8::5:80x",
        "\u{ff}",
    ] {
        assert_eq!(
            xff(&[value, "10.0.0.9"], &t),
            Walk::Invalid(ip("10.0.0.9")),
            "{value}"
        );
    }
    assert_eq!(xff(&["unknown"], &t), Walk::Invalid(ip("10.0.0.1")));
}

#[test]
fn forwarded_for_is_read_from_each_element() {
    let t = trusted(&["10.0.0.0/8"]);
    assert_eq!(
        fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43"], &t),
        Walk::Client(ip("192.0.2.60"))
    );
    assert_eq!(
        fwd(&[r#"For="[2001:db8:cafe::17]:4711""#], &t),
        Walk::Client(ip("2001:db8:cafe::17"))
    );
    assert_eq!(
        fwd(
            &["for=1.1.1.1, for=192.0.2.43;proto=https, for=10.0.0.5"],
            &t
        ),
        Walk::Client(ip("192.0.2.43"))
    );
    // A comma inside a quoted value does not split the element.
    assert_eq!(
        fwd(&[r#"for=192.0.2.43;x="a,for=6.6.6.6""#], &t),
        Walk::Client(ip("192.0.2.43"))
    );
    assert_eq!(
        fwd(&["for=192.0.2.60;"], &t),
        Walk::Client(ip("192.0.2.60"))
    );
}

#[test]
fn a_forwarded_element_without_a_usable_for_is_invalid() {
    let t = trusted(&["10.0.0.0/8"]);
    for value in [
        "proto=https",
        "for=unknown",
        "for=_gazonk",
        "for=1.2.3.4;for=5.6.7.8",
        r#"for="1.2.3.4"#,
        r#"for="1.2\.3.4""#,
        "for",
        "garbage",
    ] {
        assert_eq!(fwd(&[value], &t), Walk::Invalid(ip("10.0.0.1")), "{value}");
    }
}

/// Only the configured header is read: with `Forwarded` configured, a client's
/// `X-Forwarded-For` is just another header, and the other way round.
#[test]
fn the_header_not_configured_is_not_parsed_as_the_other() {
    let t = trusted(&["10.0.0.0/8"]);
    assert_eq!(fwd(&["203.0.113.5"], &t), Walk::Invalid(ip("10.0.0.1")));
    assert_eq!(xff(&["for=203.0.113.5"], &t), Walk::Invalid(ip("10.0.0.1")));
}
