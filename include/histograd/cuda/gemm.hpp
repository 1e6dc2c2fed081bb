// Matrix products on the GPU through cuBLASLt, in histograd's row-major convention:
// C[m,n] = alpha * op(A)[m,k] · op(B)[k,n] + beta * C, optionally batched by strides, with the
// bias and bias+GELU epilogues cuBLASLt fuses. fp32 (exact or TF32 opt-in), bf16 and fp16
// operands; accumulation is fp32 always. Defined in cuda/gemm.cu.
#pragma once
#include <cstdint>

namespace histograd::cuda {

enum class GemmMath {
  Exact,  // fp32 operands multiplied in fp32 (relative error ~1e-6)
  TF32,   // fp32 operands rounded to TF32 on the tensor cores (~3e-4): opt in per call
};

enum class GemmEpilogue {
  None,
  Bias,      // + bias[n] on every row
  BiasGelu,  // gelu(x + bias[n]) — cuBLASLt's GELU is the tanh approximation, not erf:
             // only for layers defined with GELU(approximate="tanh")
};

struct GemmArgs {
  bool transpose_a = false, transpose_b = false;  // op(X) = X^T when set (X stored row-major)
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // row strides of the stored A, B, C (0 = packed)
  float alpha = 1, beta = 0;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;  // element strides between batch items
  GemmMath math = GemmMath::Exact;
  GemmEpilogue epilogue = GemmEpilogue::None;
};

// T ∈ {float, bfloat16, half}; `bias` has n elements of T (epilogues only). Errors name the
// cuBLASLt call and status, or the argument that is out of range.
template <class T>
void gemm(const GemmArgs& args, const T* a, const T* b, T* c, const T* bias = nullptr, void* stream = nullptr);

}  // namespace histograd::cuda
