//! Clearing latency: the uniform auction from 10² to 10⁶ orders, pay-as-bid
//! at 10⁴ and 10⁵.
//!
//! Books are seeded and random: half bids, half asks, limit prices uniform in
//! [0.05, 0.30)/kWh, quantities 1..5000 Wh, so roughly half the volume
//! crosses. The uniform runs reuse one `ClearingScratch`, as the simulator
//! does. Targets on a 2-core machine: 10³ < 50 µs, 10⁵ < 5 ms, 10⁶ < 50 ms.
//! This measures; it never asserts times.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use peergrid_core::market::{
    clear_pay_as_bid, clear_uniform_price_into, Clearing, ClearingScratch, Order, PairPricing, Side,
};
use peergrid_core::rng::SeededRng;
use peergrid_core::units::{PricePerKwh, Wh};

fn random_book(orders: usize, seed: u64) -> Vec<Order> {
    let mut rng = SeededRng::new(seed);
    (0..orders as u64)
        .map(|id| Order {
            id,
            side: if id % 2 == 0 { Side::Buy } else { Side::Sell },
            quantity: Wh(1 + rng.below(5000) as i64),
            limit_price: PricePerKwh((rng.uniform(0.05, 0.30) * 1e6) as i64),
        })
        .collect()
}

/// Big books get fewer samples so the whole bench stays at a few minutes.
fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    orders: usize,
) {
    group.throughput(Throughput::Elements(orders as u64));
    let (samples, seconds) = match orders {
        n if n >= 1_000_000 => (10, 5),
        n if n >= 100_000 => (20, 4),
        _ => (50, 2),
    };
    group
        .sample_size(samples)
        .measurement_time(Duration::from_secs(seconds))
        .warm_up_time(Duration::from_secs(1));
}

fn uniform(c: &mut Criterion) {
    let mut group = c.benchmark_group("uniform");
    for orders in [100, 1_000, 10_000, 100_000, 1_000_000] {
        let book = random_book(orders, 7);
        let mut scratch = ClearingScratch::new();
        let mut out = Clearing::default();
        configure(&mut group, orders);
        group.bench_with_input(BenchmarkId::from_parameter(orders), &book, |b, book| {
            b.iter(|| clear_uniform_price_into(black_box(book), 0.5, &mut scratch, &mut out));
        });
    }
    group.finish();
}

fn pay_as_bid(c: &mut Criterion) {
    let mut group = c.benchmark_group("pay_as_bid");
    for orders in [10_000, 100_000] {
        let book = random_book(orders, 7);
        configure(&mut group, orders);
        group.bench_with_input(BenchmarkId::from_parameter(orders), &book, |b, book| {
            b.iter(|| clear_pay_as_bid(black_box(book), PairPricing::BuyerLimit));
        });
    }
    group.finish();
}

criterion_group!(benches, uniform, pay_as_bid);
criterion_main!(benches);
