//! Selector texts, as `policy explain --from` takes them.

use super::*;

fn sel(text: &str) -> Selector {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

#[test]
fn empty_and_braces_select_every_endpoint() {
    for text in ["", "{}", " { } ", "  "] {
        assert!(sel(text).is_all(), "{text:?}");
    }
}

#[test]
fn pairs_are_read_with_the_label_rules() {
    assert_eq!(
        sel("role=frontend"),
        Selector(labels(&[("role", "frontend")]))
    );
    let two = Selector(labels(&[("app", "secure-app"), ("zone", "a")]));
    assert_eq!(sel("app=secure-app,zone=a"), two);
    assert_eq!(sel("{zone=a, app=secure-app}"), two);
    assert_eq!(sel(" app = secure-app , zone = a "), two);
    assert_eq!(sel("tier="), Selector(labels(&[("tier", "")])));
    assert_eq!(
        sel("example.com/tier=db,host=host-a"),
        Selector(labels(&[("example.com/tier", "db"), ("host", "host-a")]))
    );
}

#[test]
fn display_is_the_text_form_and_reads_back() {
    for text in ["{}", "{role=frontend}", "{app=secure-app,host=-edge,tier=}"] {
        assert_eq!(sel(text).to_string(), text);
        assert_eq!(sel(&sel(text).to_string()), sel(text));
    }
}

#[test]
fn errors_quote_the_text_and_say_what_is_valid() {
    for (text, needle) in [
        ("role", "\"role\" has no '='"),
        ("role=frontend,", "\"\" has no '='"),
        ("a=1,,b=2", "\"\" has no '='"),
        ("role kind=x", "label key \"role kind\" contains ' '"),
        (
            "role=back end",
            "label \"role\": label value \"back end\" contains ' '",
        ),
        ("role=a,role=b", "names the label \"role\" twice"),
        (
            "host=",
            "label \"host\" holds a host's name, and \"\" is not one",
        ),
        ("host-a/web", "has no '='"),
        ("{role=a", "label key \"{role\" contains '{'"),
    ] {
        let e = text.parse::<Selector>().unwrap_err();
        assert_eq!(e.text, text);
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("selector {text:?}: ")),
            "{shown}"
        );
        assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
        assert!(shown.ends_with(SELECTOR_RULE), "{shown}");
    }
}
