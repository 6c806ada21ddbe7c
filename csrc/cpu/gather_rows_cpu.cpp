// CPU gather_rows: bounds-check every index first (so a bad index raises before any write),
// then copy whole rows with memcpy in parallel. check=false skips the up-front pass and
// zero-fills out-of-range rows instead (the CUDA kernel's unchecked behaviour; never reads OOB).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../gather_rows_common.h"

namespace vcfbert_fast {
namespace {

template <typename I>
void gather_rows_cpu_impl(const at::Tensor& src, const at::Tensor& index, const at::Tensor& out, bool check) {
  const int64_t n_rows = src.size(0);
  const int64_t n_out = index.size(0);
  const I* idx = index.data_ptr<I>();
  for (int64_t i = 0; check && i < n_out; ++i) {
    const int64_t r = static_cast<int64_t>(idx[i]);
    TORCH_CHECK(r >= 0 && r < n_rows, "gather_rows: index[", i, "] = ", r, " is out of range for src with ", n_rows,
                " rows; indices must lie in [0, ", n_rows, ")");
  }
  // Row size from out (src may have 0 rows; then every unchecked row is zero-filled).
  const int64_t row_bytes = n_out == 0 ? 0 : static_cast<int64_t>(out.nbytes()) / n_out;
  if (n_out == 0 || row_bytes == 0) return;
  const char* s = static_cast<const char*>(src.const_data_ptr());
  char* o = static_cast<char*>(out.mutable_data_ptr());
  // ~256 KiB of copying per task keeps the threading overhead small for short rows.
  const int64_t grain = std::max<int64_t>(1, (int64_t{256} << 10) / row_bytes);
  at::parallel_for(0, n_out, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = static_cast<int64_t>(idx[i]);
      if (r >= 0 && r < n_rows) {
        std::memcpy(o + i * row_bytes, s + r * row_bytes, row_bytes);
      } else {
        std::memset(o + i * row_bytes, 0, row_bytes);
      }
    }
  });
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "gather_rows: ", name, " is on ", t.device(),
              " while the CPU kernel was chosen; put src, index and out on the CPU, or index and out on ",
              "the CUDA device with src pinned (src.pin_memory())");
}

void gather_rows_out_cpu(const at::Tensor& src, const at::Tensor& index, const at::Tensor& out, bool check) {
  check_gather_rows_args(src, index);
  check_gather_rows_out(src, index, out);
  check_cpu(src, "src");
  check_cpu(index, "index");
  check_cpu(out, "out");
  const at::Tensor idx = index.contiguous();
  if (idx.scalar_type() == at::kLong) {
    gather_rows_cpu_impl<int64_t>(src, idx, out, check);
  } else {
    gather_rows_cpu_impl<int32_t>(src, idx, out, check);
  }
}

at::Tensor gather_rows_cpu(const at::Tensor& src, const at::Tensor& index, bool check) {
  check_gather_rows_args(src, index);
  at::Tensor out = at::empty(gather_rows_out_shape(src, index), src.options());
  gather_rows_out_cpu(src, index, out, check);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(vcfbert_fast, CPU, m) {
  m.impl("gather_rows", &gather_rows_cpu);
  m.impl("gather_rows_out", &gather_rows_out_cpu);
}

}  // namespace vcfbert_fast
