// Zero-copy row gather: out[r] = src[index[r]], src in pinned host memory (read over PCIe/NVLink
// through unified virtual addressing) or on the device.
//
// Plain CUDA with no includes, so the SAME source is compiled by nvcc (csrc/cuda/gather_rows.cu)
// and at run time by NVRTC (vcfbert_fast/ops/_cupy_gather.py). Kernels are extern "C" so NVRTC
// users can look them up by name: vf_gather_rows_v{16,8,4,2,1}_i{64,32}, where v is the load
// width in bytes (16 = one uint4 per thread) and i the index type.
//
// Launch: blockDim.x = VF_GATHER_THREADS, grid = (chunks, rows): blockIdx.y strides over output rows
// and blockIdx.x over vectors within a row, so many rows and many loads per row are in flight
// (host reads have microsecond latency; throughput needs thousands of outstanding loads).
// An out-of-range index is never read: its output row is zero-filled and *err set to 1.
// Include guard, not #pragma once: this file is also compiled as a main file (NVRTC).
#ifndef VF_GATHER_ROWS_KERNEL_CUH
#define VF_GATHER_ROWS_KERNEL_CUH

#define VF_GATHER_THREADS 256

template <typename V, typename I>
__device__ __forceinline__ void vf_gather_rows_body(const V* __restrict__ src, const I* __restrict__ index,
                                                    V* __restrict__ out, long long n_out, long long n_rows,
                                                    long long n_vec, int* __restrict__ err) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long r = blockIdx.y; r < n_out; r += gridDim.y) {
    const long long row = (long long)index[r];
    V* __restrict__ o = out + r * n_vec;
    long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row < 0 || row >= n_rows) {
      if (v == 0) *err = 1;
      V zero;
      unsigned char* z = (unsigned char*)&zero;
      for (int b = 0; b < (int)sizeof(V); ++b) z[b] = 0;
      for (; v < n_vec; v += stride) o[v] = zero;
      continue;
    }
    const V* __restrict__ s = src + row * n_vec;
    // Four independent loads before the stores: more memory-level parallelism per thread.
    for (; v + 3 * stride < n_vec; v += 4 * stride) {
      const V a = s[v];
      const V b = s[v + stride];
      const V c = s[v + 2 * stride];
      const V d = s[v + 3 * stride];
      o[v] = a;
      o[v + stride] = b;
      o[v + 2 * stride] = c;
      o[v + 3 * stride] = d;
    }
    for (; v < n_vec; v += stride) o[v] = s[v];
  }
}

#define VF_GATHER_KERNEL(NAME, V, I)                                                                     \
  extern "C" __global__ void __launch_bounds__(VF_GATHER_THREADS)                                        \
      NAME(const V* __restrict__ src, const I* __restrict__ index, V* __restrict__ out, long long n_out, \
           long long n_rows, long long n_vec, int* __restrict__ err) {                                   \
    vf_gather_rows_body<V, I>(src, index, out, n_out, n_rows, n_vec, err);                               \
  }

VF_GATHER_KERNEL(vf_gather_rows_v16_i64, uint4, long long)
VF_GATHER_KERNEL(vf_gather_rows_v8_i64, uint2, long long)
VF_GATHER_KERNEL(vf_gather_rows_v4_i64, unsigned int, long long)
VF_GATHER_KERNEL(vf_gather_rows_v2_i64, unsigned short, long long)
VF_GATHER_KERNEL(vf_gather_rows_v1_i64, unsigned char, long long)
VF_GATHER_KERNEL(vf_gather_rows_v16_i32, uint4, int)
VF_GATHER_KERNEL(vf_gather_rows_v8_i32, uint2, int)
VF_GATHER_KERNEL(vf_gather_rows_v4_i32, unsigned int, int)
VF_GATHER_KERNEL(vf_gather_rows_v2_i32, unsigned short, int)
VF_GATHER_KERNEL(vf_gather_rows_v1_i32, unsigned char, int)

#endif  // VF_GATHER_ROWS_KERNEL_CUH
