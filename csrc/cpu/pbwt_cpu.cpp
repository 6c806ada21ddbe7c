// Haplotype matching over typed markers: for each query haplotype and selection point, the K
// reference rows whose exact match with the query runs longest left + right from the point.
// The contract, shared with the numpy reference (vcfbert_fast/ops/pbwt.py):
//
//   ref_bits int64 [N, W]: reference alleles at the T typed markers, marker m at bit m % 64 of
//     word m / 64 (pack_bits), padding bits zero. query int8 [Q, T]: 0/1, -1 = missing call.
//   Boundary b in [0, T] sits between marker b - 1 and marker b.
//   left(r, b)  = number of markers b-1, b-2, ... (consecutive, stopping at 0) where r equals q;
//   right(r, b) = number of markers b, b+1, ... (stopping at T) where r equals q.
//   A missing query call equals any allele (it is no evidence, so it never breaks a run).
//   At each point b = points[p]: the K rows of largest left + right, ties broken by the seeded
//   hash h(seed, query_id, b, row) (ascending), then by row; rows in exclude[q] (-1 = none) never
//   appear. Fewer than K eligible rows: the tail is -1 (rows) and -1 (lengths).
//
// How (the exact fast path, queries without missing calls): a forward PBWT sweep (Durbin 2014,
// algorithm 2) keeps the panel sorted by reversed prefixes with divergence arrays; each query's
// insertion position is carried marker to marker (an FM-index-like step). In that order the rows
// come out in decreasing left(r, b) by walking outward from the query with running minima of the
// divergence. A reverse sweep does the same for right(r, b). At each point the two lazy walks
// feed a threshold algorithm (Fagin): every row pulled gets its other length by a bit-packed
// comparison, and the walk stops when the K-th best score exceeds the best score any unseen row
// could have (left front + right front), so the answer is exact, ties included. Queries with
// missing calls (their runs are not prefix-sorted) take the brute-force path over every row,
// which is exact too. Points are processed in parallel over queries (at::parallel_for).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace vcfbert_fast {
namespace {

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser (the numpy reference copies it)
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

inline uint64_t tie_hash(uint64_t seed, uint64_t qid, uint64_t b, uint64_t row) {
  return mix64(mix64(mix64(seed ^ qid) ^ b) ^ row);
}

// One query's packed alleles and called-mask (missing calls: called bit 0).
struct QueryBits {
  std::vector<uint64_t> bits, called;
  bool has_missing = false;
};

struct Runs {
  const uint64_t* ref;  // [N, W]
  int64_t W, T;
  inline uint64_t mism(const uint64_t* r, const QueryBits& q, int64_t w) const {
    return (r[w] ^ q.bits[w]) & q.called[w];
  }
  // Matching markers b-1, b-2, ... down to the first mismatch (or marker 0).
  inline int32_t left(int64_t row, const QueryBits& q, int64_t b) const {
    if (b <= 0) return 0;
    const uint64_t* r = ref + row * W;
    int64_t pos = b - 1, w = pos >> 6;
    int bit = static_cast<int>(pos & 63);
    uint64_t x = mism(r, q, w) & (bit == 63 ? ~0ULL : ((1ULL << (bit + 1)) - 1));
    while (true) {
      if (x) return static_cast<int32_t>(b - 1 - (w * 64 + 63 - __builtin_clzll(x)));
      if (w == 0) return static_cast<int32_t>(b);
      x = mism(r, q, --w);
    }
  }
  // Matching markers b, b+1, ... up to the first mismatch (or marker T - 1).
  inline int32_t right(int64_t row, const QueryBits& q, int64_t b) const {
    if (b >= T) return 0;
    const uint64_t* r = ref + row * W;
    int64_t w = b >> 6;
    uint64_t x = mism(r, q, w) & (~0ULL << (b & 63));
    while (true) {
      if (x) return static_cast<int32_t>(std::min<int64_t>(w * 64 + __builtin_ctzll(x), T) - b);
      if (++w >= W) return static_cast<int32_t>(T - b);
      x = mism(r, q, w);
    }
  }
};

// PBWT over one marker order: rows sorted by their alleles read backwards from the current stage,
// div[i] = first marker of the match between order[i-1] and order[i] (div[0] = stage: no row above).
struct Sweep {
  int64_t N;
  std::vector<int32_t> order, div, o0, o1, d0, d1, zeros;  // zeros[i] = rows with allele 0 in order[0..i)
  explicit Sweep(int64_t n) : N(n), order(n), div(n, 0), zeros(n + 1, 0) {
    std::iota(order.begin(), order.end(), 0);
    o0.reserve(n), o1.reserve(n), d0.reserve(n), d1.reserve(n);
  }
  // Stage m -> m + 1 with column `col` (allele of every row at this marker).
  void advance(const uint8_t* col, int64_t m) {
    o0.clear(), o1.clear(), d0.clear(), d1.clear();
    int32_t p = static_cast<int32_t>(m + 1), q = p;
    for (int64_t i = 0; i < N; ++i) {
      const int32_t row = order[i];
      p = std::max(p, div[i]);
      q = std::max(q, div[i]);
      zeros[i] = static_cast<int32_t>(o0.size());
      if (col[row] == 0) {
        o0.push_back(row), d0.push_back(p), p = 0;
      } else {
        o1.push_back(row), d1.push_back(q), q = 0;
      }
    }
    zeros[N] = static_cast<int32_t>(o0.size());
    std::copy(o0.begin(), o0.end(), order.begin());
    std::copy(o1.begin(), o1.end(), order.begin() + static_cast<int64_t>(o0.size()));
    std::copy(d0.begin(), d0.end(), div.begin());
    std::copy(d1.begin(), d1.end(), div.begin() + static_cast<int64_t>(d0.size()));
    if (!d1.empty()) div[o0.size()] = static_cast<int32_t>(m + 1);  // nothing above matches at m
    if (!d0.empty()) div[0] = static_cast<int32_t>(m + 1);
  }
  // A query's insertion position after the advance, from its position before and its allele.
  inline int32_t move(int32_t t, uint8_t allele) const {
    return allele == 0 ? zeros[t] : zeros[N] + (t - zeros[t]);
  }
};

// Rows of one stage in decreasing match length with the query, walking out from its position.
struct Walk {
  const int32_t *order, *div;
  int64_t N, stage, up, dn;
  int32_t lu = -1, ld = -1;
  inline bool empty() const { return up < 0 && dn >= N; }
  inline int32_t front() const { return std::max(up >= 0 ? lu : -1, dn < N ? ld : -1); }
  inline void pop(int32_t* row, int32_t* len) {
    if (up >= 0 && (dn >= N || lu >= ld)) {
      *row = order[up], *len = lu;
      lu = std::min<int32_t>(lu, static_cast<int32_t>(stage - div[up]));
      --up;
    } else {
      *row = order[dn], *len = ld;
      ++dn;
      if (dn < N) ld = std::min<int32_t>(ld, static_cast<int32_t>(stage - div[dn]));
    }
  }
};

struct Cand {
  int32_t score;
  uint64_t hash;
  int32_t row, left, right;
  // "better" = larger score, then smaller hash, then smaller row
  inline bool better(const Cand& o) const {
    if (score != o.score) return score > o.score;
    if (hash != o.hash) return hash < o.hash;
    return row < o.row;
  }
};

struct Best {  // the K best candidates, best first
  int64_t k;
  std::vector<Cand> buf;
  void reset(int64_t k_) { k = k_, buf.clear(); }
  inline bool full() const { return static_cast<int64_t>(buf.size()) >= k; }
  inline void push(const Cand& c) {
    if (full() && !c.better(buf.back())) return;
    auto it = std::upper_bound(buf.begin(), buf.end(), c, [](const Cand& a, const Cand& b) { return a.better(b); });
    buf.insert(it, c);
    if (static_cast<int64_t>(buf.size()) > k) buf.pop_back();
  }
};

void check_inputs(const at::Tensor& ref_bits, const at::Tensor& query, const at::Tensor& exclude,
                  const at::Tensor& query_ids, const at::Tensor& points, int64_t k) {
  TORCH_CHECK_VALUE(ref_bits.dim() == 2 && ref_bits.scalar_type() == at::kLong,
                    "pbwt_donors: ref_bits must be int64 [N, W] (pack_bits of the panel at the typed markers)");
  TORCH_CHECK_VALUE(query.dim() == 2 && query.scalar_type() == at::kChar,
                    "pbwt_donors: query must be int8 [Q, T] alleles (0/1, -1 missing)");
  const int64_t T = query.size(1), W = ref_bits.size(1);
  TORCH_CHECK_VALUE(W == (T + 63) / 64, "pbwt_donors: ref_bits has ", W, " words per row but the query has ", T,
                    " markers (need ", (T + 63) / 64, ")");
  TORCH_CHECK_VALUE(exclude.dim() == 2 && exclude.scalar_type() == at::kLong && exclude.size(0) == query.size(0),
                    "pbwt_donors: exclude must be int64 [Q, E] (-1 = none)");
  TORCH_CHECK_VALUE(query_ids.dim() == 1 && query_ids.scalar_type() == at::kLong && query_ids.size(0) == query.size(0),
                    "pbwt_donors: query_ids must be int64 [Q]");
  TORCH_CHECK_VALUE(points.dim() == 1 && points.scalar_type() == at::kLong,
                    "pbwt_donors: points must be int64 [P] boundaries in [0, T]");
  TORCH_CHECK_VALUE(k >= 1, "pbwt_donors: k must be at least 1, got ", k);
  for (auto* t : {&ref_bits, &query, &exclude, &query_ids, &points}) {
    TORCH_CHECK_VALUE(t->device().is_cpu() && t->is_contiguous(), "pbwt_donors: CPU contiguous tensors only");
  }
  const int64_t* pp = points.data_ptr<int64_t>();
  for (int64_t i = 0; i < points.size(0); ++i) {
    TORCH_CHECK_VALUE(pp[i] >= 0 && pp[i] <= T, "pbwt_donors: point ", pp[i], " outside [0, ", T, "]");
    TORCH_CHECK_VALUE(i == 0 || pp[i] > pp[i - 1], "pbwt_donors: points must be strictly increasing");
  }
  const int8_t* qp = query.data_ptr<int8_t>();
  for (int64_t i = 0; i < query.numel(); ++i) {
    TORCH_CHECK_VALUE(qp[i] >= -1 && qp[i] <= 1, "pbwt_donors: query alleles must be 0, 1 or -1, found ", int(qp[i]));
  }
}

std::vector<QueryBits> pack_queries(const at::Tensor& query, int64_t W) {
  const int64_t Q = query.size(0), T = query.size(1);
  const int8_t* qp = query.data_ptr<int8_t>();
  std::vector<QueryBits> out(static_cast<size_t>(Q));
  for (int64_t q = 0; q < Q; ++q) {
    auto& b = out[static_cast<size_t>(q)];
    b.bits.assign(static_cast<size_t>(W), 0);
    b.called.assign(static_cast<size_t>(W), 0);
    for (int64_t m = 0; m < T; ++m) {
      const int8_t a = qp[q * T + m];
      if (a < 0) {
        b.has_missing = true;
        continue;
      }
      b.called[static_cast<size_t>(m >> 6)] |= 1ULL << (m & 63);
      if (a == 1) b.bits[static_cast<size_t>(m >> 6)] |= 1ULL << (m & 63);
    }
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pbwt_donors_cpu(const at::Tensor& ref_bits, const at::Tensor& query,
                                                                 const at::Tensor& exclude, const at::Tensor& query_ids,
                                                                 const at::Tensor& points, int64_t k, int64_t seed) {
  check_inputs(ref_bits, query, exclude, query_ids, points, k);
  const int64_t N = ref_bits.size(0), W = ref_bits.size(1), Q = query.size(0), T = query.size(1);
  const int64_t P = points.size(0), E = exclude.size(1);
  auto rows_t = at::full({Q, P, k}, -1, ref_bits.options());
  auto left_t = at::full({Q, P, k}, -1, ref_bits.options().dtype(at::kInt));
  auto right_t = at::full({Q, P, k}, -1, ref_bits.options().dtype(at::kInt));
  if (Q == 0 || P == 0 || N == 0) return {rows_t, left_t, right_t};
  const uint64_t* ref = reinterpret_cast<const uint64_t*>(ref_bits.data_ptr<int64_t>());
  const int8_t* qa = query.data_ptr<int8_t>();
  const int64_t* ex = exclude.data_ptr<int64_t>();
  const int64_t* qid = query_ids.data_ptr<int64_t>();
  const int64_t* pts = points.data_ptr<int64_t>();
  int64_t* out_rows = rows_t.data_ptr<int64_t>();
  int32_t* out_left = left_t.data_ptr<int32_t>();
  int32_t* out_right = right_t.data_ptr<int32_t>();
  const Runs runs{ref, W, T};
  const std::vector<QueryBits> qb = pack_queries(query, W);
  bool any_fast = false;
  for (const auto& b : qb) any_fast |= !b.has_missing;

  // Columns [T, N] for the sweeps (the panel at one marker is read row by row in sorted order).
  std::vector<uint8_t> cols;
  if (any_fast) {
    cols.assign(static_cast<size_t>(T * N), 0);
    at::parallel_for(0, N, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t m = 0; m < T; ++m) cols[m * N + r] = static_cast<uint8_t>((ref[r * W + (m >> 6)] >> (m & 63)) & 1);
    });
  }

  // Forward sweep: keep each point's order/divergence and every fast query's position there.
  std::vector<int32_t> f_order, f_div, f_pos;
  if (any_fast) {
    f_order.resize(static_cast<size_t>(P * N)), f_div.resize(static_cast<size_t>(P * N));
    f_pos.assign(static_cast<size_t>(P * Q), 0);
    Sweep s(N);
    std::vector<int32_t> pos(static_cast<size_t>(Q), 0);
    int64_t p = 0;
    for (int64_t stage = 0; stage <= T && p < P; ++stage) {
      if (stage > 0) {
        const int64_t m = stage - 1;
        s.advance(&cols[m * N], m);
        for (int64_t q = 0; q < Q; ++q)
          if (!qb[static_cast<size_t>(q)].has_missing) pos[q] = s.move(pos[q], static_cast<uint8_t>(qa[q * T + m]));
      }
      if (pts[p] == stage) {
        std::copy(s.order.begin(), s.order.end(), f_order.begin() + p * N);
        std::copy(s.div.begin(), s.div.end(), f_div.begin() + p * N);
        f_div[p * N] = static_cast<int32_t>(stage);
        for (int64_t q = 0; q < Q; ++q) f_pos[p * Q + q] = pos[q];
        ++p;
      }
    }
  }

  const int n_threads = at::get_num_threads();
  std::vector<std::vector<uint32_t>> stamps(static_cast<size_t>(n_threads), std::vector<uint32_t>(static_cast<size_t>(N), 0));
  std::vector<uint32_t> tokens(static_cast<size_t>(n_threads), 0);

  // Answer every query at point p, given (for fast queries) the reverse sweep's stage T - b.
  auto answer = [&](int64_t p, const Sweep* rev, const std::vector<int32_t>* rpos) {
    const int64_t b = pts[p];
    at::parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
      const int tid = at::get_thread_num();
      auto& stamp = stamps[static_cast<size_t>(tid)];
      Best best;
      for (int64_t q = q0; q < q1; ++q) {
        const QueryBits& bits = qb[static_cast<size_t>(q)];
        const uint32_t tok = ++tokens[static_cast<size_t>(tid)];
        if (tok == 0) {  // wrapped: clear the stamps once every 2^32 answers
          std::fill(stamp.begin(), stamp.end(), 0);
          tokens[static_cast<size_t>(tid)] = 1;
        }
        const uint32_t mark = tokens[static_cast<size_t>(tid)];
        for (int64_t e = 0; e < E; ++e) {
          const int64_t r = ex[q * E + e];
          if (r >= 0 && r < N) stamp[static_cast<size_t>(r)] = mark;
        }
        best.reset(k);
        const uint64_t s = static_cast<uint64_t>(seed), id = static_cast<uint64_t>(qid[q]);
        auto offer = [&](int32_t row, int32_t l, int32_t r) {
          best.push(Cand{l + r, tie_hash(s, id, static_cast<uint64_t>(b), static_cast<uint64_t>(row)), row, l, r});
        };
        if (bits.has_missing) {  // brute force: every row
          for (int64_t r = 0; r < N; ++r) {
            if (stamp[static_cast<size_t>(r)] == mark) continue;
            offer(static_cast<int32_t>(r), runs.left(r, bits, b), runs.right(r, bits, b));
          }
        } else {
          const int64_t tf = f_pos[p * Q + q], tr = (*rpos)[static_cast<size_t>(q)];
          Walk L{&f_order[p * N], &f_div[p * N], N, b, tf - 1, tf};
          Walk R{rev->order.data(), rev->div.data(), N, T - b, tr - 1, tr};
          if (L.up >= 0) L.lu = runs.left(L.order[L.up], bits, b);
          if (L.dn < N) L.ld = runs.left(L.order[L.dn], bits, b);
          if (R.up >= 0) R.lu = runs.right(R.order[R.up], bits, b);
          if (R.dn < N) R.ld = runs.right(R.order[R.dn], bits, b);
          while (!L.empty() && !R.empty()) {
            const int32_t lf = L.front(), rf = R.front();
            if (best.full() && best.buf.back().score > lf + rf) break;  // no unseen row can enter or tie
            int32_t row, len;
            if (lf >= rf) {
              L.pop(&row, &len);
              if (stamp[static_cast<size_t>(row)] == mark) continue;
              stamp[static_cast<size_t>(row)] = mark;
              offer(row, len, runs.right(row, bits, b));
            } else {
              R.pop(&row, &len);
              if (stamp[static_cast<size_t>(row)] == mark) continue;
              stamp[static_cast<size_t>(row)] = mark;
              offer(row, runs.left(row, bits, b), len);
            }
          }
        }
        int64_t* orow = out_rows + (q * P + p) * k;
        int32_t* ol = out_left + (q * P + p) * k;
        int32_t* orr = out_right + (q * P + p) * k;
        for (size_t i = 0; i < best.buf.size(); ++i) {
          orow[i] = best.buf[i].row, ol[i] = best.buf[i].left, orr[i] = best.buf[i].right;
        }
      }
    });
  };

  if (!any_fast) {
    for (int64_t p = 0; p < P; ++p) answer(p, nullptr, nullptr);
    return {rows_t, left_t, right_t};
  }
  // Reverse sweep (markers T-1 .. 0): stage j covers markers T-j .. T-1, i.e. boundary b = T - j.
  Sweep s(N);
  std::vector<int32_t> rpos(static_cast<size_t>(Q), 0);
  int64_t p = P - 1;
  for (int64_t j = 0; j <= T && p >= 0; ++j) {
    if (j > 0) {
      const int64_t m = T - j;  // the marker this step adds
      s.advance(&cols[m * N], j - 1);
      for (int64_t q = 0; q < Q; ++q)
        if (!qb[static_cast<size_t>(q)].has_missing) rpos[q] = s.move(rpos[q], static_cast<uint8_t>(qa[q * T + m]));
    }
    if (pts[p] == T - j) {
      const int32_t saved = s.div[0];
      s.div[0] = static_cast<int32_t>(j);
      answer(p, &s, &rpos);
      s.div[0] = saved;
      --p;
    }
  }
  return {rows_t, left_t, right_t};
}

