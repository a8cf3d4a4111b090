use proptest::prelude::*;

use super::*;
use ovm_core::model::VmSpec;

fn calls() -> Vec<Call> {
    let vm = VmId::new();
    vec![
        Call::HostInfo,
        Call::Capabilities,
        Call::Define {
            config: Box::new(VmConfig::new(vm, VmSpec::new("web", 1, 256))),
        },
        Call::Undefine { vm },
        Call::Start { vm },
        Call::Stop {
            vm,
            timeout_ms: 1500,
        },
        Call::Kill { vm },
        Call::Pause { vm },
        Call::Resume { vm },
        Call::State { vm },
        Call::List,
        Call::Stats { vm },
        Call::ConsoleBuffer { vm },
        Call::ConsoleWrite {
            vm,
            input: Bytes(b"ls\n".to_vec()),
        },
        Call::GuestSend {
            vm,
            key: "k".into(),
            value: Bytes(vec![0, 255, 7]),
        },
        Call::GuestRead {
            vm,
            key: "k".into(),
        },
        Call::SetVcpus { vm, vcpus: 2 },
        Call::SetMemory {
            vm,
            memory_mib: 512,
        },
    ]
}

#[test]
fn every_call_and_reply_survives_the_wire() {
    for call in calls() {
        let req = CallRequest {
            request_id: uuid::Uuid::new_v4(),
            call,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            serde_json::from_str::<CallRequest>(&text).unwrap(),
            req,
            "{text}"
        );
    }
    let replies = vec![
        Reply::Done,
        Reply::State(VmState::Running),
        Reply::List(vec![(VmId::new(), VmState::Paused)]),
        Reply::Stats(VmStats::default()),
        Reply::Bytes(Bytes(b"console".to_vec())),
        Reply::GuestValue(None),
        Reply::GuestValue(Some(Bytes(vec![1]))),
        Reply::Capabilities(Capabilities::default()),
    ];
    for reply in replies {
        let resp = CallResponse {
            protocol: PROTOCOL,
            outcome: Outcome::Ok(reply),
        };
        let text = serde_json::to_string(&resp).unwrap();
        assert_eq!(
            serde_json::from_str::<CallResponse>(&text).unwrap(),
            resp,
            "{text}"
        );
    }
}

#[test]
fn the_documented_shapes_are_what_travels() {
    let vm: VmId = "6f9c4a52-0d3e-4a63-9c0a-1b2c3d4e5f60".parse().unwrap();
    let req = CallRequest {
        request_id: "00000000-0000-4000-8000-000000000001".parse().unwrap(),
        call: Call::Start { vm },
    };
    assert_eq!(
        serde_json::to_string(&req).unwrap(),
        r#"{"request_id":"00000000-0000-4000-8000-000000000001","call":{"op":"start","vm":"6f9c4a52-0d3e-4a63-9c0a-1b2c3d4e5f60"}}"#
    );
    let resp = CallResponse {
        protocol: PROTOCOL,
        outcome: Outcome::Ok(Reply::State(VmState::Running)),
    };
    assert_eq!(
        serde_json::to_string(&resp).unwrap(),
        r#"{"protocol":"1.0","ok":{"type":"state","data":"running"}}"#
    );
    let err = CallResponse {
        protocol: PROTOCOL,
        outcome: Outcome::Error(WireError::from(&Error::not_found("vm", "web"))),
    };
    assert_eq!(
        serde_json::to_string(&err).unwrap(),
        r#"{"protocol":"1.0","error":{"code":"not_found","kind":"vm","id":"web"}}"#
    );
}

#[test]
fn errors_come_back_as_the_same_variant() {
    let errors = vec![
        Error::not_found("vm", "x"),
        Error::AlreadyExists {
            kind: "vm",
            id: "x".into(),
        },
        Error::Conflict {
            kind: "vm".into(),
            id: "x".into(),
            expected: 1,
            found: 2,
        },
        Error::invalid("vm.memory_mib", "too big"),
        Error::InvalidState {
            kind: "vm",
            id: "x".into(),
            state: "running".into(),
            op: "start".into(),
        },
        Error::capacity("no memory"),
        Error::unsupported("pause", "xen"),
        Error::backend("kvm", "VMM died"),
        Error::Timeout {
            what: "stop".into(),
            after: Duration::from_millis(1500),
        },
        Error::Aborted { what: "job".into() },
    ];
    for e in errors {
        let wire = WireError::from(&e);
        let text = serde_json::to_string(&wire).unwrap();
        let back = serde_json::from_str::<WireError>(&text)
            .unwrap()
            .into_error("s1");
        assert_eq!(back.code(), e.code(), "{text}");
        assert_eq!(back.to_string(), e.to_string(), "{text}");
    }
}

#[test]
fn versions_of_one_major_are_compatible() {
    let v: Version = "1.7".parse().unwrap();
    assert!(PROTOCOL.compatible(v));
    assert!(!PROTOCOL.compatible("2.0".parse().unwrap()));
    assert!("x.1".parse::<Version>().is_err());
    assert_eq!(serde_json::to_string(&PROTOCOL).unwrap(), "\"1.0\"");
}

#[test]
fn unknown_fields_and_operations_are_refused() {
    let vm = VmId::new();
    for bad in [
        format!(r#"{{"request_id":"{}","call":{{"op":"start","vm":"{vm}","force":true}}}}"#, uuid::Uuid::new_v4()),
        format!(r#"{{"request_id":"{}","call":{{"op":"format_disk"}}}}"#, uuid::Uuid::new_v4()),
        r#"{"request_id":"nope","call":{"op":"list"}}"#.to_string(),
        r#"{"call":{"op":"list"}}"#.to_string(),
        r#"{"request_id":"00000000-0000-4000-8000-000000000001","call":{"op":"console_write","vm":"6f9c4a52-0d3e-4a63-9c0a-1b2c3d4e5f60","input":"***"}}"#.to_string(),
    ] {
        assert!(serde_json::from_str::<CallRequest>(&bad).is_err(), "{bad}");
    }
}

proptest! {
    /// Whatever arrives, decoding answers: a request or an error, never a panic.
    #[test]
    fn decoding_junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<CallRequest>(&bytes);
        let _ = serde_json::from_slice::<TakeOwnership>(&bytes);
        let _ = serde_json::from_slice::<CallResponse>(&bytes);
        let _ = serde_json::from_slice::<EventBatch>(&bytes);
    }

    /// Mutations of a valid request decode to a request or an error.
    #[test]
    fn mutated_requests_never_panic(pos in 0usize..200, byte in any::<u8>()) {
        let vm = VmId::new();
        let mut text = serde_json::to_vec(&CallRequest {
            request_id: uuid::Uuid::new_v4(),
            call: Call::Define { config: Box::new(VmConfig::new(vm, VmSpec::new("web", 1, 256))) },
        }).unwrap();
        let i = pos % text.len();
        text[i] = byte;
        let _ = serde_json::from_slice::<CallRequest>(&text);
    }
}
