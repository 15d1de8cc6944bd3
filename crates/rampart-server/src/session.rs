//! The pre-authentication handshake as a pure state machine: frames in,
//! replies and decisions out. No IO and no clock; the connection driver owns
//! the deadline and the socket.

use bytes::Bytes;
use rampart_proto::{
    AuthMethod, ErrorCode, Frame, Hello, Message, Nack, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

/// What the driver must do with a pre-AUTH frame.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send this frame and keep reading.
    Reply(Frame),
    /// Send this frame, then close the connection.
    Close(Frame),
    /// Check this credential, then call [`Handshake::auth_failed`] or switch
    /// the connection to authenticated.
    Authenticate {
        id: u64,
        method: AuthMethod,
        credential: Bytes,
    },
}

/// Handshake progress of one connection.
#[derive(Debug)]
pub(crate) struct Handshake {
    hello: bool,
    /// What the client called itself in HELLO, for audit records.
    agent: Option<String>,
    failures: u32,
    max_failures: u32,
    max_frame: u32,
    /// Frames seen so far; past [`MAX_PREAUTH_FRAMES`] the connection
    /// closes (an unauthenticated peer gets no more work out of us).
    frames: u32,
}

/// Frames a connection may send before it authenticates: HELLO, AUTH and
/// a few retries and pings.
pub(crate) const MAX_PREAUTH_FRAMES: u32 = 16;

pub(crate) fn nack(id: u64, code: ErrorCode, message: impl Into<String>) -> Frame {
    nack_after(id, code, message, None)
}

/// A NACK that tells the client how long to wait before retrying (whole
/// milliseconds, at least 1; none when `retry_after` is `None`).
pub(crate) fn nack_after(
    id: u64,
    code: ErrorCode,
    message: impl Into<String>,
    retry_after: Option<std::time::Duration>,
) -> Frame {
    let retry_after_ms = retry_after.map_or(0, |d| {
        u32::try_from(d.as_millis().max(1)).unwrap_or(u32::MAX)
    });
    Frame::new(
        id,
        Nack {
            code,
            retry_after_ms,
            message: message.into(),
        },
    )
}

impl Handshake {
    pub(crate) fn new(max_failures: u32, max_frame: usize) -> Self {
        Self {
            hello: false,
            agent: None,
            failures: 0,
            max_failures,
            max_frame: u32::try_from(max_frame).unwrap_or(DEFAULT_MAX_FRAME as u32),
            frames: 0,
        }
    }

    pub(crate) fn on_frame(&mut self, f: Frame) -> Step {
        self.frames += 1;
        if self.frames > MAX_PREAUTH_FRAMES {
            return Step::Close(nack(
                f.id,
                ErrorCode::TOO_MANY_REQUESTS,
                format!("more than {MAX_PREAUTH_FRAMES} frames before authentication"),
            ));
        }
        match f.msg {
            Message::Hello(_) if self.hello => {
                Step::Reply(nack(f.id, ErrorCode::BAD_REQUEST, "HELLO already received"))
            }
            Message::Hello(h) if h.version != u16::from(PROTOCOL_VERSION) => Step::Close(nack(
                f.id,
                ErrorCode::UPGRADE_REQUIRED,
                format!(
                    "protocol version {} is not supported; this server speaks {}",
                    h.version, PROTOCOL_VERSION
                ),
            )),
            Message::Hello(h) => {
                self.hello = true;
                self.agent = Some(
                    h.agent
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(128)
                        .collect(),
                );
                Step::Reply(Frame::new(
                    f.id,
                    Hello {
                        version: u16::from(PROTOCOL_VERSION),
                        capabilities: 0,
                        max_frame: self.max_frame,
                        agent: concat!("rampart/", env!("CARGO_PKG_VERSION")).into(),
                    },
                ))
            }
            Message::Auth(_) if !self.hello => {
                Step::Reply(nack(f.id, ErrorCode::BAD_REQUEST, "send HELLO before AUTH"))
            }
            Message::Auth(a) => Step::Authenticate {
                id: f.id,
                method: a.method,
                credential: a.credential,
            },
            _ => Step::Reply(nack(f.id, ErrorCode::UNAUTHORIZED, "unauthenticated")),
        }
    }

