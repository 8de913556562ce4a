//! Unit tests of [`super`].

use super::*;

fn ok(from: &str) -> UserJid<'_> {
    match user_jid(from) {
        Ok(jid) => jid,
        Err(e) => panic!("{from:?} refused: {e}"),
    }
}

fn err(from: &str) -> JidProblem {
    match user_jid(from) {
        Ok(jid) => panic!("{from:?} accepted as {jid}"),
        Err(e) => e,
    }
}

#[test]
fn everyday_jids_are_borrowed_unchanged() {
    for from in [
        "carol@localhost/harness",
        "alice@localhost/phone",
        "user@example.org/Conversations.abcd",
        "bob@chat.example.org/gajim.X1Y2Z3",
        "a.b-c_d+e!#$%*=?^`{|}~@example.org/Monal-iOS.1a2b",
        "1@127.0.0.1/x",
        "alice@example.org/Alice's laptop (home)",
        "alice@example.org/res/with/slashes@and@ats",
    ] {
        let jid = ok(from);
        assert!(jid.is_unchanged(), "{from:?} was copied");
        assert_eq!(jid.as_str(), from);
    }
}

#[test]
fn parts_are_split_at_the_first_at_and_slash() {
    let jid = ok("user@example.org/Conversations.abcd/x@y");
    assert_eq!(jid.localpart(), "user");
    assert_eq!(jid.domain(), "example.org");
    assert_eq!(jid.bare(), "user@example.org");
    assert_eq!(jid.resource(), "Conversations.abcd/x@y");
    assert_eq!(jid.to_string(), "user@example.org/Conversations.abcd/x@y");
}

#[test]
fn case_is_folded_in_localpart_and_domain_not_resource() {
    let jid = ok("ALICE@LOCALHOST/Phone");
    assert_eq!(jid.as_str(), "alice@localhost/Phone");
    assert_eq!(jid.domain(), "localhost");
    assert_eq!(jid.bare(), "alice@localhost");
    assert!(!jid.is_unchanged());
    assert_eq!(
        ok("alice@Example.ORG/phone").as_str(),
        "alice@example.org/phone"
    );
}

#[test]
fn non_ascii_localparts() {
    let jid = ok("josé@example.org/phone");
    assert_eq!(jid.as_str(), "josé@example.org/phone");
    assert!(jid.is_unchanged());
    // Uppercase non-ASCII is case-folded, as nodeprep does.
    assert_eq!(
        ok("JOSÉ@example.org/phone").as_str(),
        "josé@example.org/phone"
    );
    assert_eq!(ok("ÉLODIE@example.org/x").localpart(), "élodie");
    assert_eq!(ok("Straße@example.org/x").localpart(), "strasse");
    assert_eq!(ok("ДМИТРИЙ@example.org/x").localpart(), "дмитрий");
    // Decomposed é (e + U+0301) is composed (NFKC); fullwidth letters become ASCII.
    assert_eq!(ok("jose\u{301}@example.org/x").localpart(), "josé");
    assert_eq!(ok("ａｌｉｃｅ@example.org/x").localpart(), "alice");
    // Right-to-left text on its own is fine.
    assert!(ok("שלום@example.org/x").is_unchanged());
    assert!(ok("张伟@example.org/手机").is_unchanged());
}

#[test]
fn hostile_localparts_are_refused() {
    assert_eq!(err("@localhost/x"), JidProblem::EmptyLocalpart);
    assert_eq!(err("al ice@localhost/x"), JidProblem::BadLocalpart);
    let long = format!("{}@localhost/x", "a".repeat(3000));
    assert_eq!(err(&long), JidProblem::LocalpartTooLong);
    assert_eq!(
        err(&format!("{}@localhost/x", "a".repeat(1024))),
        JidProblem::LocalpartTooLong
    );
    assert!(user_jid(&format!("{}@localhost/x", "a".repeat(1023))).is_ok());
    for bad in ['"', '&', '\'', ':', '<', '>', '\0', '\t', '\n', '\u{7f}'] {
        assert_eq!(
            err(&format!("al{bad}ice@localhost/x")),
            JidProblem::BadLocalpart,
            "{bad:?}"
        );
    }
    for bad in [
        "\u{202e}",  // right-to-left override
        "\u{200e}",  // left-to-right mark
        "\u{2067}",  // right-to-left isolate (newer than Unicode 3.2)
        "\u{200b}",  // zero-width space
        "\u{200d}",  // zero-width joiner
        "\u{feff}",  // zero-width no-break space
        "\u{ad}",    // soft hyphen
        "\u{85}",    // C1 control
        "\u{a0}",    // no-break space
        "\u{3000}",  // ideographic space
        "\u{e000}",  // private use
        "\u{fffd}",  // replacement character
        "\u{1f600}", // emoji: a symbol, not an identifier character
    ] {
        assert_eq!(
            err(&format!("al{bad}ice@localhost/x")),
            JidProblem::BadLocalpart,
            "{bad:?}"
        );
    }
    // A fullwidth '@' becomes a real '@' under NFKC, which a localpart cannot hold.
    assert_eq!(err("a\u{ff20}b@localhost/x"), JidProblem::BadLocalpart);
    // Mixed directions (RFC 3454 §6).
    assert_eq!(err("aשלום@localhost/x"), JidProblem::BadLocalpart);
}

