//! Wire-format tables and a scripted peer on a Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use super::wire::{self, Decoder, Encoder, Message, Value};
use super::*;

fn encode(values: &[Value]) -> Vec<u8> {
    let mut e = Encoder::default();
    for v in values {
        e.value(v);
    }
    e.buf
}

#[test]
fn values_encode_with_the_specifications_padding() {
    // A byte then a u32: three bytes of padding; a string is length, bytes, NUL.
    assert_eq!(
        encode(&[Value::Byte(7), Value::U32(1), Value::str("ab")]),
        [7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 0]
    );
    // An array of u64: the length excludes the padding before the first element.
    assert_eq!(
        encode(&[Value::Array("t".into(), vec![Value::U64(5)])]),
        [8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]
    );
    // An empty array of structs still pads to the struct boundary.
    assert_eq!(
        encode(&[Value::Array("(sv)".into(), vec![])]),
        [0, 0, 0, 0, 0, 0, 0, 0]
    );
    // A variant is its signature, then the value.
    assert_eq!(
        encode(&[Value::variant(Value::Bool(true))]),
        [1, b'b', 0, 0, 1, 0, 0, 0]
    );
}

#[test]
fn every_type_round_trips() {
    let values = vec![
        Value::Byte(1),
        Value::Bool(true),
        Value::I16(-2),
        Value::U16(3),
        Value::I32(-4),
        Value::U32(5),
        Value::I64(-6),
        Value::U64(7),
        Value::Double(1.5),
        Value::Fd(0),
        Value::str("unit.scope"),
        Value::ObjectPath("/org/freedesktop/systemd1/job/42".into()),
        Value::Signature("a(sv)".into()),
        Value::Array(
            "(sv)".into(),
            vec![
                Value::Struct(vec![
                    Value::str("PIDs"),
                    Value::variant(Value::Array("u".into(), vec![Value::U32(77)])),
                ]),
                Value::Struct(vec![
                    Value::str("DeviceAllow"),
                    Value::variant(Value::Array(
                        "(ss)".into(),
                        vec![Value::Struct(vec![
                            Value::str("/dev/char/195:0"),
                            Value::str("rw"),
                        ])],
                    )),
                ]),
            ],
        ),
        Value::Array(
            "{sv}".into(),
            vec![Value::DictEntry(
                Box::new(Value::str("k")),
                Box::new(Value::variant(Value::U64(9))),
            )],
        ),
    ];
    let sig: String = values.iter().map(Value::signature).collect();
    let bytes = encode(&values);
    let back = Decoder::new(&bytes, 0, false).values(&sig).expect("decode");
    assert_eq!(back, values);
}

#[test]
fn truncated_or_malformed_input_is_an_error_never_a_panic() {
    let bytes = encode(&[
        Value::str("systemd"),
        Value::Array("u".into(), vec![Value::U32(1)]),
    ]);
    for cut in 0..bytes.len() {
        assert!(
            Decoder::new(&bytes[..cut], 0, false).values("sau").is_err(),
            "cut at {cut}"
        );
    }
    for sig in ["a", "(", "()", "{s}", "a{", "z", "(s"] {
        assert!(
            Decoder::new(&bytes, 0, false).values(sig).is_err(),
            "signature {sig:?}"
        );
    }
    // An array claiming more bytes than the message has.
    let mut huge = vec![0xff, 0xff, 0xff, 0x7f];
    huge.extend_from_slice(&[0; 8]);
    assert!(Decoder::new(&huge, 0, false).values("ay").is_err());
    // A boolean that is neither 0 nor 1.
    assert!(Decoder::new(&[2, 0, 0, 0], 0, false).values("b").is_err());
    // Deep nesting stops at a limit.
    let deep = "a".repeat(100) + "y";
    assert!(Decoder::new(&[0; 4], 0, false).values(&deep).is_ok());
    let deep_variant = {
        let mut v = Value::Byte(1);
        for _ in 0..80 {
            v = Value::variant(v);
        }
        encode(&[v])
    };
    assert!(Decoder::new(&deep_variant, 0, false).values("v").is_err());
}

