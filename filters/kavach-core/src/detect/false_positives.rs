//! False positives of every detector on ordinary, non-sensitive JSON.
//!
//! A detection can block or re-route a request, so we measure how often ordinary payloads of a
//! payments API trip a detector. The corpus is generated from a fixed seed (the same payloads on
//! every run): orders, customer contacts, shipments, events, invoices and traces with order ids,
//! timestamps in several forms, phone numbers in Indian formats, amounts, pincodes, UUIDs, e-mail
//! addresses, GSTINs, coordinates and hashes. None of it is card, Aadhaar, PAN, IFSC or UPI data.
//! Measured: 20,000 payloads (3.8 MB), one false positive (a trace span id, see the test).
//!
//! A second corpus holds the values no format rule can tell apart from regulated numbers: bare
//! 12-digit reference numbers (UPI RRN / UTR) and phone numbers written `91XXXXXXXXXX` look
//! exactly like Aadhaar numbers, and bare 16-digit numeric ids like card numbers. About one in ten
//! of them passes the check digit. Their rate is measured and pinned here so that a change to the
//! detectors shows up as a changed number.

use super::*;

/// A small deterministic generator (xorshift64*), so the corpus is the same on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }

    fn upper(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'A' + self.below(26) as u8))
            .collect()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-a{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.hex(3),
            self.hex(12)
        )
    }

    /// An Indian mobile number in one of the ways applications write it.
    fn phone(&mut self) -> String {
        let first = char::from(b'6' + self.below(4) as u8);
        let rest = self.digits(9);
        let n = format!("{first}{rest}");
        match self.below(5) {
            0 => format!("+91 {} {}", &n[..5], &n[5..]),
            1 => format!("+91{n}"),
            2 => format!("+91-{}-{}", &n[..5], &n[5..]),
            3 => format!("0{n}"),
            _ => n,
        }
    }

    fn email(&mut self) -> String {
        let user = self.pick(&["priya.sharma", "rahul_k", "ops", "finance-team", "a.b"]);
        let domain = self.pick(&["gmail.com", "bank.co.in", "example.in", "corp.example.com"]);
        format!("{user}{}@{domain}", self.below(1000))
    }

    fn pincode(&mut self) -> String {
        format!("{}{}", 1 + self.below(8), self.digits(5))
    }

    fn amount(&mut self) -> String {
        match self.below(3) {
            0 => format!("{}", self.below(10_000_000)),
            1 => format!("{}.{:02}", self.below(1_000_000), self.below(100)),
            _ => format!("\"{}.00\"", self.below(100_000)),
        }
    }

    fn timestamp(&mut self) -> String {
        let secs = 1_700_000_000 + self.below(200_000_000);
        match self.below(4) {
            0 => secs.to_string(),
            1 => format!("{}{:03}", secs, self.below(1000)),
            2 => format!("{}{:06}", secs, self.below(1_000_000)),
            _ => format!(
                "\"2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+05:30\"",
                1 + self.below(12),
                1 + self.below(28),
                self.below(24),
                self.below(60),
                self.below(60),
                self.below(1000)
            ),
        }
    }

    fn order_id(&mut self) -> String {
        match self.below(5) {
            0 => format!("ORD-2026-{}", self.digits(6)),
            1 => format!("order_{}{}", self.upper(4), self.hex(10)),
            2 => format!("{}-{}-{}", self.digits(3), self.digits(7), self.digits(7)),
            3 => format!("OD{}", self.digits(18)),
            _ => format!("INV/2026-27/{}", self.digits(6)),
        }
    }

    fn gstin(&mut self) -> String {
        format!(
            "{:02}{}{}{}{}1Z{}",
            1 + self.below(37),
            self.upper(3),
            self.pick(&["P", "C", "F"]),
            self.upper(1),
            self.digits(4) + &self.upper(1),
            self.upper(1)
        )
    }

    fn payload(&mut self) -> String {
        match self.below(6) {
            0 => format!(
                r#"{{"order_id":"{}","created_at":{},"amount":{},"currency":"INR","status":"{}","customer":{{"email":"{}","phone":"{}","pincode":"{}"}},"items":[{{"sku":"SKU-{}","qty":{},"price":{}}}]}}"#,
                self.order_id(),
                self.timestamp(),
                self.amount(),
                self.pick(&["created", "captured", "refunded", "failed"]),
                self.email(),
                self.phone(),
                self.pincode(),
                self.digits(5),
                1 + self.below(9),
                self.amount()
            ),
            1 => format!(
                r#"{{"event_id":"{}","ts":{},"type":"{}","attempt":{},"latency_ms":{},"request_id":"{}"}}"#,
                self.uuid(),
                self.timestamp(),
                self.pick(&["payment.captured", "refund.processed", "mandate.created"]),
                self.below(5),
                self.below(5000),
                self.uuid()
            ),
            2 => format!(
                r#"{{"awb":"{}","pincode":{},"city":"{}","weight_g":{},"dims":"{}x{}x{}","eta":{}}}"#,
                self.digits(10),
                self.pincode(),
                self.pick(&["Bengaluru", "Mumbai", "Chennai", "Hyderabad", "Pune"]),
                self.below(30_000),
                self.below(100),
                self.below(100),
                self.below(100),
                self.timestamp()
            ),
            3 => format!(
                r#"{{"id":{},"name":"{}","email":"{}","mobile":"{}","alt_phone":"{}","dob":"19{}-0{}-1{}","address":{{"line1":"{} MG Road","pin":"{}"}},"lat":{}.{},"lng":{}.{}}}"#,
                self.below(10_000_000),
                self.pick(&["Priya Sharma", "Rahul Kumar", "Anita Desai"]),
                self.email(),
                self.phone(),
                self.phone(),
                50 + self.below(50),
                1 + self.below(9),
                self.below(10),
                self.below(200),
                self.pincode(),
                8 + self.below(25),
                self.digits(6),
                68 + self.below(29),
                self.digits(6)
            ),
            4 => format!(
                r#"{{"invoice_no":"{}","gstin":"{}","hsn":"{}","taxable":{},"cgst":{},"sgst":{},"issued":{}}}"#,
                self.order_id(),
                self.gstin(),
                self.digits(8),
                self.amount(),
                self.amount(),
                self.amount(),
                self.timestamp()
            ),
            _ => format!(
                r#"{{"trace_id":"{}","span_id":"{}","duration_ns":{},"http.status":{},"sha256":"{}","build":"v{}.{}.{}"}}"#,
                self.hex(32),
                self.hex(16),
                self.below(10_000_000_000),
                self.pick(&["200", "201", "404", "503"]),
                self.hex(64),
                self.below(10),
                self.below(50),
                self.below(100)
            ),
        }
    }
}

