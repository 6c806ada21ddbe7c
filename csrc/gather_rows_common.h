// Argument checks shared by the CPU and CUDA gather_rows kernels: one message per mistake,
// each saying how to fix it.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <vector>

namespace vcfbert_fast {

inline std::vector<int64_t> gather_rows_out_shape(const at::Tensor& src, const at::Tensor& index) {
  std::vector<int64_t> shape(src.sizes().begin(), src.sizes().end());
  shape[0] = index.size(0);
  return shape;
}

inline void check_gather_rows_args(const at::Tensor& src, const at::Tensor& index) {
  TORCH_CHECK(src.dim() >= 1, "gather_rows: src must have at least one dimension (rows), got a scalar");
  TORCH_CHECK(src.is_contiguous(), "gather_rows: src must be contiguous; call src.contiguous() once ",
              "(a store is gathered many times, so copy it once rather than per call)");
  TORCH_CHECK(index.dim() == 1, "gather_rows: index must be 1-D [R], got shape ", index.sizes());
  TORCH_CHECK(index.scalar_type() == at::kLong || index.scalar_type() == at::kInt,
              "gather_rows: index must be int64 or int32, got ", index.scalar_type(),
              "; convert it with index.long()");
}

inline void check_gather_rows_out(const at::Tensor& src, const at::Tensor& index, const at::Tensor& out) {
  TORCH_CHECK(out.scalar_type() == src.scalar_type(), "gather_rows: out dtype ", out.scalar_type(),
              " does not match src dtype ", src.scalar_type(), "; allocate out with dtype=src.dtype");
  auto expected = gather_rows_out_shape(src, index);
  TORCH_CHECK(out.sizes().vec() == expected, "gather_rows: out has shape ", out.sizes(), " but [R, *src.shape[1:]] = ",
              at::IntArrayRef(expected), " is needed; slice or allocate out to that shape");
  TORCH_CHECK(out.is_contiguous(), "gather_rows: out must be contiguous (a dim-0 slice of a contiguous buffer is)");
}

}  // namespace vcfbert_fast
