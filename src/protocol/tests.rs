//! Unit tests for framing, startup parsing and encoders.

use super::encode::{self, Severity};
use super::fields;
use super::framing::{parse_header, FrameError, Frames};
use super::startup::{self, StartupPacket};
use bytes::BytesMut;

#[test]
fn frames_stop_at_partial_message() {
    let mut buf = BytesMut::new();
    encode::query(&mut buf, "select 1");
    encode::sync(&mut buf);
    let full = buf.len();
    encode::query(&mut buf, "select 2");
    let partial = &buf[..buf.len() - 3];
    let mut frames = Frames::new(partial);
    let tags: Vec<u8> = frames.by_ref().map(|f| f.unwrap().1.tag).collect();
    assert_eq!(tags, vec![b'Q', b'S']);
    assert_eq!(frames.consumed(), full);
    assert_eq!(frames.pending_header().unwrap().unwrap().tag, b'Q');
}

#[test]
fn bad_lengths_are_errors() {
    assert_eq!(parse_header(b"Q\0\0\0\x03"), Err(FrameError::BadLength(3)));
    assert!(parse_header(b"Q\x7f\xff\xff\xff").is_err());
    assert!(parse_header(b"Q\xff\xff\xff\xff").is_err());
    assert_eq!(parse_header(b"Q\0\0"), Ok(None));
    let mut it = Frames::new(b"Q\0\0\0\x01xxxx");
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
}

#[test]
fn error_response_round_trips_fields() {
    let mut buf = BytesMut::new();
    encode::error_response(
        &mut buf,
        Severity::Fatal,
        "28P01",
        "bad\0pw",
        None,
        Some("h"),
    );
    let h = parse_header(&buf).unwrap().unwrap();
    assert_eq!(h.tag, b'E');
    assert_eq!(h.frame_len, buf.len());
    let body = &buf[5..];
    assert_eq!(&fields::sqlstate(body).unwrap(), b"28P01");
    assert_eq!(fields::summary(body), "FATAL: badpw (28P01)");
}

#[test]
fn startup_packets() {
    let mut buf = BytesMut::new();
    encode::startup_message(&mut buf, [("user", "app"), ("database", "launch")]);
    assert_eq!(startup::packet_len(&buf).unwrap(), Some(buf.len()));
    match startup::parse(&buf).unwrap() {
        StartupPacket::Startup(p) => {
            assert_eq!(p.get("user"), Some("app"));
            assert_eq!(p.get("database"), Some("launch"));
            assert_eq!(p.minor_version, 0);
        }
        other => panic!("{other:?}"),
    }
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    assert_eq!(startup::parse(&ssl).unwrap(), StartupPacket::Ssl);
    let mut cancel = BytesMut::new();
    encode::cancel_request(&mut cancel, 7, 9);
    assert_eq!(
        startup::parse(&cancel).unwrap(),
        StartupPacket::Cancel { pid: 7, secret: 9 }
    );
}

#[test]
fn malformed_startup_is_rejected() {
    assert!(startup::packet_len(&[0, 0, 0, 4]).is_err());
    assert!(startup::packet_len(&[0, 1, 0, 0]).is_err());
    // Version 2.0
    assert!(startup::parse(&[0, 0, 0, 9, 0, 2, 0, 0, 0]).is_err());
    // Missing terminator
    assert!(startup::parse(&[0, 0, 0, 10, 0, 3, 0, 0, b'u', 0]).is_err());
    // Empty value, then the terminator.
    assert!(startup::parse(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', 0, 0, 0]).is_ok());
    assert!(startup::parse(&[0, 0, 0, 11, 0, 3, 0, 0, b'u', 0, 0]).is_err());
    assert!(startup::parse(&[0, 0, 0, 11, 0, 3, 0, 0, b'u', 0, b'x']).is_err());
}

#[test]
fn sasl_initial_response_parses() {
    let mut buf = BytesMut::new();
    encode::sasl_initial_response(&mut buf, "SCRAM-SHA-256", b"n,,n=,r=abc");
    let (m, d) = startup::parse_sasl_initial_response(&buf[5..]).unwrap();
    assert_eq!(m, b"SCRAM-SHA-256");
    assert_eq!(d, Some(&b"n,,n=,r=abc"[..]));
    assert!(startup::parse_sasl_initial_response(b"SCRAM\0\0\0\0\x09ab").is_none());
    // Length -1: no initial response; with bytes after it, malformed.
    let left_out = startup::parse_sasl_initial_response(b"SCRAM\0\xff\xff\xff\xff");
    assert_eq!(left_out, Some((&b"SCRAM"[..], None)));
    assert!(startup::parse_sasl_initial_response(b"SCRAM\0\xff\xff\xff\xffab").is_none());
    assert!(startup::parse_sasl_initial_response(b"SCRAM\0\xff\xff\xff\xfe").is_none());
}
