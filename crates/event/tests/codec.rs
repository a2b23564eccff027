use std::collections::BTreeSet;

use tandem_event::{ChangeEvent, Codec, Error, Framing, Kind, Row, Value, SCHEMA_FILES};

fn sample(kind: Kind) -> ChangeEvent {
    let mut event = ChangeEvent::new("acme-01", kind, "tenancies", "7|2024", 3, 1_234_567);
    let mut row = Row::new();
    row.insert("id".into(), Value::Long(7));
    row.insert("rent".into(), Value::String("1250.50".into()));
    row.insert("active".into(), Value::Boolean(true));
    row.insert("ratio".into(), Value::Double(0.25));
    row.insert("note".into(), Value::Null);
    row.insert("blob".into(), Value::Bytes(vec![0, 159, 255]));
    row.insert("start".into(), Value::String("2026-11-22T00:00:00Z".into()));
    event.data = Some(row);
    event.snapshot_id = Some("snap-1".into());
    event.occurred_at = 1_790_000_000_000;
    event.detected_at = 1_790_000_000_123;
    event
}

#[test]
fn every_kind_round_trips_in_both_framings() -> Result<(), Error> {
    for framing in [Framing::SingleObject, Framing::Confluent { schema_id: 42 }] {
        let codec = Codec::new(framing)?;
        for kind in Kind::ALL {
            let event = sample(kind);
            assert_eq!(codec.decode(&codec.encode(&event)?)?, event);
            let mut bare = ChangeEvent::new("a", kind, "", "", 0, 0);
            bare.data = None;
            assert_eq!(codec.decode(&codec.encode(&bare)?)?, bare);
        }
    }
    Ok(())
}

/// A reader told which schema a Confluent id stands for (by a registry or a map file) reads
/// messages framed with that id, written by a producer it shares no settings with; ids it was
/// not told of stay unknown.
#[test]
fn confluent_ids_learned_from_a_registry_are_read() -> Result<(), Error> {
    let event = sample(Kind::Updated);
    let bytes = Codec::new(Framing::Confluent { schema_id: 7 })?.encode(&event)?;
    let reader = Codec::default();
    assert!(matches!(
        reader.decode(&bytes),
        Err(Error::UnknownSchemaId { id: 7 })
    ));
    let (_, current) = SCHEMA_FILES[SCHEMA_FILES.len() - 1];
    reader.learn_confluent_schema(7, current)?;
    assert_eq!(reader.decode(&bytes)?, event);
    let other = Codec::new(Framing::Confluent { schema_id: 8 })?.encode(&event)?;
    assert!(matches!(
        reader.decode(&other),
        Err(Error::UnknownSchemaId { id: 8 })
    ));
    assert!(reader.learn_confluent_schema(9, "{not a schema").is_err());
    Ok(())
}

#[test]
fn framing_headers_are_as_specified() -> Result<(), Error> {
    let event = sample(Kind::Created);
    let single = Codec::new(Framing::SingleObject)?.encode(&event)?;
    assert_eq!(&single[..2], &[0xC3, 0x01]);
    let confluent = Codec::new(Framing::Confluent { schema_id: 258 })?.encode(&event)?;
    assert_eq!(&confluent[..5], &[0, 0, 0, 1, 2]);
    assert_eq!(
        single.len() - 10,
        confluent.len() - 5,
        "same Avro body after the header"
    );
    Ok(())
}

#[test]
fn bad_bytes_are_rejected_with_a_reason() -> Result<(), Error> {
    let codec = Codec::default();
    let good = codec.encode(&sample(Kind::Updated))?;
    assert!(matches!(codec.decode(b""), Err(Error::Truncated { .. })));
    assert!(matches!(
        codec.decode(b"hello world"),
        Err(Error::BadMagic { .. })
    ));
    let mut unknown = good.clone();
    unknown[2] ^= 0xFF;
    assert!(matches!(
        codec.decode(&unknown),
        Err(Error::UnknownFingerprint { .. })
    ));
    assert!(matches!(
        codec.decode(&good[..good.len() - 3]),
        Err(Error::Body(_))
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(codec.decode(&trailing), Err(Error::Body(_))));
    assert!(matches!(
        codec.decode(&[0, 0, 0, 0, 9, 1]),
        Err(Error::UnknownSchemaId { id: 9 })
    ));
    Ok(())
}

/// Replays read old events: whatever schema file is kept in `schemas/`, an event written with it
/// decodes with the current reader.
#[test]
fn events_written_with_every_kept_schema_decode() -> Result<(), Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("change_event") && name.ends_with(".avsc"))
        .collect();
    let built_in: BTreeSet<String> = SCHEMA_FILES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        on_disk, built_in,
        "schemas/ and SCHEMA_FILES must list the same files"
    );
    for (file, text) in SCHEMA_FILES {
        assert_eq!(std::fs::read_to_string(format!("{dir}/{file}"))?, *text);
    }

    let codec = Codec::default();
    for (file, _) in SCHEMA_FILES {
        for kind in Kind::ALL {
            let event = sample(kind);
            let bytes = codec.encode_with_schema(&event, file)?;
            assert_eq!(codec.decode(&bytes)?, event, "written with {file}");
        }
    }
    Ok(())
}
