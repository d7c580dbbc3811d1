// C = A . B through oneDNN's matmul primitive, as an XLA FFI handler (jax.ffi).
//
// Why: XLA:CPU computes bf16 dots without the CPU's bf16 units (AVX512-BF16, AMX);
// oneDNN dispatches on the ISA and uses them. A is [M,K] (or [K,M] with transpose_a),
// B is [K,N] (or [N,K] with transpose_b); the transposes are expressed as memory
// strides, never copied. Inputs bf16 or f32, accumulation in f32 (oneDNN's default),
// output dtype taken from the result buffer. Primitives are cached per shape/dtype
// behind a mutex; each calling thread brings its own scratchpad, so two host devices may
// execute one primitive at once, and each call sets the calling
// thread's OpenMP team size so that several XLA host devices do not oversubscribe.
// Every failure is returned as an ffi::Error (JAX raises it), never an abort.
// OnednnBatchedMatmul does the same for batched products over strided views (attention).

#include <omp.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int, int, int>;

std::mutex g_mutex;
dnnl_engine_t g_engine = nullptr;
std::map<Key, dnnl_primitive_t> g_cache;

std::string Status(const char* what, dnnl_status_t s) {
  return std::string("oneDNN ") + what + " failed (status " + std::to_string(int(s)) + ")";
}

bool ToDnnl(ffi::DataType t, dnnl_data_type_t* out) {
  switch (t) {
    case ffi::DataType::BF16: *out = dnnl_bf16; return true;
    case ffi::DataType::F32: *out = dnnl_f32; return true;
    default: return false;
  }
}

// Row-major [rows, cols] view, or its transpose when `transposed` (same buffer).
dnnl_status_t Desc(dnnl_memory_desc_t* md, int64_t rows, int64_t cols, bool transposed,
                   dnnl_data_type_t dt) {
  dnnl_dims_t dims = {rows, cols};
  dnnl_dims_t strides = {cols, 1};
  if (transposed) {  // logical [rows, cols] stored as [cols, rows]
    strides[0] = 1;
    strides[1] = rows;
  }
  return dnnl_memory_desc_create_with_strides(md, 2, dims, dt, strides);
}

// The CPU engine, created on first use; the caller holds g_mutex.
dnnl_status_t EnsureEngine() {
  return g_engine != nullptr ? dnnl_success : dnnl_engine_create(&g_engine, dnnl_cpu, 0);
}

// A matmul primitive for these descriptors (which stay the caller's), with a scratchpad
// per call (user mode): the library's own is shared between threads, and two host devices
// executing one cached primitive at once corrupted each other's results.
dnnl_status_t CreateMatmul(const_dnnl_memory_desc_t a_md, const_dnnl_memory_desc_t b_md,
                           const_dnnl_memory_desc_t c_md, dnnl_primitive_t* prim) {
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_primitive_desc_t pd = nullptr;
  dnnl_status_t s = dnnl_primitive_attr_create(&attr);
  if (s == dnnl_success) s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  if (s == dnnl_success)
    s = dnnl_matmul_primitive_desc_create(&pd, g_engine, a_md, b_md, nullptr, c_md, attr);
  if (s == dnnl_success) s = dnnl_primitive_create(prim, pd);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (pd) dnnl_primitive_desc_destroy(pd);
  return s;
}

// The cached primitive for this problem (created on first sight); caller holds no lock.
ffi::Error GetPrimitive(const Key& key, dnnl_primitive_t* out) {
  std::lock_guard<std::mutex> lock(g_mutex);
  dnnl_status_t s = EnsureEngine();
  if (s != dnnl_success) return ffi::Error::Internal(Status("engine_create", s));
  auto it = g_cache.find(key);
  if (it != g_cache.end()) {
    *out = it->second;
    return ffi::Error::Success();
  }
  auto [m, k, n, ta, tb, dta, dtb, dtc] = key;
  dnnl_memory_desc_t a_md = nullptr, b_md = nullptr, c_md = nullptr;
  dnnl_primitive_t prim = nullptr;
  s = Desc(&a_md, m, k, ta, dnnl_data_type_t(dta));
  if (s == dnnl_success) s = Desc(&b_md, k, n, tb, dnnl_data_type_t(dtb));
  if (s == dnnl_success) s = Desc(&c_md, m, n, false, dnnl_data_type_t(dtc));
  if (s == dnnl_success) s = CreateMatmul(a_md, b_md, c_md, &prim);
  if (a_md) dnnl_memory_desc_destroy(a_md);
  if (b_md) dnnl_memory_desc_destroy(b_md);
  if (c_md) dnnl_memory_desc_destroy(c_md);
  if (s != dnnl_success) return ffi::Error::Internal(Status("matmul primitive creation", s));
  g_cache.emplace(key, prim);
  *out = prim;
  return ffi::Error::Success();
}