/// Findings per detector over `payloads`.
fn measure(payloads: &[String]) -> Vec<(Detector, usize)> {
    let mut counts: Vec<(Detector, usize)> = Detector::ALL.iter().map(|d| (*d, 0)).collect();
    for p in payloads {
        for (d, _) in find_with(p.as_bytes(), &Detector::ALL) {
            if let Some(c) = counts.iter_mut().find(|(k, _)| *k == d) {
                c.1 += 1;
            }
        }
    }
    counts
}

const CORPUS_SIZE: usize = 20_000;

#[test]
fn ordinary_json_trips_no_detector() {
    let mut g = Gen(0x6b61_7661_6368_2026);
    let payloads: Vec<String> = (0..CORPUS_SIZE).map(|_| g.payload()).collect();
    let bytes: usize = payloads.iter().map(String::len).sum();
    let counts = measure(&payloads);
    let examples: Vec<String> = payloads
        .iter()
        .filter(|p| !find_with(p.as_bytes(), &Detector::ALL).is_empty())
        .take(5)
        .cloned()
        .collect();
    println!("{CORPUS_SIZE} payloads, {bytes} bytes: {counts:?}");
    // The one hit: a trace span id (16 hex digits) that happened to be all decimal digits,
    // starting with 4 and Luhn-valid, in a quoted string: indistinguishable from a Visa number.
    let expected = vec![
        (Detector::Card, 1),
        (Detector::Aadhaar, 0),
        (Detector::Pan, 0),
        (Detector::Ifsc, 0),
        (Detector::UpiVpa, 0),
    ];
    assert_eq!(counts, expected, "e.g. {examples:#?}");
}

#[test]
fn hand_written_payloads_trip_no_detector() {
    for p in [
        r#"{"amount":125000,"currency":"INR","ts":1764115030,"phone":"+91 98765 43210","order_id":"ORD-2026-000123","pin":"560001","lat":12.9716,"lng":77.5946,"qty":12}"#,
        r#"{"email":"support@bank.co.in","cc":["a.b@example.com","ops@corp.example.in"],"reply_to":"noreply@mail.example.com"}"#,
        r#"{"request_id":"7d444840-9dc0-11d1-b245-5ffdce74fad2","created":"2026-11-26T05:54:22.306429+05:30","micros":1764115462306429}"#,
        r#"{"order":"402-1234567-1234567","awb":"1234567890","pincode":400001,"mobile":"+919876543210"}"#,
        r#"{"gstin":"27AAPFU0939F1ZV","invoice":"INV/2026-27/004512","hsn":"85171300","sac":"998314"}"#,
        r##"{"user":"@priya","tags":["@channel","#payments"],"url":"https://svc@api.example.in/v1"}"##,
        "amount=500&currency=INR&order_id=ORD123&email=a%40b.com&ts=1764115030123",
    ] {
        let found = find_with(p.as_bytes(), &Detector::ALL);
        assert!(found.is_empty(), "{p}: {found:?}");
    }
}

#[test]
fn numbers_shaped_like_aadhaar_or_cards_are_measured() {
    let mut g = Gen(0x7272_6e5f_7574_7221);
    let n = 10_000;
    // UPI RRN / bank UTR: 12 digits, often starting with the year digit.
    let rrn: Vec<String> = (0..n)
        .map(|_| format!(r#"{{"rrn":"{}{}"}}"#, 2 + g.below(8), g.digits(11)))
        .collect();
    // Mobile numbers with the country code and no `+`.
    let phones: Vec<String> = (0..n)
        .map(|_| format!(r#"{{"wa":"91{}{}"}}"#, 6 + g.below(4), g.digits(9)))
        .collect();
    // Bare 16-digit numeric ids whose first digit is a card network's.
    let ids: Vec<String> = (0..n)
        .map(|_| format!(r#"{{"txn":{}{}}}"#, 3 + g.below(4), g.digits(15)))
        .collect();
    let count = |ps: &[String], d: Detector| -> usize {
        measure(ps)
            .into_iter()
            .find(|(k, _)| *k == d)
            .map_or(0, |(_, c)| c)
    };
    let (rrn_fp, phone_fp, id_fp) = (
        count(&rrn, Detector::Aadhaar),
        count(&phones, Detector::Aadhaar),
        count(&ids, Detector::Card),
    );
    println!("of {n} each: rrn as aadhaar {rrn_fp}, 91-phone as aadhaar {phone_fp}, 16-digit id as card {id_fp}");
    // One check digit: about 1 in 10 passes. Pinned so a detector change shows up here.
    assert_eq!((rrn_fp, phone_fp, id_fp), (RRN_FP, PHONE_FP, ID_FP));
}

const RRN_FP: usize = 1045;
const PHONE_FP: usize = 983;
const ID_FP: usize = 893;
