//! Property tests of the core's two decoders of untrusted input (issue 12):
//! the policy weights reader (`from_safetensors`) and the experience check
//! (`Rollout::validate`). Random bytes, adversarial safetensors headers
//! (huge declared lengths, shapes, offsets and specs) and rollouts with
//! extreme values never panic, and the reader never reserves memory the
//! input cannot back: this test binary's allocator records the largest
//! single allocation of each thread, which must stay within a small
//! multiple of the input's length.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use peergrid_core::experience::{
    Rollout, MAX_ABS_OBSERVATION, MAX_ABS_REWARD, MAX_ABS_VALUE, MAX_GRID_IMPORT_KWH,
};
use peergrid_core::observation::OBS_DIM;
use peergrid_core::policy::weights::{from_safetensors, to_safetensors, PolicyWeights, FORMAT};
use peergrid_core::policy::{ActorCritic, MlpSpec, ObsNormaliser, ACT_DIM};
use peergrid_core::CoreError;
use proptest::collection::vec;
use proptest::prelude::*;

/// The system allocator, recording the largest allocation per thread.
struct Recording;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown are not recorded.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method forwards to the system allocator with the caller's
// own arguments, so `Recording` upholds `GlobalAlloc`'s contract exactly as
// `System` does; recording a size allocates nothing.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Runs `f` and returns its result with the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// What the reader may allocate for an input of `len` bytes: the decoded
/// floats and their transposed copies are a few times the input, plus
/// fixed-size bookkeeping.
fn allowed(len: usize) -> usize {
    8 * len + (64 << 10)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// A safetensors blob from a header (JSON) and a data section.
fn blob(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn metadata(spec_json: &str) -> serde_json::Value {
    serde_json::json!({
        "format": FORMAT,
        "spec": spec_json,
        "obs_norm.clip": "10",
        "obs_norm.epsilon": "1e-8",
        "version": "3",
    })
}

fn hostile_dim() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 1u64..8, 4 => Just(4096), 1 => Just(4097), 1 => Just(u32::MAX as u64), 1 => Just(u64::MAX), 1 => Just(1 << 40)]
}

/// Headers whose claims (spec, shapes, offsets) are far beyond the data.
fn adversarial_blob() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(hostile_dim(), 1..9),
        hostile_dim(),
        hostile_dim(),
        // No tensors (the header alone claims a network) or a few with absurd shapes and offsets.
        prop_oneof![2 => Just(vec![]), 1 => vec((hostile_dim(), hostile_dim(), hostile_dim(), hostile_dim()), 1..4)],
        prop_oneof![Just("F32"), Just("F64"), Just("BF16"), Just("U8"), Just("bogus")],
        prop_oneof![2 => Just(0usize), 1 => 0usize..64],
    )
        .prop_map(|(hidden, obs_dim, act_dim, tensors, dtype, data_len)| {
            let spec = serde_json::json!({ "obs_dim": obs_dim, "act_dim": act_dim, "hidden": hidden }).to_string();
            let mut header = serde_json::Map::new();
            header.insert("__metadata__".into(), metadata(&spec));
            for (i, (rows, cols, start, end)) in tensors.into_iter().enumerate() {
                let name = if i == 0 { "actor.0.weight".to_owned() } else { format!("t{i}") };
                header.insert(name, serde_json::json!({ "dtype": dtype, "shape": [rows, cols], "data_offsets": [start, end] }));
            }
            blob(&serde_json::Value::Object(header).to_string(), &vec![0u8; data_len])
        })
}

fn hostile_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1.0f32..1.0,
        1 => Just(1e38f32),
        1 => Just(-1e38f32),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN),
        1 => Just(f32::MIN_POSITIVE / 16.0),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(MAX_ABS_OBSERVATION),
        1 => Just(MAX_ABS_VALUE * 1.0001),
        1 => any::<f32>(),
    ]
}

fn small_weights(hidden: Vec<usize>, seed: u64) -> PolicyWeights {
    let spec = MlpSpec { hidden, ..MlpSpec::default() };
    PolicyWeights {
        net: ActorCritic::random(&spec, seed),
        normaliser: ObsNormaliser::identity(OBS_DIM),
        version: 9,
    }
}