#[test]
fn a_message_round_trips_with_its_header_fields() {
    let bytes = wire::encode(
        wire::SIGNAL,
        9,
        &[
            (
                wire::F_PATH,
                Value::ObjectPath("/org/freedesktop/systemd1".into()),
            ),
            (
                wire::F_INTERFACE,
                Value::str("org.freedesktop.systemd1.Manager"),
            ),
            (wire::F_MEMBER, Value::str("JobRemoved")),
        ],
        &[
            Value::U32(42),
            Value::ObjectPath("/org/freedesktop/systemd1/job/42".into()),
            Value::str("gpurun-a.scope"),
            Value::str("done"),
        ],
    );
    let m = wire::decode_message(&bytes).expect("decode");
    assert_eq!(m.kind, wire::SIGNAL);
    assert_eq!(m.serial, 9);
    assert_eq!(m.member.as_deref(), Some("JobRemoved"));
    assert_eq!(m.signature, "uoss");
    assert_eq!(m.values().expect("body")[3], Value::str("done"));
    // A wrong length or a foreign byte-order mark is refused.
    assert!(wire::decode_message(&bytes[..bytes.len() - 1]).is_err());
    let mut bad = bytes.clone();
    bad[0] = b'x';
    assert!(wire::decode_message(&bad).is_err());
}

#[test]
fn a_big_endian_message_decodes() {
    // Method return, serial 2, reply serial 1, signature "u", body 0x01020304.
    let mut m: Vec<u8> = vec![b'B', wire::METHOD_RETURN, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2];
    let fields: Vec<u8> = vec![
        wire::F_REPLY_SERIAL,
        1,
        b'u',
        0,
        0,
        0,
        0,
        1, // (y v=u32 1)
        wire::F_SIGNATURE,
        1,
        b'g',
        0,
        1,
        b'u',
        0, // (y v=g "u")
    ];
    m.extend_from_slice(&(fields.len() as u32).to_be_bytes());
    m.extend_from_slice(&fields);
    while !m.len().is_multiple_of(8) {
        m.push(0);
    }
    m.extend_from_slice(&[1, 2, 3, 4]);
    let msg = wire::decode_message(&m).expect("decode");
    assert_eq!(msg.reply_serial, Some(1));
    assert_eq!(msg.values().expect("body"), [Value::U32(0x0102_0304)]);
}

/// A peer that authenticates one client, then answers each call it receives with what
/// `answer` returns (raw messages, sent in order).
pub(crate) struct FakePeer {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    thread: Option<JoinHandle<Vec<Message>>>,
}

impl FakePeer {
    pub(crate) fn start(
        auth_answer: &'static str,
        mut answer: impl FnMut(&Message) -> Vec<Vec<u8>> + Send + 'static,
    ) -> FakePeer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bus");
        let listener = UnixListener::bind(&path).expect("bind");
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let Ok((mut s, _)) = listener.accept() else {
                return seen;
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
            // The NUL byte and the AUTH line.
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while !line.ends_with(b"\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                line.push(b[0]);
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            assert!(text.starts_with("\0AUTH EXTERNAL "), "{text:?}");
            s.write_all(auth_answer.as_bytes()).ok();
            if !auth_answer.starts_with("OK") {
                return seen;
            }
            let mut begin = [0u8; 7];
            if s.read_exact(&mut begin).is_err() || &begin != b"BEGIN\r\n" {
                return seen;
            }
            loop {
                let mut fixed = [0u8; 16];
                if s.read_exact(&mut fixed).is_err() {
                    return seen;
                }
                let (h, b) = wire::frame_lengths(&fixed).expect("frame");
                let mut bytes = fixed.to_vec();
                bytes.resize(h + b, 0);
                s.read_exact(&mut bytes[16..]).expect("message");
                let m = wire::decode_message(&bytes).expect("decode");
                for out in answer(&m) {
                    s.write_all(&out).ok();
                }
                seen.push(m);
            }
        });
        FakePeer {
            path,
            _dir: dir,
            thread: Some(thread),
        }
    }

    /// Every call the peer received, once the client has closed the connection.
    pub(crate) fn calls(mut self) -> Vec<Message> {
        self.thread
            .take()
            .map(|t| t.join().expect("peer thread"))
            .unwrap_or_default()
    }
}

pub(crate) fn reply(to: &Message, body: &[Value]) -> Vec<u8> {
    wire::encode(
        wire::METHOD_RETURN,
        1000 + to.serial,
        &[(wire::F_REPLY_SERIAL, Value::U32(to.serial))],
        body,
    )
}