    pub(crate) fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Records a refused credential. The connection closes after
    /// `max_failures` refusals.
    pub(crate) fn auth_failed(&mut self, id: u64) -> Step {
        self.failures += 1;
        let reply = nack(id, ErrorCode::UNAUTHORIZED, "invalid credentials");
        if self.failures >= self.max_failures {
            Step::Close(reply)
        } else {
            Step::Reply(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_proto::{Auth, Publish};

    fn hello(v: u16) -> Frame {
        Frame::new(
            1,
            Hello {
                version: v,
                capabilities: 0,
                max_frame: 0,
                agent: "t".into(),
            },
        )
    }

    fn code(s: &Step) -> Option<u16> {
        match s {
            Step::Reply(f) | Step::Close(f) => match &f.msg {
                Message::Nack(n) => Some(n.code.0),
                _ => None,
            },
            Step::Authenticate { .. } => None,
        }
    }

    #[test]
    fn hello_then_auth() {
        let mut h = Handshake::new(3, 1 << 20);
        assert!(
            matches!(h.on_frame(hello(1)), Step::Reply(f) if matches!(f.msg, Message::Hello(_)))
        );
        let auth = Frame::new(
            2,
            Auth {
                method: AuthMethod::ApiKey,
                credential: Bytes::from_static(b"k"),
            },
        );
        assert!(matches!(h.on_frame(auth), Step::Authenticate { id: 2, .. }));
    }

    #[test]
    fn frames_before_auth_are_capped() {
        let mut h = Handshake::new(3, DEFAULT_MAX_FRAME);
        assert!(matches!(h.on_frame(hello(1)), Step::Reply(_)));
        for i in 1..MAX_PREAUTH_FRAMES {
            let step = h.on_frame(Frame::new(u64::from(i), Message::Ping));
            assert!(matches!(step, Step::Reply(_)), "frame {i}");
        }
        match h.on_frame(Frame::new(99, Message::Ping)) {
            Step::Close(f) => match f.msg {
                Message::Nack(n) => assert_eq!(n.code, ErrorCode::TOO_MANY_REQUESTS),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_frames_before_auth_get_401() {
        let mut h = Handshake::new(3, 1 << 20);
        let p = Frame::new(
            5,
            Publish {
                ack: Default::default(),
                tenant: "a".parse().unwrap(),
                namespace: "b".parse().unwrap(),
                stream: "c".parse().unwrap(),
                payload: Bytes::new(),
            },
        );
        let s = h.on_frame(p);
        assert!(matches!(s, Step::Reply(_)));
        assert_eq!(code(&s), Some(401));
        assert_eq!(code(&h.on_frame(Frame::new(6, Message::Ping))), Some(401));
    }

    #[test]
    fn version_mismatch_is_426_and_closes() {
        let mut h = Handshake::new(3, 1 << 20);
        let s = h.on_frame(hello(2));
        assert!(matches!(s, Step::Close(_)));
        assert_eq!(code(&s), Some(426));
    }

    #[test]
    fn third_failure_closes() {
        let mut h = Handshake::new(3, 1 << 20);
        assert!(matches!(h.auth_failed(1), Step::Reply(_)));
        assert!(matches!(h.auth_failed(2), Step::Reply(_)));
        let s = h.auth_failed(3);
        assert!(matches!(s, Step::Close(_)));
        assert_eq!(code(&s), Some(401));
    }

    #[test]
    fn auth_needs_hello_first() {
        let mut h = Handshake::new(3, 1 << 20);
        let auth = Frame::new(
            2,
            Auth {
                method: AuthMethod::ApiKey,
                credential: Bytes::from_static(b"k"),
            },
        );
        assert_eq!(code(&h.on_frame(auth)), Some(400));
    }
}
