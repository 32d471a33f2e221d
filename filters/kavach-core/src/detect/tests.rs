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
