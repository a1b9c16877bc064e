//! Reference-simulator throughput: prosumer-steps per second on one thread
//! (observe, act, safety filter, clear, settle, battery update, KPIs), for
//! N = 1,000 … 100,000 prosumers on a seeded synthetic dataset, with the
//! rule-based policy and with the MLP policy; plus the MLP forward pass alone.
//!
//! Run: `cargo bench -p peergrid-core --bench simulation`
//! (add `RUSTFLAGS="-C target-cpu=x86-64-v3"` to compare a wider CPU target).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use peergrid_core::data::synthetic::synthetic_dataset;
use peergrid_core::policy::Scratch;
use peergrid_core::policy::{ActorCritic, MlpPolicy, MlpSpec, ObsNormaliser, Policy, RuleBased};
use peergrid_core::prosumer::{generate_community, CommunityConfig};
use peergrid_core::simulation::{SimConfig, Simulation};

const SLOTS: usize = 24;

type MakePolicy = Box<dyn Fn() -> Box<dyn Policy>>;

fn bench_simulation(c: &mut Criterion) {
    let ds = Arc::new(synthetic_dataset(17, 14, 60, 1));
    let mut group = c.benchmark_group("simulation");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for &n in &[1_000usize, 10_000, 100_000] {
        let prosumers = generate_community(
            &ds,
            &CommunityConfig { n_prosumers: n, seed: 1, ..Default::default() },
        )
        .unwrap();
        group.throughput(Throughput::Elements((n * SLOTS) as u64));
        let mlp = MlpPolicy::new(
            ActorCritic::random(&MlpSpec::default(), 1),
            ObsNormaliser::identity(peergrid_core::observation::OBS_DIM),
        )
        .unwrap();
        let policies: [(&str, MakePolicy); 2] = [
            ("rule-based", Box::new(|| Box::new(RuleBased))),
            ("mlp", Box::new(move || Box::new(mlp.clone()))),
        ];
        for (name, make) in &policies {
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |b, _| {
                b.iter_batched(
                    || {
                        (
                            Simulation::new(
                                ds.clone(),
                                prosumers.clone(),
                                SimConfig::default(),
                                (24..24 + SLOTS).collect(),
                            )
                            .unwrap(),
                            make(),
                        )
                    },
                    |(mut sim, mut policy)| black_box(sim.run(policy.as_mut())),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn bench_mlp_forward(c: &mut Criterion) {
    let spec = MlpSpec::default();
    let net = ActorCritic::random(&spec, 3);
    let x: Vec<f32> = (0..spec.obs_dim).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut scratch = Scratch::default();
    let mut mean = [0.0f32; 3];
    c.bench_function("mlp_forward_64x64", |b| {
        b.iter(|| {
            net.mean(black_box(&x), &mut scratch, &mut mean);
            black_box(mean)
        })
    });
}

criterion_group!(benches, bench_simulation, bench_mlp_forward);
criterion_main!(benches);