// Runs of given (query, row, boundary) triples: the lengths behind the per-site match features.
std::tuple<at::Tensor, at::Tensor> match_runs_cpu(const at::Tensor& ref_bits, const at::Tensor& query,
                                                  const at::Tensor& rows, const at::Tensor& bounds) {
  TORCH_CHECK_VALUE(ref_bits.dim() == 2 && ref_bits.scalar_type() == at::kLong && ref_bits.is_contiguous(),
                    "match_runs: ref_bits must be contiguous int64 [N, W]");
  TORCH_CHECK_VALUE(query.dim() == 2 && query.scalar_type() == at::kChar && query.is_contiguous(),
                    "match_runs: query must be contiguous int8 [Q, T]");
  TORCH_CHECK_VALUE(rows.dim() == 2 && rows.scalar_type() == at::kLong && rows.size(0) == query.size(0) &&
                        rows.is_contiguous(),
                    "match_runs: rows must be contiguous int64 [Q, R]");
  TORCH_CHECK_VALUE(bounds.sizes() == rows.sizes() && bounds.scalar_type() == at::kLong && bounds.is_contiguous(),
                    "match_runs: bounds must be int64 [Q, R] like rows");
  const int64_t N = ref_bits.size(0), W = ref_bits.size(1), Q = query.size(0), T = query.size(1), R = rows.size(1);
  TORCH_CHECK_VALUE(W == (T + 63) / 64, "match_runs: ref_bits has ", W, " words per row for ", T, " markers");
  auto left = at::full({Q, R}, -1, rows.options().dtype(at::kInt));
  auto right = at::full({Q, R}, -1, rows.options().dtype(at::kInt));
  const std::vector<QueryBits> qb = pack_queries(query, W);
  const Runs runs{reinterpret_cast<const uint64_t*>(ref_bits.data_ptr<int64_t>()), W, T};
  const int64_t* rp = rows.data_ptr<int64_t>();
  const int64_t* bp = bounds.data_ptr<int64_t>();
  int32_t* lp = left.data_ptr<int32_t>();
  int32_t* rr = right.data_ptr<int32_t>();
  at::parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q)
      for (int64_t i = 0; i < R; ++i) {
        const int64_t row = rp[q * R + i], b = bp[q * R + i];
        if (row < 0) continue;
        TORCH_CHECK_VALUE(row < N, "match_runs: row ", row, " outside [0, ", N, ")");
        TORCH_CHECK_VALUE(b >= 0 && b <= T, "match_runs: boundary ", b, " outside [0, ", T, "]");
        lp[q * R + i] = runs.left(row, qb[static_cast<size_t>(q)], b);
        rr[q * R + i] = runs.right(row, qb[static_cast<size_t>(q)], b);
      }
  });
  return {left, right};
}

}  // namespace

TORCH_LIBRARY_IMPL(vcfbert_fast, CPU, m) {
  m.impl("pbwt_donors", &pbwt_donors_cpu);
  m.impl("match_runs", &match_runs_cpu);
}

}  // namespace vcfbert_fast