// Runs `prim` on the given buffers with this thread's scratchpad and team size.
ffi::Error Execute(dnnl_primitive_t prim, void* a, void* b, void* c, int64_t threads) {
  if (threads > 0) omp_set_num_threads(int(threads));
  // This thread's scratchpad, grown to the largest any of its calls needed.
  thread_local std::vector<char> scratch;
  const int which[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SCRATCHPAD};
  dnnl_memory_t mems[4] = {nullptr, nullptr, nullptr, nullptr};
  const_dnnl_primitive_desc_t pd = nullptr;
  dnnl_status_t s = dnnl_primitive_get_primitive_desc(prim, &pd);
  const_dnnl_memory_desc_t scratch_md =
      s == dnnl_success ? dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) : nullptr;
  size_t scratch_bytes = scratch_md ? dnnl_memory_desc_get_size(scratch_md) : 0;
  if (scratch.size() < scratch_bytes + 64) scratch.resize(scratch_bytes + 64);
  void* aligned = scratch.data() + (64 - reinterpret_cast<uintptr_t>(scratch.data()) % 64) % 64;
  void* ptrs[4] = {a, b, c, aligned};
  const int nargs = scratch_bytes > 0 ? 4 : 3;
  dnnl_stream_t stream = nullptr;
  if (s == dnnl_success) s = dnnl_stream_create(&stream, g_engine, dnnl_stream_default_flags);
  for (int i = 0; i < nargs && s == dnnl_success; ++i) {
    const_dnnl_memory_desc_t md = i == 3 ? scratch_md
        : dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, which[i]);
    s = dnnl_memory_create(&mems[i], md, g_engine, ptrs[i]);
  }
  if (s == dnnl_success) {
    dnnl_exec_arg_t args[4] = {{which[0], mems[0]}, {which[1], mems[1]}, {which[2], mems[2]},
                               {which[3], mems[3]}};
    s = dnnl_primitive_execute(prim, stream, nargs, args);
    if (s == dnnl_success) s = dnnl_stream_wait(stream);
  }
  for (auto* mem : mems)
    if (mem) dnnl_memory_destroy(mem);
  if (stream) dnnl_stream_destroy(stream);
  if (s != dnnl_success) return ffi::Error::Internal(Status("matmul execution", s));
  return ffi::Error::Success();
}

ffi::Error MatmulImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                      bool transpose_a, bool transpose_b, int64_t threads) {
  auto ad = a.dimensions(), bd = b.dimensions(), cd = c->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || cd.size() != 2)
    return ffi::Error::InvalidArgument("onednn_matmul takes 2-D operands and result");
  int64_t m = transpose_a ? ad[1] : ad[0], k = transpose_a ? ad[0] : ad[1];
  int64_t kb = transpose_b ? bd[1] : bd[0], n = transpose_b ? bd[0] : bd[1];
  if (k != kb || cd[0] != m || cd[1] != n)
    return ffi::Error::InvalidArgument("onednn_matmul: shapes do not chain (A " +
                                       std::to_string(ad[0]) + "x" + std::to_string(ad[1]) +
                                       ", B " + std::to_string(bd[0]) + "x" +
                                       std::to_string(bd[1]) + ")");
  dnnl_data_type_t dta, dtb, dtc;
  if (!ToDnnl(a.element_type(), &dta) || !ToDnnl(b.element_type(), &dtb) ||
      !ToDnnl(c->element_type(), &dtc))
    return ffi::Error::InvalidArgument("onednn_matmul supports bfloat16 and float32 only");
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {  // empty contraction: oneDNN rejects it, the answer is zeros
    std::memset(c->untyped_data(), 0, c->size_bytes());
    return ffi::Error::Success();
  }
  dnnl_primitive_t prim = nullptr;
  Key key{m, k, n, transpose_a, transpose_b, int(dta), int(dtb), int(dtc)};
  if (auto err = GetPrimitive(key, &prim); !err.success()) return err;

  return Execute(prim, a.untyped_data(), b.untyped_data(), c->untyped_data(), threads);
}

// Batched products: C[..., M, N] = A[..., M, K] . B[..., K, N] over logical views of the
// three buffers, each given as dims and strides in elements (2 to 6 dims, batch dims
// first, equal or 1 for broadcasting). The strides let attention's q.k^T and p.v read
// [B, T, H, Dh] tensors per (batch, head) without a transposing copy.
using BatchedKey = std::tuple<std::vector<int64_t>, int, int, int>;
std::map<BatchedKey, dnnl_primitive_t> g_batched_cache;

// Checks one view against its buffer: rank, positive strides, and that the largest
// offset it reaches lies inside the buffer (a bad view must not read out of bounds).
std::string CheckView(const char* name, ffi::Span<const int64_t> dims,
                      ffi::Span<const int64_t> strides, size_t ndim, int64_t elements) {
  if (dims.size() != ndim || strides.size() != ndim)
    return std::string("onednn_batched_matmul: ") + name + " view has the wrong rank";
  int64_t last = 0;
  for (size_t i = 0; i < ndim; ++i) {
    if (dims[i] <= 0 || strides[i] < 0)
      return std::string("onednn_batched_matmul: ") + name + " view has a bad dim or stride";
    last += (dims[i] - 1) * strides[i];
  }
  if (last >= elements)
    return std::string("onednn_batched_matmul: ") + name + " view reaches past its buffer";
  return "";
}

