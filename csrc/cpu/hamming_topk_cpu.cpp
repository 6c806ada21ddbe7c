// CPU hamming_topk: bit-packed (weighted) Hamming distance fused with a bounded per-query top-k,
// so no [Q, N] distance matrix is ever materialised.
//
// Contract (shared with the torch reference and the Triton kernel; see vcfbert_fast/ops/hamming.py):
//   query_bits int64 [Q, W], ref_bits int64 [N, W]; site l is bit (l % 64) of word l / 64.
//   weights: undefined (every site weighs 1) or int32 [W * 64], non-negative.
//   dist[q, j] = sum_l w_l * (bit_l(q) XOR bit_l(r)), exact in int64.
//   Returns (dist int64 [Q, k], index int64 [Q, k]), ascending by (dist, index): ties go to the
//   lowest reference row. Bad arguments raise ValueError (TORCH_CHECK_VALUE), with the messages of
//   the Python checker (ops/hamming.py check_args).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define VF_X86 1
#define VF_TARGET_POPCNT __attribute__((target("popcnt")))
#else
#define VF_X86 0
#define VF_TARGET_POPCNT
#endif
#define VF_INLINE inline __attribute__((always_inline))

namespace vcfbert_fast {
namespace {

using Cand = std::pair<int64_t, int64_t>;  // (distance, reference row): lexicographic order is the contract

// Bounded sorted buffer. References arrive in increasing row order, so an equal distance never
// displaces an earlier (lower) row: insert only when strictly better than the current worst.
struct TopK {
  int64_t k;
  std::vector<Cand> buf;
  explicit TopK(int64_t k_) : k(k_) { buf.reserve(static_cast<size_t>(k_)); }
  VF_INLINE int64_t worst() const {
    return static_cast<int64_t>(buf.size()) < k ? INT64_MAX : buf.back().first;
  }
  VF_INLINE void push(int64_t d, int64_t j) {
    if (static_cast<int64_t>(buf.size()) == k) {
      if (d >= buf.back().first) return;
      buf.pop_back();
    }
    // upper_bound on distance keeps earlier rows first among equals.
    auto it = std::upper_bound(buf.begin(), buf.end(), d, [](int64_t v, const Cand& c) { return v < c.first; });
    buf.insert(it, Cand{d, j});
  }
};

VF_INLINE int64_t dist_uniform(const int64_t* q, const int64_t* r, int64_t W) {
  int64_t d = 0;
  for (int64_t w = 0; w < W; ++w) {
    d += __builtin_popcountll(static_cast<uint64_t>(q[w] ^ r[w]));
  }
  return d;
}

// Weighted distances use table[b * 256 + v] = sum of the weights of the set bits of byte value v
// at byte position b (built once per call by byte_tables).

// Distances of query q to rows [j0, j0 + n) (n <= kTile) into d. Weighted: word-major over a tile
// of rows, so one word's 8 byte tables (8 KiB) stay in L1 while the whole tile uses them.
constexpr int64_t kTile = 64;

template <bool kWeighted>
VF_INLINE void tile_distances(const int64_t* q, const int64_t* ref, int64_t W, const int32_t* table, int64_t j0,
                              int64_t n, int64_t* d) {
  if constexpr (!kWeighted) {
    for (int64_t t = 0; t < n; ++t) d[t] = dist_uniform(q, ref + (j0 + t) * W, W);
  } else {
    for (int64_t t = 0; t < n; ++t) d[t] = 0;
    for (int64_t w = 0; w < W; ++w) {
      const int32_t* tb = table + w * 8 * 256;
      const uint64_t qw = static_cast<uint64_t>(q[w]);
      const int64_t* col = ref + j0 * W + w;
      for (int64_t t = 0; t < n; ++t) {
        const uint64_t x = qw ^ static_cast<uint64_t>(col[t * W]);
        d[t] += int64_t{tb[x & 255]} + tb[256 + ((x >> 8) & 255)] + tb[512 + ((x >> 16) & 255)] +
                tb[768 + ((x >> 24) & 255)] + tb[1024 + ((x >> 32) & 255)] + tb[1280 + ((x >> 40) & 255)] +
                tb[1536 + ((x >> 48) & 255)] + tb[1792 + (x >> 56)];
      }
    }
  }
}

// Scan rows [j0, j1) for one query. Small k: bounded insertion buffer. Large k: all distances of
// the block and a partial sort, which beats O(k) insertions.
template <bool kWeighted>
VF_INLINE void scan_block(const int64_t* q, const int64_t* ref, int64_t W, const int32_t* table, int64_t j0,
                          int64_t j1, int64_t k, std::vector<Cand>& result) {
  int64_t d[kTile];
  if (k <= 64) {
    TopK top(std::min(k, j1 - j0));
    for (int64_t j = j0; j < j1; j += kTile) {
      const int64_t n = std::min(kTile, j1 - j);
      tile_distances<kWeighted>(q, ref, W, table, j, n, d);
      for (int64_t t = 0; t < n; ++t) {
        if (d[t] < top.worst()) top.push(d[t], j + t);
      }
    }
    result = std::move(top.buf);
  } else {
    std::vector<Cand> all(static_cast<size_t>(j1 - j0));
    for (int64_t j = j0; j < j1; j += kTile) {
      const int64_t n = std::min(kTile, j1 - j);
      tile_distances<kWeighted>(q, ref, W, table, j, n, d);
      for (int64_t t = 0; t < n; ++t) all[j + t - j0] = Cand{d[t], j + t};
    }
    const int64_t kk = std::min<int64_t>(k, j1 - j0);
    std::partial_sort(all.begin(), all.begin() + kk, all.end());
    all.resize(static_cast<size_t>(kk));
    result = std::move(all);
  }
}

using ScanFn = void (*)(const int64_t*, const int64_t*, int64_t, const int32_t*, int64_t, int64_t, int64_t,
                        std::vector<Cand>&);

template <bool kWeighted>
void scan_generic(const int64_t* q, const int64_t* ref, int64_t W, const int32_t* table, int64_t j0, int64_t j1,
                  int64_t k, std::vector<Cand>& result) {
  scan_block<kWeighted>(q, ref, W, table, j0, j1, k, result);
}

#if VF_X86
// Same code compiled for the POPCNT instruction (every x86-64 CPU since ~2008); chosen at run
// time so the wheel still runs on a CPU without it instead of using -march=native.
template <bool kWeighted>
VF_TARGET_POPCNT void scan_popcnt(const int64_t* q, const int64_t* ref, int64_t W, const int32_t* table, int64_t j0,
                                  int64_t j1, int64_t k, std::vector<Cand>& result) {
  scan_block<kWeighted>(q, ref, W, table, j0, j1, k, result);
}
#endif

ScanFn pick_scan(bool weighted) {
#if VF_X86
  if (__builtin_cpu_supports("popcnt")) return weighted ? &scan_popcnt<true> : &scan_popcnt<false>;
#endif
  return weighted ? &scan_generic<true> : &scan_generic<false>;
}

std::vector<int32_t> byte_tables(const int32_t* w, int64_t W) {
  const int64_t n_bytes = W * 8;
  std::vector<int32_t> table(static_cast<size_t>(n_bytes * 256));
  for (int64_t b = 0; b < n_bytes; ++b) {
    int32_t* t = table.data() + b * 256;
    const int32_t* wb = w + b * 8;
    t[0] = 0;
    // Each value = its value without the lowest set bit + that bit's weight.
    for (int v = 1; v < 256; ++v) t[v] = t[v & (v - 1)] + wb[__builtin_ctz(static_cast<unsigned>(v))];
  }
  return table;
}

std::tuple<at::Tensor, at::Tensor> hamming_topk_cpu(const at::Tensor& query_bits, const at::Tensor& ref_bits,
                                                    const std::optional<at::Tensor>& weights, int64_t k) {
  TORCH_CHECK_VALUE(query_bits.dim() == 2 && ref_bits.dim() == 2,
                    "hamming_topk: query_bits [Q, W] and ref_bits [N, W] must be 2-D, got ", query_bits.sizes(),
                    " and ", ref_bits.sizes(), "; pack alleles with pack_bits");
  TORCH_CHECK_VALUE(query_bits.scalar_type() == at::kLong && ref_bits.scalar_type() == at::kLong,
                    "hamming_topk: bit-packed words must be int64, got ", query_bits.scalar_type(), " and ",
                    ref_bits.scalar_type());
  TORCH_CHECK_VALUE(query_bits.size(1) == ref_bits.size(1), "hamming_topk: query_bits has ", query_bits.size(1),
                    " words per row but ref_bits has ", ref_bits.size(1), "; pack both over the same sites");
  TORCH_CHECK_VALUE(query_bits.device().is_cpu() && ref_bits.device().is_cpu(), "hamming_topk: query_bits on ",
                    query_bits.device(), " but ref_bits on ", ref_bits.device());
  const int64_t Q = query_bits.size(0), N = ref_bits.size(0), W = query_bits.size(1);
  TORCH_CHECK_VALUE(k >= 1 && k <= N, "hamming_topk: k = ", k, " must lie in [1, N] with N = ", N,
                    " reference rows; lower k or add references");

  const at::Tensor q = query_bits.contiguous();
  const at::Tensor r = ref_bits.contiguous();
  std::vector<int32_t> table;
  const bool weighted = weights.has_value() && weights->defined();
  if (weighted) {
    const at::Tensor& w = *weights;
    TORCH_CHECK_VALUE(w.dim() == 1 && w.size(0) == W * 64 && w.scalar_type() == at::kInt,
                      "hamming_topk: weights must be int32 [W * 64] = [", W * 64,
                      "] (one per bit, zero-padded), got ", w.scalar_type(), " ", w.sizes(),
                      "; quantise them with quantize_weights");
    TORCH_CHECK_VALUE(w.device().is_cpu(), "hamming_topk: weights on ", w.device(), " but the bits on cpu");
    const at::Tensor wc = w.contiguous();
    const int32_t* wp = wc.const_data_ptr<int32_t>();
    for (int64_t l = 0; l < W * 64; ++l) {
      TORCH_CHECK_VALUE(wp[l] >= 0, "hamming_topk: weights must be non-negative, got weights[", l, "] = ", wp[l]);
    }
    table = byte_tables(wp, W);
  }

  at::Tensor dist = at::empty({Q, k}, q.options());
  at::Tensor index = at::empty({Q, k}, q.options());
  if (Q == 0) return {dist, index};

  const int64_t* qp = q.const_data_ptr<int64_t>();
  const int64_t* rp = r.const_data_ptr<int64_t>();
  int64_t* dp = dist.mutable_data_ptr<int64_t>();
  int64_t* ip = index.mutable_data_ptr<int64_t>();
  const int32_t* tp = weighted ? table.data() : nullptr;
  const ScanFn scan = pick_scan(weighted);

  // Few queries: also split the references into chunks (each a partial top-k, merged after), so
  // every thread has work. Chunks keep >= 512 rows so the merge stays negligible.
  const int64_t threads = at::get_num_threads();
  int64_t chunks = 1;
  if (Q < threads) chunks = std::max<int64_t>(1, std::min<int64_t>((threads + Q - 1) / Q, N / 512));
  const int64_t chunk_rows = (N + chunks - 1) / chunks;
  std::vector<std::vector<Cand>> partial(static_cast<size_t>(Q * chunks));

  at::parallel_for(0, Q * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t qi = t / chunks, c = t % chunks;
      const int64_t j0 = c * chunk_rows, j1 = std::min(N, j0 + chunk_rows);
      if (j0 >= j1) continue;
      scan(qp + qi * W, rp, W, tp, j0, j1, k, partial[static_cast<size_t>(t)]);
    }
  });

  for (int64_t qi = 0; qi < Q; ++qi) {
    std::vector<Cand>* best = &partial[static_cast<size_t>(qi * chunks)];
    std::vector<Cand> merged;
    if (chunks > 1) {
      for (int64_t c = 0; c < chunks; ++c) {
        auto& p = partial[static_cast<size_t>(qi * chunks + c)];
        merged.insert(merged.end(), p.begin(), p.end());
      }
      std::sort(merged.begin(), merged.end());
      best = &merged;
    }
    TORCH_INTERNAL_ASSERT(static_cast<int64_t>(best->size()) >= k);
    for (int64_t i = 0; i < k; ++i) {
      dp[qi * k + i] = (*best)[static_cast<size_t>(i)].first;
      ip[qi * k + i] = (*best)[static_cast<size_t>(i)].second;
    }
  }
  return {dist, index};
}

}  // namespace

TORCH_LIBRARY_IMPL(vcfbert_fast, CPU, m) { m.impl("hamming_topk", &hamming_topk_cpu); }

}  // namespace vcfbert_fast
