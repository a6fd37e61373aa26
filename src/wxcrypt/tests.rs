//! Checked against Tencent's published WXBizMsgCrypt samples, then against tampering and
//! hostile input.

use super::*;

/// Tencent's WXBizMsgCrypt sample (Sample.py / Sample.cs / Sample.java of the
/// 企业号 / 公众平台 SDK): a pushed message and what it decrypts to.
mod sample {
    pub const TOKEN: &str = "QDG6eK";
    pub const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    pub const APPID: &str = "wx5823bf96d3bd56c7";
    pub const TIMESTAMP: &str = "1409659813";
    pub const NONCE: &str = "1372623149";
    pub const MSG_SIGNATURE: &str = "477715d11cdb4164915debcba66cb864d751f3e6";
    pub const ENCRYPTED: &str = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
    pub const PLAIN: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>";

    pub fn envelope() -> String {
        format!(
            "<xml><ToUserName><![CDATA[{APPID}]]></ToUserName><Encrypt><![CDATA[{ENCRYPTED}]]></Encrypt></xml>"
        )
    }
}

/// Tencent's Java SDK test (WXBizMsgCryptTest): an exact encryption with a fixed
/// random prefix.
mod java_sample {
    pub const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    pub const TOKEN: &str = "pamtest";
    pub const APPID: &str = "wxb11529c136998cb6";
    pub const RANDOM: &[u8; 16] = b"aaaabbbbccccdddd";
    pub const REPLY: &str = "我是中文abcd123";
    pub const ENCRYPTED: &str =
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg==";
}

fn sample_crypt() -> MsgCrypt {
    MsgCrypt::new(sample::TOKEN, sample::AES_KEY, sample::APPID).expect("the sample key is valid")
}

/// A component's crypto for the other tests.
fn ours() -> MsgCrypt {
    MsgCrypt::new(
        "tok",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "wx_component",
    )
    .expect("valid key")
}

fn event() -> String {
    "<xml><AppId><![CDATA[wx_component]]></AppId><CreateTime>1413192605</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket@@@abc]]></ComponentVerifyTicket></xml>".to_owned()
}

#[test]
fn the_sample_signature_matches_tencents() {
    let crypt = sample_crypt();
    assert_eq!(
        crypt.signature(sample::TIMESTAMP, sample::NONCE, sample::ENCRYPTED),
        sample::MSG_SIGNATURE
    );
}

#[test]
fn the_sample_decrypts_to_tencents_plaintext() {
    assert_eq!(
        sample_crypt().decrypt(sample::ENCRYPTED).as_deref(),
        Ok(sample::PLAIN)
    );
}

#[test]
fn the_sample_envelope_opens_into_its_fields() {
    let fields = sample_crypt()
        .open(
            sample::TIMESTAMP,
            sample::NONCE,
            sample::MSG_SIGNATURE,
            sample::envelope().as_bytes(),
        )
        .expect("the sample opens");
    assert_eq!(fields.get("Content").map(String::as_str), Some("hello"));
    assert_eq!(
        fields.get("MsgId").map(String::as_str),
        Some("4561255354251345929")
    );
    assert_eq!(fields.get("AgentID").map(String::as_str), Some("218"));
    assert_eq!(fields.len(), 7, "{fields:?}");
}

#[test]
fn encryption_matches_tencents_java_test_byte_for_byte() {
    let crypt = MsgCrypt::new(java_sample::TOKEN, java_sample::AES_KEY, java_sample::APPID)
        .expect("valid key");
    let encrypted = crypt.encrypt(java_sample::REPLY, *java_sample::RANDOM);
    assert_eq!(encrypted, java_sample::ENCRYPTED);
    assert_eq!(crypt.decrypt(&encrypted).as_deref(), Ok(java_sample::REPLY));
}

#[test]
fn sealed_messages_open_again_with_their_fields() {
    let crypt = ours();
    let (body, signature) = crypt.seal(&event(), "1413192605", "nonce1", [7; 16]);
    assert!(body.starts_with("<xml><AppId><![CDATA[wx_component]]></AppId><Encrypt><![CDATA["));
    let fields = crypt
        .open("1413192605", "nonce1", &signature, body.as_bytes())
        .expect("opens");
    assert_eq!(
        fields.get("ComponentVerifyTicket").map(String::as_str),
        Some("ticket@@@abc")
    );
    assert_eq!(
        fields.get("InfoType").map(String::as_str),
        Some("component_verify_ticket")
    );
}

