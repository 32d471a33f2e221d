use super::*;

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Published test card numbers of the networks' sandboxes.
const TEST_CARDS: &[&str] = &[
    "4111111111111111", // Visa
    "4012888888881881", // Visa
    "5555555555554444", // Mastercard
    "2223003122003222", // Mastercard 2-series
    "378282246310005",  // American Express
    "6011111111111117", // Discover
    "3530111333300000", // JCB
    "6521222222222223", // RuPay-range, Luhn valid
    "36227206271667",   // Diners
    "6200000000000005", // UnionPay
];

/// Aadhaar numbers with a valid Verhoeff check digit (UIDAI's published sample and two made up
/// with the algorithm; none belong to a person).
const TEST_AADHAAR: &[&str] = &["999941057058", "234123412346", "496858245152"];

#[test]
fn published_test_cards_are_cards() {
    for c in TEST_CARDS {
        assert!(is_card(&digits(c)), "{c}");
    }
}

#[test]
fn card_near_misses_are_not_cards() {
    for c in [
        "4111111111111112",     // wrong check digit
        "411111111111",         // too short
        "41111111111111111111", // too long
        "1111111111111117",     // no issuer starts with 1 (Luhn valid)
        "0000000000000000",     // Luhn valid zeros, no issuer
    ] {
        assert!(!is_card(&digits(c)), "{c}");
    }
}

#[test]
fn aadhaar_checks_length_first_digit_and_verhoeff() {
    for a in TEST_AADHAAR {
        assert!(is_aadhaar(&digits(a)), "{a}");
    }
    assert!(!is_aadhaar(&digits("999941057059")), "wrong check digit");
    assert!(!is_aadhaar(&digits("99994105705")), "11 digits");
    assert!(!is_aadhaar(&digits("123412341234")), "starts with 1");
    assert!(!is_aadhaar(&digits("012341234123")), "starts with 0");
}

#[test]
fn verhoeff_catches_every_single_digit_error_and_adjacent_swap() {
    let good = digits("234123412346");
    for i in 0..good.len() {
        for d in 0..10u8 {
            if d != good[i] {
                let mut bad = good.clone();
                bad[i] = d;
                assert!(!verhoeff_valid(&bad), "digit {i} -> {d}");
            }
        }
        if i + 1 < good.len() && good[i] != good[i + 1] {
            let mut bad = good.clone();
            bad.swap(i, i + 1);
            assert!(!verhoeff_valid(&bad), "swap {i}");
        }
    }
}

#[test]
fn runs_with_separators_are_found() {
    let text = br#"{"card":"4111 1111 1111 1111","uid":"9999-4105-7058","n":1}"#;
    let found = find(text);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].kind, Kind::Card);
    assert_eq!(&text[found[0].span.clone()], b"4111 1111 1111 1111");
    assert_eq!(found[1].kind, Kind::Aadhaar);
}

#[test]
fn digits_glued_to_other_characters_are_not_numbers() {
    for text in [
        "id=A4111111111111111",
        "4111111111111111x",
        "order 41111111111111119999",
        "4111  1111 1111 1111", // double space splits the run
        "ts=1764115030123456",
    ] {
        assert!(find(text.as_bytes()).is_empty(), "{text}");
    }
}

#[test]
fn ordinary_json_has_no_findings() {
    let text = br#"{"amount":125000,"currency":"INR","ts":1764115030,"phone":"+91 98765 43210",
        "order_id":"ORD-2026-000123","pin":"560001","lat":12.9716,"lng":77.5946,"qty":12}"#;
    assert!(find(text).is_empty());
}

#[test]
fn redaction_keeps_first_six_and_last_four_of_cards() {
    assert_eq!(
        redact("/cards/4111111111111111/charge"),
        "/cards/411111******1111/charge"
    );
    assert_eq!(redact("4111-1111-1111-1111"), "4111-11**-****-1111");
    assert_eq!(redact("uid 9999 4105 7058 ok"), "uid XXXX XXXX 7058 ok");
    assert!(matches!(redact("nothing here 12345"), Cow::Borrowed(_)));
}

#[test]
fn a_run_after_plus_is_a_phone_number() {
    // 12 digits, first digit 9, Verhoeff-valid: an Aadhaar number without the `+`.
    assert!(is_aadhaar(&digits("919876543216")));
    assert_eq!(find(b"uid 919876543216").len(), 1);
    assert!(find(b"call +919876543216").is_empty());
    assert!(find(b"call +91 98765 43216").is_empty());
}

#[test]
fn grouping_must_look_like_the_number_it_claims_to_be() {
    // Aadhaar is printed 4-4-4; a 2-5-5 run with the same digits is a phone number.
    assert_eq!(find(b"9999 4105 7058")[0].kind, Kind::Aadhaar);
    assert!(find(b"99 99410 57058").is_empty());
    // A card starts with a group of four; 3-7-7 is an order number (same Luhn-valid digits).
    assert_eq!(find(b"4111-1111-1111-1111")[0].kind, Kind::Card);
    assert_eq!(find(b"3782-822463-10005")[0].kind, Kind::Card);
    assert!(find(b"411-1111111-111111").is_empty());
}

