// cuBLASLt behind include/histograd/cuda/gemm.hpp. cuBLAS is column-major; a row-major C = A·B
// is the column-major C^T = B^T·A^T, so every call swaps the operands (and m with n) and
// passes the row strides as leading dimensions: no copies, no transposes in memory.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <mutex>
#include <utility>
#include <unordered_map>

#include "check.cuh"
#include "histograd/core/dtype.hpp"
#include "histograd/cuda/gemm.hpp"

#define HG_CUBLAS_CHECK(call)                                                                       \
  do {                                                                                              \
    cublasStatus_t hg_status_ = (call);                                                             \
    if (hg_status_ != CUBLAS_STATUS_SUCCESS)                                                        \
      throw ::histograd::Error(std::string(#call) + ": cuBLAS error " + cublasLt_status_name(hg_status_)); \
  } while (0)

namespace histograd::cuda {
namespace {

const char* cublasLt_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    default: return "unknown cuBLAS status";
  }
}

template <class T> constexpr cudaDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, bfloat16>) return CUDA_R_16BF;
  else return CUDA_R_16F;
}

// One handle and one 32 MiB workspace per device, made on first use (cuBLASLt's heuristics
// pick faster kernels, split-K among them, when they may use a workspace).
struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
};
LtContext& context() {
  static std::mutex mutex;
  static std::unordered_map<int, LtContext>* contexts = new std::unordered_map<int, LtContext>();
  std::lock_guard<std::mutex> lock(mutex);
  LtContext& ctx = (*contexts)[current_device()];
  if (!ctx.handle) {
    HG_CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
    ctx.workspace = allocate(ctx.workspace_bytes);
  }
  return ctx;
}

// RAII for the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~Descriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void set_batch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  int32_t count = static_cast<int32_t>(batch);
  HG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  HG_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                   sizeof(stride)));
}

}  // namespace

template <class T>
void gemm(const GemmArgs& args, const T* a, const T* b, T* c, const T* bias, void* stream) {
  HG_CHECK(args.m >= 0 && args.n >= 0 && args.k >= 0 && args.batch >= 1, "cuda::gemm",
           "expected m, n, k >= 0 and batch >= 1, got m=", args.m, " n=", args.n, " k=", args.k, " batch=", args.batch);
  HG_CHECK(args.epilogue == GemmEpilogue::None || bias != nullptr, "cuda::gemm", "a bias epilogue needs a bias pointer");
  HG_CHECK(args.epilogue == GemmEpilogue::None || args.batch == 1, "cuda::gemm", "epilogues are for unbatched products");
  HG_CHECK((args.math == GemmMath::Exact || std::is_same_v<T, float>), "cuda::gemm", "TF32 applies to fp32 operands only");
  if (args.m == 0 || args.n == 0) return;
  // Stored shapes (row-major): A is [m,k] or [k,m] when transposed; B is [k,n] or [n,k].
  const int64_t a_rows = args.transpose_a ? args.k : args.m, a_cols = args.transpose_a ? args.m : args.k;
  const int64_t b_rows = args.transpose_b ? args.n : args.k, b_cols = args.transpose_b ? args.k : args.n;
  const int64_t lda = args.lda ? args.lda : a_cols, ldb = args.ldb ? args.ldb : b_cols, ldc = args.ldc ? args.ldc : args.n;
  HG_CHECK(lda >= a_cols && ldb >= b_cols && ldc >= args.n, "cuda::gemm", "row strides shorter than the rows: lda=", lda,
           " (A has ", a_cols, " columns), ldb=", ldb, " (B has ", b_cols, "), ldc=", ldc, " (C has ", args.n, ")");
  LtContext& ctx = context();
  const cudaDataType_t type = data_type<T>();
  const cublasComputeType_t compute =
      args.math == GemmMath::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;

  // Column-major view: a row-major [r, c] matrix with row stride ld is a column-major [c, r]
  // with leading dimension ld. C^T = op(B)^T · op(A)^T: the first operand is B.
  Descriptors d;
  HG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, compute, CUDA_R_32F));
  cublasOperation_t op_first = args.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_second = args.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  HG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  HG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  if (args.epilogue != GemmEpilogue::None) {
    cublasLtEpilogue_t epilogue =
        args.epilogue == GemmEpilogue::Bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
    HG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    HG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    cudaDataType_t bias_type = type;
    HG_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
  }
  HG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, type, b_cols, b_rows, ldb));
  HG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, type, a_cols, a_rows, lda));
  HG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, type, args.n, args.m, ldc));
  if (args.batch > 1) {
    set_batch(d.b, args.batch, args.stride_b);
    set_batch(d.a, args.batch, args.stride_a);
    set_batch(d.c, args.batch, args.stride_c);
  }
  HG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.preference));
  HG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                       &ctx.workspace_bytes, sizeof(ctx.workspace_bytes)));
  // cuBLASLt assumes 256-byte-aligned operands unless told otherwise; views into a tensor (an
  // offset slice, one batch item) are often less aligned, so say what each pointer really has.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, const void*> operands[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, b},  // cuBLAS's A is our B (operands swapped)
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, c}};
  for (const auto& [attribute, pointer] : operands) {
    uint32_t alignment = 256;
    while (alignment > 1 && reinterpret_cast<uintptr_t>(pointer) % alignment != 0) alignment /= 2;
    HG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, attribute, &alignment, sizeof(alignment)));
  }
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  HG_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, d.op, d.b, d.a, d.c, d.c, d.preference, 1, &heuristic,
                                                 &found));
  HG_CHECK(found > 0, "cuda::gemm", "cuBLASLt found no algorithm for m=", args.m, " n=", args.n, " k=", args.k,
           " batch=", args.batch);
  HG_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, d.op, &args.alpha, b, d.b, a, d.a, &args.beta, c, d.c, c, d.c,
                                 &heuristic.algo, ctx.workspace, ctx.workspace_bytes, stream_or_current(stream)));
}

template void gemm<float>(const GemmArgs&, const float*, const float*, float*, const float*, void*);
template void gemm<bfloat16>(const GemmArgs&, const bfloat16*, const bfloat16*, bfloat16*, const bfloat16*, void*);
template void gemm<half>(const GemmArgs&, const half*, const half*, half*, const half*, void*);

}  // namespace histograd::cuda