#[test]
fn every_length_round_trips_and_pads_to_32_byte_blocks() {
    let crypt = ours();
    for len in 0..100 {
        let text: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
        let encrypted = crypt.encrypt(&text, [len as u8; 16]);
        let raw = BASE64.decode(&encrypted).expect("base64");
        assert_eq!(raw.len() % 32, 0, "len {len}");
        assert_eq!(
            crypt.decrypt(&encrypted).as_deref(),
            Ok(text.as_str()),
            "len {len}"
        );
    }
}

#[test]
fn a_wrong_signature_is_refused() {
    let crypt = ours();
    let (body, signature) = crypt.seal(&event(), "1", "n", [0; 16]);
    let mut wrong = signature.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).expect("ascii");
    for (ts, nonce, sig) in [
        ("1", "n", wrong.as_str()),
        ("2", "n", &signature),
        ("1", "m", &signature),
        ("1", "n", ""),
    ] {
        assert_eq!(
            crypt.open(ts, nonce, sig, body.as_bytes()),
            Err(CryptError::BadSignature),
            "{ts} {nonce} {sig}"
        );
    }
    let other_token = MsgCrypt::new(
        "other",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "wx_component",
    )
    .expect("valid");
    assert_eq!(
        other_token.open("1", "n", &signature, body.as_bytes()),
        Err(CryptError::BadSignature)
    );
}

#[test]
fn tampered_ciphertext_is_refused_even_with_a_matching_signature() {
    let crypt = ours();
    let encrypted = crypt.encrypt(&event(), [3; 16]);
    let mut raw = BASE64.decode(&encrypted).expect("base64");
    // Flip a bit in the last block: the padding no longer decrypts as PKCS#7 (or, by
    // rare chance, the appid no longer matches).
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    let tampered = BASE64.encode(&raw);
    let outcome = crypt.decrypt(&tampered);
    assert!(
        matches!(
            outcome,
            Err(CryptError::BadCiphertext(_) | CryptError::WrongAppId { .. })
        ),
        "{outcome:?}"
    );
    // Signed by someone who has the token, still refused.
    let body = format!("<xml><Encrypt><![CDATA[{tampered}]]></Encrypt></xml>");
    let sig = crypt.signature("1", "n", &tampered);
    assert!(crypt.open("1", "n", &sig, body.as_bytes()).is_err());
}

#[test]
fn a_message_for_another_appid_is_refused() {
    let theirs = MsgCrypt::new(
        "tok",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "wx_other",
    )
    .expect("valid");
    let encrypted = theirs.encrypt(&event(), [1; 16]);
    assert_eq!(
        ours().decrypt(&encrypted),
        Err(CryptError::WrongAppId {
            expected: "wx_component".into(),
            found: "wx_other".into()
        })
    );
    // An envelope addressed to another AppId, though signed and encrypted for us.
    let crypt = ours();
    let encrypted = crypt.encrypt(&event(), [1; 16]);
    let body = format!("<xml><AppId>wx_other</AppId><Encrypt>{encrypted}</Encrypt></xml>");
    let sig = crypt.signature("1", "n", &encrypted);
    assert!(matches!(
        crypt.open("1", "n", &sig, body.as_bytes()),
        Err(CryptError::WrongAppId { .. })
    ));
}

/// Encrypts raw plaintext bytes with our key, bypassing `encrypt`'s framing.
fn encrypt_raw(crypt: &MsgCrypt, mut plain: Vec<u8>) -> String {
    let (blocks, rest) = aes::Block::slice_as_chunks_mut(&mut plain);
    assert!(rest.is_empty());
    Encryptor::new(&crypt.key.into(), &crypt.iv().into()).encrypt_blocks(blocks);
    BASE64.encode(&plain)
}