#[test]
fn structure_is_required() {
    assert_eq!(err("localhost/x"), JidProblem::NoLocalpart);
    assert_eq!(err("localhost"), JidProblem::NoLocalpart);
    assert_eq!(err(""), JidProblem::NoLocalpart);
    assert_eq!(err("localhost/alice@x"), JidProblem::NoLocalpart);
    assert_eq!(err("alice@localhost"), JidProblem::NoResource);
    assert_eq!(err("alice@localhost/"), JidProblem::EmptyResource);
    assert_eq!(err("alice@/x"), JidProblem::EmptyDomain);
    assert_eq!(err("a@b@localhost/x"), JidProblem::TooManyAts);
    assert_eq!(err("@/"), JidProblem::EmptyLocalpart);
}

#[test]
fn hostile_domains_are_refused() {
    for bad in [
        "local host",
        "localhost..org",
        ".localhost",
        "-localhost",
        "localhost-",
        "loc<al>host",
        "xn--zz",
        "a\u{202e}b",
        "exa\u{200b}mple.org",
    ] {
        assert_eq!(
            err(&format!("alice@{bad}/x")),
            JidProblem::BadDomain,
            "{bad:?}"
        );
    }
    assert_eq!(
        err(&format!("alice@{}/x", "a".repeat(1024))),
        JidProblem::DomainTooLong
    );
    assert_eq!(
        err(&format!("alice@{}.org/x", "a".repeat(64))),
        JidProblem::BadDomain
    );
}

#[test]
fn unusual_valid_domains_go_through_the_jid_crate() {
    assert_eq!(ok("alice@localhost./x").as_str(), "alice@localhost/x");
    assert_eq!(ok("alice@[::1]/x").domain(), "[::1]");
    assert_eq!(ok("alice@MÜNCHEN.de/x").domain(), "münchen.de");
    assert_eq!(
        ok("alice@xn--mnchen-3ya.de/x").domain(),
        "xn--mnchen-3ya.de"
    );
}

#[test]
fn hostile_resources_are_refused() {
    for bad in [
        "\0", "\t", "\n", "\r", "\u{1b}", "\u{7f}", "\u{85}", "\u{202e}", "\u{2066}", "\u{200b}",
        "\u{feff}", "\u{2028}", "\u{1680}", "\u{e000}", "\u{fffd}",
    ] {
        assert_eq!(
            err(&format!("alice@localhost/ph{bad}one")),
            JidProblem::BadResource,
            "{bad:?}"
        );
    }
    let long = format!("alice@localhost/{}", "r".repeat(1024));
    assert_eq!(err(&long), JidProblem::ResourceTooLong);
    assert_eq!(err("alice@localhost/aשלום"), JidProblem::BadResource);
    // resourceprep's NFKC turns a no-break space into a plain space, which is allowed.
    assert_eq!(ok("alice@localhost/ph\u{a0}one").resource(), "ph one");
    assert_eq!(ok("alice@localhost/ph\u{3000}one").resource(), "ph one");
}

#[test]
fn resources_with_newer_characters() {
    // Emoji are newer than Unicode 3.2: kept as sent.
    let jid = ok("alice@localhost/phone 📱");
    assert_eq!(jid.resource(), "phone 📱");
    assert!(jid.is_unchanged());
    assert!(ok("alice@localhost/📱").is_unchanged());
    assert_eq!(
        ok("alice@localhost/Alice’s iPhone").resource(),
        "Alice’s iPhone"
    );
    // The rest must already be prepared (here a compatibility ligature NFKC would change).
    assert_eq!(err("alice@localhost/\u{fb01}x📱"), JidProblem::BadResource);
    // Compatibility forms without newer characters are normalised.
    assert_eq!(ok("alice@localhost/\u{fb01}x").resource(), "fix");
}

