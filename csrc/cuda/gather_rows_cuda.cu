// CUDA gather_rows: index/out on the device, src on that device or in pinned host memory.
// The kernel is in gather_rows_kernel.cuh (shared with the CuPy/NVRTC path).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zero.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../gather_rows_common.h"
#include "gather_rows_kernel.cuh"

namespace vcfbert_fast {
namespace {

#define VF_CUDA_CHECK(expr)                                                                   \
  do {                                                                                        \
    cudaError_t vf_err_ = (expr);                                                             \
    TORCH_CHECK(vf_err_ == cudaSuccess, "gather_rows: ", #expr, " failed: ", cudaGetErrorString(vf_err_)); \
  } while (0)

template <typename V, typename I>
using KernelFn = void (*)(const V*, const I*, V*, long long, long long, long long, int*);

template <typename V, typename I>
void launch(KernelFn<V, I> kernel, const void* src, const void* index, void* out, int64_t n_out, int64_t n_rows,
            int64_t row_bytes, int* err, cudaStream_t stream) {
  const int64_t n_vec = row_bytes / static_cast<int64_t>(sizeof(V));
  // Enough blocks per row for ~4 vectors per thread, capped so very long rows grid-stride.
  const int64_t per_block = int64_t{VF_GATHER_THREADS} * 4;
  const int64_t bx = std::min<int64_t>(std::max<int64_t>(1, (n_vec + per_block - 1) / per_block), 1024);
  const int64_t by = std::min<int64_t>(n_out, 65535);
  const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  kernel<<<grid, VF_GATHER_THREADS, 0, stream>>>(static_cast<const V*>(src), static_cast<const I*>(index),
                                                 static_cast<V*>(out), n_out, n_rows, n_vec, err);
  VF_CUDA_CHECK(cudaGetLastError());
}

template <typename I>
struct Kernels;
template <>
struct Kernels<long long> {
  static constexpr KernelFn<uint4, long long> v16 = &vf_gather_rows_v16_i64;
  static constexpr KernelFn<uint2, long long> v8 = &vf_gather_rows_v8_i64;
  static constexpr KernelFn<unsigned int, long long> v4 = &vf_gather_rows_v4_i64;
  static constexpr KernelFn<unsigned short, long long> v2 = &vf_gather_rows_v2_i64;
  static constexpr KernelFn<unsigned char, long long> v1 = &vf_gather_rows_v1_i64;
};
template <>
struct Kernels<int> {
  static constexpr KernelFn<uint4, int> v16 = &vf_gather_rows_v16_i32;
  static constexpr KernelFn<uint2, int> v8 = &vf_gather_rows_v8_i32;
  static constexpr KernelFn<unsigned int, int> v4 = &vf_gather_rows_v4_i32;
  static constexpr KernelFn<unsigned short, int> v2 = &vf_gather_rows_v2_i32;
  static constexpr KernelFn<unsigned char, int> v1 = &vf_gather_rows_v1_i32;
};

template <typename I>
void dispatch_width(int width, const void* src, const void* index, void* out, int64_t n_out, int64_t n_rows,
                    int64_t row_bytes, int* err, cudaStream_t stream) {
  using K = Kernels<I>;
  switch (width) {
    case 16: launch(K::v16, src, index, out, n_out, n_rows, row_bytes, err, stream); break;
    case 8: launch(K::v8, src, index, out, n_out, n_rows, row_bytes, err, stream); break;
    case 4: launch(K::v4, src, index, out, n_out, n_rows, row_bytes, err, stream); break;
    case 2: launch(K::v2, src, index, out, n_out, n_rows, row_bytes, err, stream); break;
    default: launch(K::v1, src, index, out, n_out, n_rows, row_bytes, err, stream); break;
  }
}

// Device-visible address of src: itself on the device; for pinned host memory the mapped pointer
// of its allocation (equal to the host pointer under UVA) plus the view's offset.
const void* device_src_pointer(const at::Tensor& src, const at::Tensor& index) {
  if (src.is_cuda()) {
    TORCH_CHECK(src.device() == index.device(), "gather_rows: src is on ", src.device(), " but index is on ",
                index.device(), "; put them on the same device");
    return src.const_data_ptr();
  }
  TORCH_CHECK(src.device().is_cpu(), "gather_rows: src on ", src.device(), " is not supported");
  TORCH_CHECK(src.is_pinned(), "gather_rows: src is a pageable (non-pinned) host tensor but index is on ",
              index.device(), "; the CUDA kernel reads host memory zero-copy and needs src.pin_memory() ",
              "(pin the store once), or move src to the device, or pass a CPU index to gather on the host");
  const char* base = static_cast<const char*>(src.storage().data());
  void* mapped = nullptr;
  VF_CUDA_CHECK(cudaHostGetDevicePointer(&mapped, const_cast<char*>(base), 0));
  const char* view = static_cast<const char*>(src.const_data_ptr());
  return static_cast<const char*>(mapped) + (view - base);
}

void gather_rows_out_cuda(const at::Tensor& src, const at::Tensor& index, const at::Tensor& out, bool check) {
  check_gather_rows_args(src, index);
  check_gather_rows_out(src, index, out);
  TORCH_CHECK(index.is_cuda(), "gather_rows: index is on ", index.device(), " but out is on ", out.device(),
              "; put index on out's device (index.to(out.device))");
  TORCH_CHECK(out.is_cuda() && out.device() == index.device(), "gather_rows: out is on ", out.device(),
              " but index is on ", index.device(), "; allocate out on the index's device");
  c10::cuda::CUDAGuard guard(index.device());
  const void* s = device_src_pointer(src, index);
  const int64_t n_out = index.size(0), n_rows = src.size(0);
  const int64_t row_bytes = n_rows == 0 ? 0 : static_cast<int64_t>(src.nbytes()) / n_rows;
  if (n_out == 0) return;
  if (n_rows == 0 || row_bytes == 0) {
    TORCH_CHECK(n_rows > 0 || !check, "gather_rows: src has 0 rows, so every index is out of range");
    if (n_rows == 0) out.zero_();  // unchecked: every row is out of range, hence zero-filled
    return;
  }
  const at::Tensor idx = index.contiguous();
  void* o = out.mutable_data_ptr();
  // Widest load that divides the row size and both base addresses.
  const uintptr_t align = reinterpret_cast<uintptr_t>(s) | reinterpret_cast<uintptr_t>(o);
  int width = 16;
  while (width > 1 && ((row_bytes % width) != 0 || (align % width) != 0)) width /= 2;
  at::Tensor err = at::zeros({1}, index.options().dtype(at::kInt));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(index.device().index()).stream();
  if (idx.scalar_type() == at::kLong) {
    dispatch_width<long long>(width, s, idx.const_data_ptr(), o, n_out, n_rows, row_bytes, err.mutable_data_ptr<int>(),
                            stream);
  } else {
    dispatch_width<int>(width, s, idx.const_data_ptr(), o, n_out, n_rows, row_bytes, err.mutable_data_ptr<int>(),
                            stream);
  }
  // The range check costs one 4-byte read-back (a sync with the stream); an unchecked bad index
  // would otherwise hand the model a silently zeroed row. check=false (hot paths whose indices are
  // valid by construction) skips it: no host synchronisation, out-of-range rows stay zero-filled.
  if (!check) return;
  int flag = 0;
  VF_CUDA_CHECK(cudaMemcpyAsync(&flag, err.const_data_ptr<int>(), sizeof(int), cudaMemcpyDeviceToHost, stream));
  VF_CUDA_CHECK(cudaStreamSynchronize(stream));
  TORCH_CHECK(flag == 0, "gather_rows: index holds a value outside [0, ", n_rows,
              ") (those output rows were zero-filled); check the retrieval indices against the store size");
}

at::Tensor gather_rows_cuda(const at::Tensor& src, const at::Tensor& index, bool check) {
  check_gather_rows_args(src, index);
  TORCH_CHECK(index.is_cuda(), "gather_rows: index on ", index.device(), " reached the CUDA kernel; ",
              "use a CUDA index to gather onto the device");
  at::Tensor out = at::empty(gather_rows_out_shape(src, index), src.options().device(index.device()));
  gather_rows_out_cuda(src, index, out, check);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(vcfbert_fast, CUDA, m) {
  m.impl("gather_rows", &gather_rows_cuda);
  m.impl("gather_rows_out", &gather_rows_out_cuda);
}

}  // namespace vcfbert_fast