#[test]
fn bad_padding_and_lengths_are_refused() {
    let crypt = ours();
    let mut framed = vec![0u8; 16];
    framed.extend_from_slice(&5u32.to_be_bytes());
    framed.extend_from_slice(b"<xml>wx_component");
    let valid_len = framed.len();
    // Padding byte 0, 33, and inconsistent padding bytes.
    for last in [0u8, 33, 200] {
        let mut plain = framed.clone();
        plain.resize(64, last);
        assert!(
            matches!(crypt.decrypt(&encrypt_raw(&crypt, plain)), Err(CryptError::BadCiphertext(m)) if m.contains("padding"))
        );
    }
    let mut plain = framed.clone();
    plain.resize(63, 9);
    plain.push(27);
    assert!(
        matches!(crypt.decrypt(&encrypt_raw(&crypt, plain)), Err(CryptError::BadCiphertext(m)) if m.contains("padding"))
    );
    // A length that runs past the end.
    let mut plain = framed.clone();
    plain[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    let pad = 64 - valid_len;
    plain.resize(64, pad as u8);
    assert!(
        matches!(crypt.decrypt(&encrypt_raw(&crypt, plain)), Err(CryptError::BadCiphertext(m)) if m.contains("length"))
    );
    // Shorter than the header once unpadded.
    let plain = vec![32u8; 32];
    assert!(
        matches!(crypt.decrypt(&encrypt_raw(&crypt, plain)), Err(CryptError::BadCiphertext(m)) if m.contains("short"))
    );
    // Not UTF-8.
    let mut plain = vec![0u8; 16];
    plain.extend_from_slice(&2u32.to_be_bytes());
    plain.extend_from_slice(b"\xff\xfewx_component");
    let pad = 32 - plain.len() % 32;
    plain.resize(plain.len() + pad, pad as u8);
    assert!(
        matches!(crypt.decrypt(&encrypt_raw(&crypt, plain)), Err(CryptError::BadCiphertext(m)) if m.contains("UTF-8"))
    );
}

#[test]
fn truncated_or_non_base64_ciphertext_is_refused() {
    let crypt = ours();
    let encrypted = crypt.encrypt(&event(), [2; 16]);
    for cut in [1, 4, 5, 22, encrypted.len() - 4] {
        let short = &encrypted[..encrypted.len() - cut];
        assert!(
            matches!(crypt.decrypt(short), Err(CryptError::BadCiphertext(_))),
            "cut {cut}"
        );
    }
    for junk in ["", "!!!!", "abc", "AAAA"] {
        assert!(
            matches!(crypt.decrypt(junk), Err(CryptError::BadCiphertext(_))),
            "{junk}"
        );
    }
}

#[test]
fn a_huge_body_is_refused_before_any_work() {
    let crypt = ours();
    let body = vec![b'A'; MAX_BODY + 1];
    assert_eq!(
        crypt.open("1", "n", "sig", &body),
        Err(CryptError::BodyTooLarge)
    );
    let big = "A".repeat(MAX_BODY + 4);
    assert!(matches!(
        crypt.decrypt(&big),
        Err(CryptError::BadCiphertext(_))
    ));
}

#[test]
fn envelopes_without_encrypt_or_not_xml_are_bad_envelopes() {
    let crypt = ours();
    for body in [
        &b"<xml><AppId>x</AppId></xml>"[..],
        b"<xml><Encrypt></Encrypt></xml>",
        b"not xml",
        b"\xff\xfe",
        b"<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",
        b"",
    ] {
        assert!(
            matches!(
                crypt.open("1", "n", "s", body),
                Err(CryptError::BadEnvelope(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_bad_key_is_refused_with_a_clear_reason() {
    assert_eq!(
        MsgCrypt::new("t", "short", "wx").err(),
        Some(KeyError::Length(5))
    );
    let e = MsgCrypt::new("t", &"a".repeat(44), "wx").err();
    assert_eq!(e, Some(KeyError::Length(44)));
    assert!(
        e.map(|e| e.to_string())
            .unwrap_or_default()
            .contains("43 characters")
    );
    let not_b64 = format!("{}!", "a".repeat(42));
    assert_eq!(
        MsgCrypt::new("t", &not_b64, "wx").err(),
        Some(KeyError::NotBase64)
    );
    assert_eq!(
        MsgCrypt::new("", sample::AES_KEY, "wx").err(),
        Some(KeyError::EmptyToken)
    );
    assert_eq!(
        MsgCrypt::new("t", sample::AES_KEY, "").err(),
        Some(KeyError::EmptyAppId)
    );
    // Non-ASCII of the right character count is still not base64, and no panic.
    let wide = "é".repeat(43);
    assert_eq!(
        MsgCrypt::new("t", &wide, "wx").err(),
        Some(KeyError::NotBase64)
    );
}

#[test]
fn debug_never_shows_the_token_or_key() {
    let shown = format!("{:?}", sample_crypt());
    assert!(shown.contains(sample::APPID), "{shown}");
    assert!(
        !shown.contains(sample::TOKEN) && !shown.contains("key"),
        "{shown}"
    );
}

#[test]
fn fields_are_the_direct_children_with_text_and_cdata_untrimmed() {
    let fields = parse_fields(
        "<?xml version=\"1.0\"?><!-- c --><xml>\n <A> a </A><B><![CDATA[ <b> ]]></B><C>x&amp;y&#x4e2d;&lt;</C><D/><E><F>deep</F>top</E></xml>\n",
    )
    .expect("parses");
    let get = |k: &str| fields.get(k).map(String::as_str);
    assert_eq!(get("A"), Some(" a "));
    assert_eq!(get("B"), Some(" <b> "));
    assert_eq!(get("C"), Some("x&y中<"));
    assert_eq!(get("D"), Some(""));
    assert_eq!(get("E"), Some("top"));
    assert_eq!(get("F"), None);
}

#[test]
fn to_xml_round_trips_any_text_including_cdata_terminators() {
    let fields = Fields::from([
        ("A".to_owned(), "plain".to_owned()),
        ("B".to_owned(), "a]]>b]]>]]>".to_owned()),
        ("C".to_owned(), "<&>\"'中".to_owned()),
        ("D".to_owned(), String::new()),
        ("E".to_owned(), "]]".to_owned()),
    ]);
    let xml = to_xml(&fields);
    assert_eq!(parse_fields(&xml), Ok(fields));
}

#[test]
fn hostile_xml_is_refused_without_panicking() {
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]><xml><A>&lol2;</A></xml>";
    let xxe = "<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><A>&xxe;</A></xml>";
    let deep = format!("<xml>{}{}</xml>", "<a>".repeat(5_000), "</a>".repeat(5_000));
    let cases: Vec<(&str, &str)> = vec![
        (laughs, "DOCTYPE"),
        (xxe, "DOCTYPE"),
        ("<xml><A>&xxe;</A></xml>", "unknown entity"),
        ("<xml><A>&#0;</A></xml>", "unknown entity"),
        ("<xml><A>&#xFFFFFFFF;</A></xml>", "unknown entity"),
        ("<root><A>1</A></root>", "root element"),
        ("<xml><A>1</A></xml><xml/>", "more than one root"),
        ("<xml><A>1</B></xml>", ""),
        ("<xml><A>1</A>", "ends inside"),
        ("<xml><A>1</A><A>2</A></xml>", "twice"),
        ("", "no <xml>"),
        ("junk<xml/>", "outside"),
        ("<xml><A><![CDATA[unterminated</A></xml>", ""),
        ("<xml><A attr=\"x></A></xml>", ""),
    ];
    for (xml, want) in cases {
        match parse_fields(xml) {
            Err(CryptError::BadXml(why)) => assert!(why.contains(want), "{xml}: {why}"),
            other => panic!("{xml}: {other:?}"),
        }
    }
    // Deep nesting is fine (not recursive) and yields the one direct child.
    let fields = parse_fields(&deep).expect("deep nesting parses");
    assert_eq!(fields.get("a").map(String::as_str), Some(""));
    assert!(matches!(
        parse_fields(&"<xml>".repeat(MAX_XML)),
        Err(CryptError::BadXml(_))
    ));
}

#[test]
fn every_prefix_and_byte_flip_of_a_message_parses_or_fails_cleanly() {
    let xml = to_xml(&Fields::from([
        ("AppId".to_owned(), "wx1".to_owned()),
        ("Text".to_owned(), "a]]>b &amp; <c>".to_owned()),
    ])) + "<!-- x --><?pi?>";
    for end in 0..=xml.len() {
        if let Some(prefix) = xml.get(..end) {
            let _ = parse_fields(prefix);
        }
    }
    let specials = [
        b'<', b'>', b'&', b'/', b'!', b'[', b']', b'?', b'"', b'#', b';', b'x',
    ];
    for at in 0..xml.len() {
        for &byte in &specials {
            let mut bytes = xml.clone().into_bytes();
            bytes[at] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = parse_fields(&text);
            }
        }
    }
}

#[test]
fn a_sealed_message_with_hostile_inner_xml_is_refused_cleanly() {
    let crypt = ours();
    let (body, sig) = crypt.seal("<!DOCTYPE x [<!ENTITY a \"b\">]><xml/>", "1", "n", [0; 16]);
    assert!(matches!(
        crypt.open("1", "n", &sig, body.as_bytes()),
        Err(CryptError::BadXml(m)) if m.contains("DOCTYPE")
    ));
}
