//! The event contract: the decoder takes any bytes without panicking, every event encodes and
//! decodes to itself in both framings, and composite keys keep different keys apart.

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use tandem_event::{canonical_key, ChangeEvent, Codec, Framing, Kind, Row, Value};

use crate::check;

fn codecs() -> Vec<Codec> {
    [Framing::SingleObject, Framing::Confluent { schema_id: 7 }]
        .into_iter()
        .map(|framing| Codec::new(framing).unwrap_or_else(|e| panic!("codec: {e}")))
        .collect()
}

/// Any column value; doubles are any but NaN, which equals nothing, itself included.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Long),
        any::<f64>()
            .prop_filter("NaN", |d| !d.is_nan())
            .prop_map(Value::Double),
        ".*".prop_map(Value::String),
        vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    btree_map(".{0,12}", value(), 0..8)
}

fn event() -> impl Strategy<Value = ChangeEvent> {
    (
        (
            ".*",
            proptest::sample::select(Kind::ALL.to_vec()),
            ".*",
            ".*",
        ),
        (
            any::<i64>(),
            any::<i64>(),
            option::of(row()),
            option::of(".*"),
        ),
        (any::<i64>(), any::<i64>()),
    )
        .prop_map(
            |((account, kind, entity_type, entity_id), (epoch, version, data, snapshot), at)| {
                let mut event =
                    ChangeEvent::new(&account, kind, &entity_type, &entity_id, epoch, version);
                event.data = data;
                event.snapshot_id = snapshot;
                (event.occurred_at, event.detected_at) = at;
                event
            },
        )
}

#[test]
fn every_event_decodes_to_itself_in_both_framings() {
    let codecs = codecs();
    check("event round trip", event(), |event| {
        for codec in &codecs {
            let bytes = codec
                .encode(&event)
                .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
            let back = codec
                .decode(&bytes)
                .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
            prop_assert_eq!(&back, &event);
        }
        Ok(())
    });
}

#[test]
fn the_decoder_never_panics_on_arbitrary_bytes() {
    let codecs = codecs();
    check(
        "decode arbitrary bytes",
        vec(any::<u8>(), 0..512),
        |bytes| {
            for codec in &codecs {
                let _ = codec.decode(&bytes);
            }
            Ok(())
        },
    );
}

/// Bytes behind a valid header reach the Avro reader itself: lengths, unions, enums out of
/// range, and strings that are not UTF-8 must all come back as errors.
#[test]
fn the_decoder_never_panics_behind_a_valid_header() {
    let codecs = codecs();
    let headers: Vec<Vec<u8>> = codecs
        .iter()
        .map(|codec| {
            let bytes = codec
                .encode(&ChangeEvent::new("a", Kind::Created, "t", "1", 0, 0))
                .unwrap_or_else(|e| panic!("encode: {e}"));
            let header = if bytes[0] == 0 { 5 } else { 10 };
            bytes[..header].to_vec()
        })
        .collect();
    check(
        "decode a valid header and arbitrary bytes",
        (0..headers.len(), vec(any::<u8>(), 0..512)),
        |(which, body)| {
            let mut bytes = headers[which].clone();
            bytes.extend(body);
            let _ = codecs[which].decode(&bytes);
            Ok(())
        },
    );
}

/// A real message with bytes changed, cut short or lengthened is decoded or refused, never a
/// panic.
#[test]
fn the_decoder_never_panics_on_a_damaged_message() {
    let codecs = codecs();
    check(
        "decode a damaged message",
        (
            event(),
            0..2usize,
            vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            any::<prop::sample::Index>(),
        ),
        |(event, which, flips, cut)| {
            let codec = &codecs[which];
            let mut bytes = codec
                .encode(&event)
                .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
            for (at, byte) in flips {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = codec.decode(&bytes);
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = codec.decode(&bytes);
            Ok(())
        },
    );
}

/// Two different keys of the same columns never share a canonical string (`|` and `\` inside
/// a part are escaped), so two legacy rows never map to one cloud document.
#[test]
fn different_composite_keys_have_different_canonical_strings() {
    let part = prop_oneof![
        "[a-z|\\\\]{0,4}".prop_map(Value::String),
        ".{0,6}".prop_map(Value::String),
    ];
    check(
        "canonical keys are injective",
        (1..4usize).prop_flat_map(move |n| (vec(part.clone(), n), vec(part.clone(), n))),
        |(a, b)| {
            if a != b {
                prop_assert_ne!(canonical_key(&a), canonical_key(&b));
            }
            Ok(())
        },
    );
}