/// On ASCII, the hand-written fast paths must agree with the jid crate's full preparation:
/// same acceptance, same result. Inputs are drawn from an alphabet of the characters the
/// fast paths treat specially.
#[test]
fn ascii_fast_path_agrees_with_the_jid_crate() {
    let alphabet: &[u8] = b"aZz09-.@/ _\"&':<>!~\t[]x";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted = 0;
    for _ in 0..100_000 {
        let len = (next() % 12) as usize;
        let mut s: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        // Most inputs get a plausible shape, so the accepting paths are exercised too.
        if next() % 4 != 0 {
            s.splice(0..0, b"al".iter().copied());
            let at = 2 + (next() % (s.len() as u64 - 1)) as usize;
            s.insert(at.min(s.len()), b'@');
            s.push(b'/');
            s.push(b'r');
        }
        let s = String::from_utf8(s).unwrap();
        let ours = user_jid(&s);
        let theirs = xmpp_parsers::jid::FullJid::new(&s).map(|j| j.to_string());
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) => {
                // The jid crate strips a domain's trailing dot only when another part
                // changed; herald always does.
                let kept_dot = format!("{}@{}./{}", a.localpart(), a.domain(), a.resource());
                assert!(a.as_str() == b || kept_dot == *b, "{s:?}: {a} vs {b}");
                accepted += 1;
            }
            (Err(_), Err(_)) => {}
            // The jid crate accepts domain JIDs with a resource; herald wants a localpart.
            (Err(JidProblem::NoLocalpart), Ok(_)) => {}
            _ => panic!("{s:?}: herald {ours:?}, jid crate {theirs:?}"),
        }
    }
    assert!(accepted > 1000, "only {accepted} inputs accepted");
}

#[test]
fn problems_have_counter_names() {
    assert_eq!(JidProblem::NoLocalpart.as_str(), "no_localpart");
    assert_eq!(JidProblem::BadResource.as_str(), "bad_resource");
    assert_eq!(
        JidProblem::BadResource.to_string(),
        "resource not allowed by resourceprep"
    );
}

#[test]
fn show_keeps_only_the_four_values() {
    for value in ["away", "chat", "dnd", "xa"] {
        assert_eq!(show(Some(value)), Some(value));
        assert_eq!(show(Some(&format!(" \n{value}\t "))), Some(value));
    }
    for bogus in [
        "bogus&<x>",
        "",
        "  ",
        "DND",
        "available",
        "online",
        "away dnd",
    ] {
        assert_eq!(show(Some(bogus)), None, "{bogus:?}");
    }
    assert_eq!(show(None), None);
}

#[test]
fn cap_text_cuts_at_a_char_boundary() {
    assert_eq!(cap_text("hello", 10), "hello");
    assert_eq!(cap_text("hello", 5), "hello");
    assert_eq!(cap_text("hello", 3), "hel");
    assert_eq!(cap_text("hello", 0), "");
    // 'é' is two bytes, '€' three, '📱' four.
    assert_eq!(cap_text("héllo", 2), "h");
    assert_eq!(cap_text("héllo", 3), "hé");
    assert_eq!(cap_text("a€", 3), "a");
    assert_eq!(cap_text("a€", 4), "a€");
    assert_eq!(cap_text("📱", 3), "");
    let mib = "é".repeat(512 * 1024);
    let capped = cap_text(&mib, 1023);
    assert_eq!(capped.len(), 1022);
    assert!(capped.chars().all(|c| c == 'é'));
}

#[test]
fn status_is_capped_and_stripped_of_controls() {
    assert_eq!(status(None, 1024), None);
    assert_eq!(status(Some(""), 1024), None);
    let plain = status(Some("on a train\n\tback at 5"), 1024);
    assert!(matches!(
        plain,
        Some(Cow::Borrowed("on a train\n\tback at 5"))
    ));
    // RTL text with its marks is kept.
    let rtl = "\u{200f}בדרך\u{200f}";
    assert_eq!(status(Some(rtl), 1024).as_deref(), Some(rtl));
    assert_eq!(
        status(Some("a\0b\u{1b}[31mc\u{7f}d\u{85}e\u{9f}f\u{a0}g"), 1024).as_deref(),
        Some("ab[31mcdef\u{a0}g")
    );
    assert_eq!(status(Some("\0\u{85}"), 1024), None);
    let huge = "x".repeat(1024 * 1024);
    assert_eq!(status(Some(&huge), 1024).map(|s| s.len()), Some(1024));
    assert_eq!(status(Some("€€"), 4).as_deref(), Some("€"));
    assert!(is_dropped_control('\u{0}'));
    assert!(!is_dropped_control('\n'));
    assert!(!is_dropped_control('\u{202e}'));
}
