//! `tandem-garbage`: writes messages that are no change event to a topic, keyed by account so
//! that they land among those accounts' events, for the garbage scenario of `tests/chaos.sh`.
//!
//!   tandem-garbage BROKERS TOPIC COUNT SPREAD_SECONDS KEY…
//!
//! The kinds are those `tests/dead_letters.rs` sends: text, the Avro single-object marker with
//! a fingerprint no schema has, Confluent framing with a schema id nobody registered, an empty
//! message and random bytes. Prints `sent N` once every message was acknowledged.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

fn garbage(i: usize, rng: &mut impl Rng) -> Vec<u8> {
    match i % 5 {
        0 => format!("not avro at all #{i}").into_bytes(),
        1 => {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend(rng.random::<[u8; 8]>());
            bytes.push(i as u8);
            bytes
        }
        2 => vec![0, 0, 0, 0, 42, 2, 4],
        3 => Vec::new(),
        _ => {
            let len = rng.random_range(1..=200);
            (0..len).map(|_| rng.random()).collect()
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, count, spread, keys @ ..] = args.as_slice() else {
        anyhow::bail!("usage: tandem-garbage BROKERS TOPIC COUNT SPREAD_SECONDS KEY…");
    };
    let count: usize = count.parse()?;
    let spread = Duration::from_secs_f64(spread.parse()?);
    anyhow::ensure!(!keys.is_empty(), "name at least one key (an account)");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // In chunks of 100, spread evenly over SPREAD_SECONDS.
    let chunks = count.div_ceil(100).max(1);
    let pause = spread / u32::try_from(chunks)?;
    let mut sent = 0;
    while sent < count {
        let chunk: Vec<(usize, Vec<u8>)> = (sent..count.min(sent + 100))
            .map(|i| (i, garbage(i, &mut rng)))
            .collect();
        let deliveries = chunk.iter().map(|(i, payload)| {
            let record = FutureRecord::to(topic)
                .key(keys[i % keys.len()].as_bytes())
                .payload(payload.as_slice());
            producer.send(record, Duration::from_secs(60))
        });
        for delivery in futures::future::join_all(deliveries).await {
            delivery.map_err(|(e, _)| anyhow::anyhow!("after {sent} messages: {e}"))?;
            sent += 1;
        }
        tokio::time::sleep(pause).await;
    }
    println!("sent {sent}");
    Ok(())
}