#[test]
fn pan_follows_the_published_format() {
    for pan in ["AAAPL1234C", "ABCPE1234F", "AAACB1234Z", "abcpe1234f"] {
        assert!(india::is_pan(pan.as_bytes()), "{pan}");
    }
    for not_pan in [
        "ABCDE1234F",  // fourth letter D is no holder type
        "ABCPE12345",  // ends with a digit
        "ABCPE123F",   // nine characters
        "ABCPE12345F", // eleven characters
        "ABCP11234F",  // fifth character is a digit
        "AbCPE1234F",  // mixed case
        "1BCPE1234F",  // starts with a digit
    ] {
        assert!(!india::is_pan(not_pan.as_bytes()), "{not_pan}");
    }
}

#[test]
fn ifsc_follows_the_published_format() {
    for ifsc in ["SBIN0000300", "HDFC0001234", "ICIC0ABC123", "utib0000001"] {
        assert!(india::is_ifsc(ifsc.as_bytes()), "{ifsc}");
    }
    for not_ifsc in [
        "SBIN1000300",  // fifth character must be 0
        "SBI00000300",  // bank code has a digit
        "SBIN000030",   // ten characters
        "SBIN00003000", // twelve characters
        "SbIN0000300",  // mixed case
        "SBIN0-00300",  // not alphanumeric
    ] {
        assert!(!india::is_ifsc(not_ifsc.as_bytes()), "{not_ifsc}");
    }
}

#[test]
fn pan_and_ifsc_must_be_whole_tokens() {
    let found = |t: &str| find_with(t.as_bytes(), &[Detector::Pan, Detector::Ifsc]);
    assert_eq!(found(r#"{"pan":"ABCPE1234F"}"#).len(), 1);
    assert_eq!(found("ifsc=HDFC0001234&x=1")[0].0, Detector::Ifsc);
    assert!(found("xABCPE1234F").is_empty());
    assert!(found("ABCPE1234F9").is_empty());
    // A GSTIN carries the business PAN inside a 15-character token: not a PAN on its own.
    assert!(found(r#"{"gstin":"27AAPFU0939F1ZV"}"#).is_empty());
}

#[test]
fn upi_vpas_are_found_and_email_addresses_are_not() {
    let vpas = |t: &str| -> Vec<String> {
        india::find_upi_vpas(t.as_bytes())
            .into_iter()
            .map(|r| t[r].to_string())
            .collect()
    };
    assert_eq!(
        vpas(r#"{"vpa":"merchant@okaxis"}"#),
        vec!["merchant@okaxis"]
    );
    assert_eq!(vpas("pa=9876543210@ybl&pn=Shop"), vec!["9876543210@ybl"]);
    assert_eq!(vpas("to shop.name-1@paytm, ok"), vec!["shop.name-1@paytm"]);
    assert_eq!(vpas("ab@upi"), vec!["ab@upi"]);
    for not_vpa in [
        r#"{"email":"a@b.com"}"#,
        r#"{"email":"first.last@bank.co.in"}"#,
        "mail me at x@gmail.com.",
        "https://user@host/path",
        "postgres://svc@db:5432/app",
        r#"{"@timestamp":"2026-11-26"}"#,
        "@handle on social media",
        "a@ybl",           // one-character handle
        "merchant@y",      // one-letter PSP
        "merchant@ok2pay", // digits in the PSP part
        ".merchant@ybl",   // handle starts with a dot
        "x:merchant@ybl",  // not at a delimiter
    ] {
        assert!(vpas(not_vpa).is_empty(), "{not_vpa}: {:?}", vpas(not_vpa));
    }
}

#[test]
fn detectors_have_stable_names() {
    for d in Detector::ALL {
        assert_eq!(Detector::from_name(d.name()), Some(d));
    }
    assert_eq!(Detector::from_name("upi_vpa"), Some(Detector::UpiVpa));
    assert_eq!(Detector::from_name("UPI"), None);
}

#[test]
fn find_with_runs_only_the_chosen_detectors_in_text_order() {
    let text =
        br#"{"pan":"ABCPE1234F","card":"4111 1111 1111 1111","uid":"999941057058","vpa":"a1@ybl","ifsc":"HDFC0001234"}"#;
    let kinds: Vec<Detector> = find_with(text, &Detector::ALL)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(
        kinds,
        vec![
            Detector::Pan,
            Detector::Card,
            Detector::Aadhaar,
            Detector::UpiVpa,
            Detector::Ifsc
        ]
    );
    let only_cards = find_with(text, &[Detector::Card]);
    assert_eq!(only_cards.len(), 1);
    assert_eq!(&text[only_cards[0].1.clone()], b"4111 1111 1111 1111");
    assert!(find_with(text, &[]).is_empty());
}

#[test]
fn find_keeps_its_card_and_aadhaar_only_contract() {
    let text = br#"{"pan":"ABCPE1234F","vpa":"a1@ybl","card":"4111111111111111"}"#;
    let found = find(text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].kind, Kind::Card);
}

#[test]
fn digits_tied_by_a_joiner_are_part_of_an_identifier() {
    for text in [
        r#"{"id":"adcc1871-aac6-447a-a69f-999941057058"}"#, // UUID whose last group is all digits
        "ORD-4111111111111111",
        "id_999941057058",
        "12.4111111111111111",
        "4111111111111111-x",
        "999941057058.5",
    ] {
        assert!(find(text.as_bytes()).is_empty(), "{text}");
    }
    // A joiner that ties to nothing is just punctuation.
    assert_eq!(find(b"- 4111111111111111.").len(), 1);
    assert_eq!(find(b"uid: 999941057058-").len(), 1);
}
