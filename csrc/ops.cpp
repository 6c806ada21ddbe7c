// Op schemas for torch.ops.vcfbert_fast, defined once here; kernels register per device in
// csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA), the layout torchvision's csrc/ops uses.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(vcfbert_fast, m) {
  // out[i] = src[index[i]] over dim 0. CPU: all CPU tensors. CUDA: index/out on the device and
  // src either on that device or in pinned host memory (read zero-copy through UVA).
  // check=True raises on an index outside [0, N) (CUDA: one 4-byte read-back, a stream sync);
  // check=False never syncs and zero-fills such rows instead, for hot paths whose indices are
  // valid by construction. Neither reads out of bounds.
  m.def("gather_rows(Tensor src, Tensor index, bool check=True) -> Tensor");
  m.def("gather_rows_out(Tensor src, Tensor index, Tensor(a!) out, bool check=True) -> ()");
  // Bit-packed (weighted) Hamming distance fused with a per-query top-k. CPU kernel here; the
  // CUDA kernel (Triton) and the fake are registered from Python (vcfbert_fast/ops/hamming.py).
  // Returns exact int64 distances and int64 reference rows, ascending, ties -> lowest row.
  m.def("hamming_topk(Tensor query_bits, Tensor ref_bits, Tensor? weights, int k) -> (Tensor, Tensor)");
  // Haplotype matching over typed markers (csrc/cpu/pbwt_cpu.cpp has the contract): per query and
  // selection point, the k rows whose exact match runs longest left + right from the point.
  // Returns rows int64 [Q, P, k], left and right run lengths int32 [Q, P, k] (-1 padding).
  m.def(
      "pbwt_donors(Tensor ref_bits, Tensor query, Tensor exclude, Tensor query_ids, Tensor points, int k, "
      "int seed) -> (Tensor, Tensor, Tensor)");
  // Left and right exact-match run lengths of (query, row, boundary) triples, int32 [Q, R] each.
  m.def("match_runs(Tensor ref_bits, Tensor query, Tensor rows, Tensor bounds) -> (Tensor, Tensor)");
}

// `import vcfbert_fast._C` loads this library (running the static registrations above and in
// the kernel files); the module itself is empty, so no pybind11 is compiled.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "vcfbert_fast C++/CUDA ops; importing registers torch.ops.vcfbert_fast",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