pub(crate) fn error(to: &Message, name: &str, text: &str) -> Vec<u8> {
    wire::encode(
        wire::ERROR,
        1000 + to.serial,
        &[
            (wire::F_REPLY_SERIAL, Value::U32(to.serial)),
            (wire::F_ERROR_NAME, Value::str(name)),
        ],
        &[Value::str(text)],
    )
}

pub(crate) fn signal(member: &str, body: &[Value]) -> Vec<u8> {
    wire::encode(
        wire::SIGNAL,
        1,
        &[
            (
                wire::F_PATH,
                Value::ObjectPath("/org/freedesktop/systemd1".into()),
            ),
            (
                wire::F_INTERFACE,
                Value::str("org.freedesktop.systemd1.Manager"),
            ),
            (wire::F_MEMBER, Value::str(member)),
        ],
        body,
    )
}

fn ping<'a>() -> Call<'a> {
    Call {
        destination: "org.example",
        path: "/",
        interface: "org.example.Test",
        member: "Ping",
        body: &[],
    }
}

#[test]
fn a_call_gets_its_answer_and_keeps_signals_that_came_first() {
    let peer = FakePeer::start("OK 0123456789abcdef\r\n", |m| {
        vec![
            signal(
                "UnitNew",
                &[Value::str("x.scope"), Value::ObjectPath("/x".into())],
            ),
            reply(m, &[Value::str("pong")]),
        ]
    });
    let mut c = Connection::open(&peer.path, false, Duration::from_secs(10)).expect("open");
    let m = c.call(&ping()).expect("call");
    assert_eq!(m.first_str().as_deref(), Some("pong"));
    let s = c
        .wait_signal("UnitNew", |s| s.member.as_deref() == Some("UnitNew"))
        .expect("kept signal");
    assert_eq!(s.values().expect("body")[0], Value::str("x.scope"));
    drop(c);
    let calls = peer.calls();
    assert_eq!(calls[0].member.as_deref(), Some("Ping"));
    assert_eq!(calls[0].interface.as_deref(), Some("org.example.Test"));
}

#[test]
fn an_error_answer_carries_its_name_and_text() {
    let peer = FakePeer::start("OK 0123456789abcdef\r\n", |m| {
        vec![error(m, "org.freedesktop.DBus.Error.AccessDenied", "no")]
    });
    let mut c = Connection::open(&peer.path, false, Duration::from_secs(10)).expect("open");
    let e = c.call(&ping()).expect_err("error answer");
    assert_eq!(
        e.remote_name(),
        Some("org.freedesktop.DBus.Error.AccessDenied")
    );
    assert_eq!(e.to_string(), "org.freedesktop.DBus.Error.AccessDenied: no");
}

#[test]
fn a_bus_client_says_hello_first() {
    let peer = FakePeer::start("OK 0123456789abcdef\r\n", |m| {
        vec![reply(m, &[Value::str(":1.5")])]
    });
    let c = Connection::open(&peer.path, true, Duration::from_secs(10)).expect("open");
    drop(c);
    let calls = peer.calls();
    assert_eq!(calls[0].member.as_deref(), Some("Hello"));
}

#[test]
fn rejected_authentication_is_an_error_naming_the_answer() {
    let peer = FakePeer::start("REJECTED EXTERNAL\r\n", |_| vec![]);
    let e = Connection::open(&peer.path, false, Duration::from_secs(10))
        .err()
        .expect("rejected");
    assert!(
        e.to_string().contains("authentication") && e.to_string().contains("REJECTED"),
        "{e}"
    );
}

#[test]
fn a_silent_peer_times_out_with_what_was_awaited() {
    let peer = FakePeer::start("OK 0123456789abcdef\r\n", |_| vec![]);
    let mut c = Connection::open(&peer.path, false, Duration::from_millis(200)).expect("open");
    let e = c.call(&ping()).expect_err("timeout");
    assert!(matches!(e, DbusError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("org.example.Test.Ping"), "{e}");
}

#[test]
fn a_missing_socket_names_the_path() {
    let e = Connection::open(
        std::path::Path::new("/nonexistent/gpurun-test/bus"),
        false,
        Duration::from_secs(1),
    )
    .err()
    .expect("no socket");
    assert!(
        e.to_string().contains("/nonexistent/gpurun-test/bus"),
        "{e}"
    );
}