ffi::Error GetBatchedPrimitive(const BatchedKey& key, size_t ndim, dnnl_primitive_t* out) {
  std::lock_guard<std::mutex> lock(g_mutex);
  dnnl_status_t s = EnsureEngine();
  if (s != dnnl_success) return ffi::Error::Internal(Status("engine_create", s));
  auto it = g_batched_cache.find(key);
  if (it != g_batched_cache.end()) {
    *out = it->second;
    return ffi::Error::Success();
  }
  const auto& v = std::get<0>(key);  // a dims, a strides, b dims, b strides, c dims, c strides
  const int dts[3] = {std::get<1>(key), std::get<2>(key), std::get<3>(key)};
  dnnl_memory_desc_t mds[3] = {nullptr, nullptr, nullptr};
  s = dnnl_success;
  for (int i = 0; i < 3 && s == dnnl_success; ++i) {
    dnnl_dims_t dims, strides;
    for (size_t d = 0; d < ndim; ++d) {
      dims[d] = v[(2 * i) * ndim + d];
      strides[d] = v[(2 * i + 1) * ndim + d];
    }
    s = dnnl_memory_desc_create_with_strides(&mds[i], int(ndim), dims,
                                             dnnl_data_type_t(dts[i]), strides);
  }
  dnnl_primitive_t prim = nullptr;
  if (s == dnnl_success) s = CreateMatmul(mds[0], mds[1], mds[2], &prim);
  for (auto* md : mds)
    if (md) dnnl_memory_desc_destroy(md);
  if (s != dnnl_success) return ffi::Error::Internal(Status("batched matmul primitive creation", s));
  g_batched_cache.emplace(key, prim);
  *out = prim;
  return ffi::Error::Success();
}

ffi::Error BatchedImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c,
                       ffi::Span<const int64_t> a_dims, ffi::Span<const int64_t> a_strides,
                       ffi::Span<const int64_t> b_dims, ffi::Span<const int64_t> b_strides,
                       ffi::Span<const int64_t> c_dims, ffi::Span<const int64_t> c_strides,
                       int64_t threads) {
  const size_t ndim = c_dims.size();
  if (ndim < 2 || ndim > 6)
    return ffi::Error::InvalidArgument("onednn_batched_matmul takes 2 to 6 dims");
  dnnl_data_type_t dta, dtb, dtc;
  if (!ToDnnl(a.element_type(), &dta) || !ToDnnl(b.element_type(), &dtb) ||
      !ToDnnl(c->element_type(), &dtc))
    return ffi::Error::InvalidArgument("onednn_batched_matmul supports bfloat16 and float32 only");
  for (auto [name, dims, strides, elements] :
       {std::make_tuple("A", a_dims, a_strides, int64_t(a.element_count())),
        std::make_tuple("B", b_dims, b_strides, int64_t(b.element_count())),
        std::make_tuple("C", c_dims, c_strides, int64_t(c->element_count()))}) {
    std::string problem = CheckView(name, dims, strides, ndim, elements);
    if (!problem.empty()) return ffi::Error::InvalidArgument(problem);
  }
  const size_t m = ndim - 2, n = ndim - 1;
  bool chains = a_dims[n] == b_dims[m] && a_dims[m] == c_dims[m] && b_dims[n] == c_dims[n];
  for (size_t d = 0; d < m; ++d)
    chains = chains && (a_dims[d] == c_dims[d] || a_dims[d] == 1) &&
             (b_dims[d] == c_dims[d] || b_dims[d] == 1);
  if (!chains) return ffi::Error::InvalidArgument("onednn_batched_matmul: views do not chain");
  std::vector<int64_t> v;
  for (auto span : {a_dims, a_strides, b_dims, b_strides, c_dims, c_strides})
    v.insert(v.end(), span.begin(), span.end());
  dnnl_primitive_t prim = nullptr;
  BatchedKey key{v, int(dta), int(dtb), int(dtc)};
  if (auto err = GetBatchedPrimitive(key, ndim, &prim); !err.success()) return err;
  return Execute(prim, a.untyped_data(), b.untyped_data(), c->untyped_data(), threads);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnMatmul, MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b")
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnBatchedMatmul, BatchedImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("a_dims")
                                  .Attr<ffi::Span<const int64_t>>("a_strides")
                                  .Attr<ffi::Span<const int64_t>>("b_dims")
                                  .Attr<ffi::Span<const int64_t>>("b_strides")
                                  .Attr<ffi::Span<const int64_t>>("c_dims")
                                  .Attr<ffi::Span<const int64_t>>("c_strides")
                                  .Attr<int64_t>("threads"));

// Which ISA oneDNN will use (for `vitzoo doctor`): "avx512_core_amx", "avx512_core_bf16", ...
extern "C" int vitzoo_onednn_isa() { return int(dnnl_get_effective_cpu_isa()); }