fn named(e: &CoreError) -> bool {
    matches!(e, CoreError::InvalidField { field, reason } if !field.is_empty() && !reason.is_empty())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_are_refused_without_panic_or_large_allocation(bytes in vec(any::<u8>(), 0..256), prefix in any::<u64>()) {
        // Both raw bytes and bytes behind a plausible (or absurd) header length.
        let mut framed = prefix.to_le_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        for input in [&bytes[..], &framed[..]] {
            let (result, largest) = largest_allocation(|| from_safetensors(input));
            let e = result.unwrap_err();
            prop_assert!(named(&e), "{e:?}");
            prop_assert!(largest <= allowed(input.len()), "{largest} bytes allocated for {} input bytes", input.len());
        }
    }

    #[test]
    fn adversarial_headers_are_refused_without_large_allocation(bytes in adversarial_blob()) {
        let (result, largest) = largest_allocation(|| from_safetensors(&bytes));
        let e = result.unwrap_err();
        prop_assert!(named(&e), "{e:?}");
        prop_assert!(largest <= allowed(bytes.len()), "{largest} bytes allocated for {} input bytes: {e}", bytes.len());
    }

    #[test]
    fn valid_weights_round_trip_and_corruptions_are_refused_or_valid(
        hidden in vec(1usize..8, 1..3),
        seed in any::<u64>(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let w = small_weights(hidden, seed);
        let mut bytes = to_safetensors(&w).unwrap();
        prop_assert_eq!(from_safetensors(&bytes).unwrap(), w);
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        let (result, largest) = largest_allocation(|| from_safetensors(&bytes));
        match result {
            // A flip in the data section can leave a valid (different) policy.
            Ok(w) => {
                let flat = w.net.to_flat();
                prop_assert!(flat.iter().chain(&w.normaliser.mean).chain(&w.normaliser.var).all(|v| v.is_finite()));
            }
            Err(e) => prop_assert!(named(&e), "{e:?}"),
        }
        prop_assert!(largest <= allowed(bytes.len()), "{largest} bytes for {}", bytes.len());
    }

    #[test]
    fn rollouts_with_extreme_values_are_refused_by_name_or_within_bounds(
        steps in prop_oneof![1usize..4, Just(0usize), Just(usize::MAX), Just(100_001usize)],
        p in 1usize..4,
        values in vec(hostile_f32(), 8),
        at in any::<prop::sample::Index>(),
        ids_descending in prop::bool::weighted(0.2),
    ) {
        let real_steps = steps.clamp(1, 3);
        let n = real_steps * p;
        let mut r = Rollout {
            node_name: "n".into(),
            policy_version: 1,
            first_slot: 0,
            steps,
            prosumer_ids: (0..p as u32).collect(),
            observations: vec![0.5; n * OBS_DIM],
            actions: vec![0.1; n * ACT_DIM],
            log_probs: vec![-1.0; n],
            values: vec![0.0; n],
            rewards: vec![1.0; n],
            dones: vec![false; n],
            bootstrap_values: vec![0.0; p],
            costs: vec![0.2; n],
            grid_import_kwh: vec![1.0; n],
        };
        if ids_descending {
            r.prosumer_ids.reverse();
        }
        // One hostile value into each array, at a random position.
        let arrays: [&mut Vec<f32>; 8] = [
            &mut r.observations, &mut r.actions, &mut r.log_probs, &mut r.values, &mut r.rewards,
            &mut r.bootstrap_values, &mut r.costs, &mut r.grid_import_kwh,
        ];
        for (array, v) in arrays.into_iter().zip(&values) {
            if !array.is_empty() {
                let i = at.index(array.len());
                array[i] = *v;
            }
        }
        match r.validate() {
            Ok(()) => {
                prop_assert!((1..=100_000).contains(&r.steps));
                for v in r.observations.iter().chain(&r.rewards).chain(&r.costs).chain(&r.values).chain(&r.bootstrap_values) {
                    prop_assert!(v.is_finite() && v.abs() <= MAX_ABS_VALUE.max(MAX_ABS_REWARD));
                    prop_assert!((v * v).is_finite());
                }
                prop_assert!(r.grid_import_kwh.iter().all(|v| (0.0..=MAX_GRID_IMPORT_KWH).contains(v)));
            }
            Err(e) => prop_assert!(named(&e), "{e:?}"),
        }
    }
}

/// The finding this file guards: a few hundred bytes declaring 8 hidden
/// layers of 4,096 units made the reader reserve ~0.9 GB before checking
/// that the blob holds the tensors. Now the spec is refused by name.
#[test]
fn a_spec_larger_than_the_blob_is_refused_by_name_before_reserving() {
    let spec =
        serde_json::json!({ "obs_dim": 4096, "act_dim": 64, "hidden": vec![4096; 8] }).to_string();
    let header = serde_json::json!({ "__metadata__": metadata(&spec) }).to_string();
    let bytes = blob(&header, &[]);
    let (result, largest) = largest_allocation(|| from_safetensors(&bytes));
    let e = result.unwrap_err().to_string();
    assert!(e.contains("weights.metadata.spec") && e.contains("the blob holds"), "{e}");
    assert!(
        largest <= allowed(bytes.len()),
        "{largest} bytes allocated for a {}-byte blob",
        bytes.len()
    );
}
