//! In-process hot paths of every call: framing a request and decoding frames from the bytes a
//! socket delivers (whole, and in the small pieces a loaded socket hands over).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ttrpc_client::frame::{encode, FrameDecoder};

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [64usize, 4096, 1 << 20] {
        let payload = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encode {size} B"), |b| {
            b.iter(|| encode(1, 1, 0, std::hint::black_box(&payload)))
        });
        let wire = encode(1, 2, 0, &payload);
        group.bench_function(format!("decode {size} B whole"), |b| {
            b.iter_batched(
                FrameDecoder::default,
                |mut d| d.push(std::hint::black_box(&wire)).unwrap(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("decode {size} B in 1 KiB pieces"), |b| {
            b.iter_batched(
                FrameDecoder::default,
                |mut d| {
                    let mut n = 0;
                    for piece in wire.chunks(1024) {
                        n += d.push(piece).unwrap().len();
                    }
                    n
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
