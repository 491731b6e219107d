//! Batch loader benchmark: loads per second of N random keys through the batch loader
//! (misses coalesced into per-table fetches of up to 1000 keys, rows pinned) against one
//! fetch request per key, all issued at once, over QUIC on loopback.
//!
//! Every iteration asks for keys the client does not hold: the loader's pins are released
//! after each iteration, outside the timed part.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sluice::client::{Client, ClientConfig, ConnectionState, ServerAddress};
use sluice::server::{Server, ServerHandle};
use sluice::store::{Mutation, WriteTxn};
use sluice::Value;

/// Rows on the server to pick keys from.
const USERS: usize = 20_000;

fn key(i: usize) -> Value {
    Value::Text(format!("u{i:05}"))
}

async fn setup(dir: &Path) -> (ServerHandle, Arc<Client>) {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schema");
    let server = Server::builder(schema, dir.join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .no_auth()
        .start()
        .await
        .unwrap();
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(5000) {
        let mutations = chunk
            .iter()
            .map(|&i| Mutation::Insert {
                table: "users".into(),
                values: vec![
                    ("id".into(), key(i)),
                    ("name".into(), Value::Text(format!("user {i}"))),
                    ("email".into(), Value::Text(format!("u{i}@example.com"))),
                ],
            })
            .collect();
        let txn = WriteTxn {
            origin: None,
            mutations,
            preconditions: Vec::new(),
        };
        server.write(txn).await.unwrap();
    }
    let address = ServerAddress::new(server.local_addr(), server.cert_path().unwrap());
    let client = Client::open(ClientConfig::new(dir.join("client.db")).server(address))
        .await
        .unwrap();
    let mut state = client.state();
    while !matches!(*state.borrow_and_update(), ConnectionState::Online) {
        state.changed().await.unwrap();
    }
    (server, Arc::new(client))
}

async fn through_loader(client: &Arc<Client>, keys: &[Value]) -> Duration {
    let start = Instant::now();
    let rows = client.load_many("users", keys.to_vec()).await.unwrap();
    let elapsed = start.elapsed();
    assert!(rows.iter().all(Option::is_some));
    client.unpin_many("users", keys.to_vec()).await.unwrap();
    elapsed
}

async fn one_request_per_key(client: &Arc<Client>, keys: &[Value]) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in keys {
        let (client, k) = (client.clone(), k.clone());
        tasks.spawn(async move { client.fetch("users", vec![k]).await.unwrap().len() });
    }
    let mut found = 0;
    while let Some(n) = tasks.join_next().await {
        found += n.unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(found, keys.len());
    elapsed
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = runtime.block_on(setup(dir.path()));
    let mut rng = StdRng::seed_from_u64(7);
    let all: Vec<usize> = (0..USERS).collect();
    let mut group = c.benchmark_group("batch_loader");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for n in [100usize, 1000] {
        group.throughput(Throughput::Elements(n as u64));
        let mut pick =
            || -> Vec<Value> { all.choose_multiple(&mut rng, n).map(|&i| key(i)).collect() };
        group.bench_with_input(BenchmarkId::new("loader", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let keys = pick();
                    total += runtime.block_on(through_loader(&client, &keys));
                }
                total
            })
        });
        group.bench_with_input(BenchmarkId::new("per_key", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let keys = pick();
                    total += runtime.block_on(one_request_per_key(&client, &keys));
                }
                total
            })
        });
    }
    group.finish();
    let stats = client.fetch_stats();
    println!(
        "fetch requests {}, keys {}, coalesced {}",
        stats.requests, stats.keys, stats.coalesced
    );
    runtime.block_on(async move {
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await;
        }
        server.shutdown().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
