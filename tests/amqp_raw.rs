//! The AMQP listener with hand-built bytes. Bad input: each case closes only its own
//! connection, with AMQP's reply code, and the broker keeps serving other clients. Flow
//! control: connection.blocked and connection.unblocked frames, in order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Spool;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

const HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

fn open(spool: &Spool) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", spool.amqp_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the peer closes; returns everything it sent.
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the broker closes the connection");
    out
}

/// The reply code of the first connection.close (class 10, method 50) in `bytes`.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut pos = 0;
    while pos + 7 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[pos + 3..pos + 7].try_into().unwrap()) as usize;
        let payload = bytes.get(pos + 7..pos + 7 + size)?;
        if bytes[pos] == 1 && payload.len() >= 6 && payload[..4] == [0, 10, 0, 50] {
            return Some(u16::from_be_bytes([payload[4], payload[5]]));
        }
        pos += 8 + size;
    }
    None
}

/// A frame of `kind` on `channel` with `payload`.
fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

/// A method frame on channel 0.
fn method(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    on(0, class, method, args)
}

/// A method frame on `channel`.
fn on(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&class.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    frame(1, channel, &payload)
}

/// Reads until `bytes` holds a method with this class and id (channel 0); the bytes read.
fn read_until(s: &mut TcpStream, seen: &mut Vec<u8>, class: u16, method: u16) {
    let want = [class.to_be_bytes(), method.to_be_bytes()].concat();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == want) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed while waiting for method {class}.{method}");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// PLAIN login as guest, through tune-ok and open, with raw frames after the header.
fn login(s: &mut TcpStream) {
    login_with(s, 2047, 0)
}

/// The same login, choosing channel_max and the heartbeat interval in tune-ok.
fn login_with(s: &mut TcpStream, channel_max: u16, heartbeat: u16) {
    let mut start_ok = Vec::new();
    start_ok.extend_from_slice(&0u32.to_be_bytes()); // client properties: empty table
    start_ok.push(5);
    start_ok.extend_from_slice(b"PLAIN");
    let response = b"\0guest\0guest";
    start_ok.extend_from_slice(&(response.len() as u32).to_be_bytes());
    start_ok.extend_from_slice(response);
    start_ok.push(5);
    start_ok.extend_from_slice(b"en_US");
    let mut tune_ok = Vec::new();
    tune_ok.extend_from_slice(&channel_max.to_be_bytes());
    tune_ok.extend_from_slice(&131072u32.to_be_bytes());
    tune_ok.extend_from_slice(&heartbeat.to_be_bytes());
    let mut open_args = vec![1, b'/'];
    open_args.extend_from_slice(&[0, 0]);
    s.write_all(HEADER).unwrap();
    s.write_all(&method(10, 11, &start_ok)).unwrap();
    s.write_all(&method(10, 31, &tune_ok)).unwrap();
    s.write_all(&method(10, 40, &open_args)).unwrap();
    read_until(s, &mut Vec::new(), 10, 41);
}

async fn still_serves(spool: &Spool) {
    let conn = Connection::connect(&spool.amqp_uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "alive".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_protocol_header_gets_ours_back() {
    let spool = Spool::start();
    let mut s = open(&spool);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_all(&mut s), HEADER);
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_oversized_and_unknown_frames_close_the_connection_with_amqp_codes() {
    let spool = Spool::start();
    let cases: [(&str, Vec<u8>, u16); 4] = [
        // Frame type 9 does not exist.
        ("unknown frame type", vec![9, 0, 0, 0, 0, 0, 0, 0xCE], 501),
        // Larger than the 131072-byte frame_max agreed in tune-ok.
        ("oversized frame", vec![1, 0, 1, 0x10, 0, 0, 0], 501),
        // A frame whose end octet is wrong.
        ("bad frame end", vec![8, 0, 0, 0, 0, 0, 0, 0xAB], 501),
        // A method frame whose payload is not a method.
        (
            "undecodable method",
            vec![1, 0, 1, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xCE],
            502,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut s = open(&spool);
        login(&mut s);
        s.write_all(&bytes).unwrap();
        let reply = read_all(&mut s);
        assert_eq!(close_code(&reply), Some(code), "{what}");
    }
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_refused_with_access_refused() {
    let spool = Spool::start();
    let uri = spool.amqp_uri().replace("guest:guest", "guest:nope");
    let err = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ACCESS_REFUSED") || err.to_string().contains("403"),
        "{err}"
    );
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publishers_are_blocked_while_published_bytes_exceed_the_limit() {
    // A 1-byte limit: every publish blocks its connection until the message is appended.
    let spool = Spool::start_with(&["--amqp-max-inflight-bytes", "1"]);
    let mut s = open(&spool);
    login(&mut s);
    s.write_all(&on(1, 20, 10, &[0])).unwrap(); // channel.open
    read_until(&mut s, &mut Vec::new(), 20, 11);
    // basic.publish to the default exchange, routing key "nowhere" (unroutable but published),
    // then its content header and body.
    let mut publish = vec![0, 0, 0]; // ticket, exchange ""
    publish.push(7);
    publish.extend_from_slice(b"nowhere");
    publish.push(0); // mandatory, immediate
    s.write_all(&on(1, 60, 40, &publish)).unwrap();
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&5u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]); // no properties
    s.write_all(&frame(2, 1, &header)).unwrap();
    s.write_all(&frame(3, 1, b"hello")).unwrap();
    // Unroutable publishes are not appended: nothing is in flight and nobody is blocked. A
    // routed one is: declare a queue and publish to it.
    let mut declare = vec![0, 0, 1, b'q', 0b0000_0010]; // ticket, "q", durable
    declare.extend_from_slice(&0u32.to_be_bytes()); // no arguments
    s.write_all(&on(1, 50, 10, &declare)).unwrap();
    read_until(&mut s, &mut Vec::new(), 50, 11);
    let publish = [0, 0, 0, 1, b'q', 0];
    s.write_all(&on(1, 60, 40, &publish)).unwrap();
    s.write_all(&frame(2, 1, &header)).unwrap();
    s.write_all(&frame(3, 1, b"hello")).unwrap();
    let mut seen = Vec::new();
    read_until(&mut s, &mut seen, 10, 60); // connection.blocked
    read_until(&mut s, &mut seen, 10, 61); // connection.unblocked, once appended
    let blocked = seen.windows(4).position(|w| w == [0, 10, 0, 60]).unwrap();
    let unblocked = seen.windows(4).position(|w| w == [0, 10, 0, 61]).unwrap();
    assert!(blocked < unblocked);
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publishers_are_blocked_while_the_disk_is_low() {
    // A free-space limit no disk meets: the disk alarm is up from the start.
    let spool = Spool::start_with(&["--amqp-disk-free-limit", &u64::MAX.to_string()]);
    let mut s = open(&spool);
    login(&mut s);
    s.write_all(&on(1, 20, 10, &[0])).unwrap(); // channel.open
    read_until(&mut s, &mut Vec::new(), 20, 11);
    let mut declare = vec![0, 0, 1, b'q', 0b0000_0010]; // ticket, "q", durable
    declare.extend_from_slice(&0u32.to_be_bytes()); // no arguments
    s.write_all(&on(1, 50, 10, &declare)).unwrap();
    read_until(&mut s, &mut Vec::new(), 50, 11);
    // Declaring did not block the connection; publishing does, with RabbitMQ's reason.
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&5u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    s.write_all(&on(1, 60, 40, &[0, 0, 0, 1, b'q', 0])).unwrap();
    s.write_all(&frame(2, 1, &header)).unwrap();
    s.write_all(&frame(3, 1, b"hello")).unwrap();
    let mut seen = Vec::new();
    read_until(&mut s, &mut seen, 10, 60); // connection.blocked
    let blocked = seen.windows(4).position(|w| w == [0, 10, 0, 60]).unwrap();
    assert_eq!(&seen[blocked + 4..blocked + 16], b"\x0blow on disk");
    // Clients that only consume or declare are served.
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_violations_close_the_connection_with_their_codes() {
    let spool = Spool::start();
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&5u64.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    let publish = [0, 0, 0, 1, b'q', 0];
    let cases: Vec<(&str, u16, Vec<Vec<u8>>, u16)> = vec![
        // A channel above the channel_max agreed in tune-ok: CHANNEL_ERROR.
        (
            "channel above channel_max",
            8,
            vec![on(9, 20, 10, &[0])],
            504,
        ),
        // A method on a channel that was never opened: CHANNEL_ERROR.
        (
            "unopened channel",
            2047,
            vec![on(3, 50, 10, &[0, 0, 1, b'q', 0, 0, 0, 0, 0])],
            504,
        ),
        // A content header with no publish before it: UNEXPECTED_FRAME.
        (
            "stray content header",
            2047,
            vec![on(1, 20, 10, &[0]), frame(2, 1, &header)],
            505,
        ),
        // A body longer than its header said: FRAME_ERROR.
        (
            "overlong body",
            2047,
            vec![
                on(1, 20, 10, &[0]),
                on(1, 60, 40, &publish),
                frame(2, 1, &header),
                frame(3, 1, b"too long"),
            ],
            501,
        ),
        // A method where the body of a publish should come: UNEXPECTED_FRAME.
        (
            "method inside content",
            2047,
            vec![
                on(1, 20, 10, &[0]),
                on(1, 60, 40, &publish),
                frame(2, 1, &header),
                on(1, 60, 10, &[0, 0, 0, 0, 0, 0, 0]),
            ],
            505,
        ),
    ];
    for (what, channel_max, frames, code) in cases {
        let mut s = open(&spool);
        login_with(&mut s, channel_max, 0);
        for f in frames {
            s.write_all(&f).unwrap();
        }
        assert_eq!(close_code(&read_all(&mut s)), Some(code), "{what}");
    }
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_closed_after_two_missed_heartbeats() {
    let spool = Spool::start();
    let mut s = open(&spool);
    // A 1 s heartbeat, then silence: the broker closes after 2 s without a frame.
    login_with(&mut s, 2047, 1);
    let started = std::time::Instant::now();
    let reply = read_all(&mut s);
    assert_eq!(close_code(&reply), Some(320), "CONNECTION_FORCED");
    // The broker kept heartbeating while it waited.
    assert!(reply.windows(8).any(|w| w == [8, 0, 0, 0, 0, 0, 0, 0xCE]));
    assert!(started.elapsed() >= Duration::from_secs(2));
    still_serves(&spool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_closes_connections_with_connection_forced() {
    let mut spool = Spool::start();
    let mut s = open(&spool);
    login(&mut s);
    let (status, _) = spool
        .terminate(Duration::from_secs(10))
        .expect("the broker exits");
    assert!(status.success(), "{status:?}");
    let reply = read_all(&mut s);
    assert_eq!(close_code(&reply), Some(320), "CONNECTION_FORCED");
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains(
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
        ),
        "RabbitMQ's text: {text}"
    );
}
