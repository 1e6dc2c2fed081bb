// Fused softmax cross-entropy on the GPU (cuda/cross_entropy.cu): the loss and the row's
// logsumexp in one read of the logits (online logsumexp, Milakov & Gimelshein 2018), and the
// gradient recomputed from the saved logsumexp; probabilities never reach memory. Hard labels
// with ignore_index (torch's F.cross_entropy, label_smoothing 0), and DINO/iBOT's soft targets:
// the teacher's centred, sharpened softmax against the student's tempered log-softmax.
// Plain C++ over raw device pointers to contiguous [rows, classes] data; fp32 math throughout.
#pragma once
#include <cstdint>

#include "../core/dtype.hpp"

namespace histograd::cuda {

// loss[r] = logsumexp(logits[r]) - logits[r, labels[r]] and logsumexp[r] (both fp32); 0 and 0 where
// labels[r] == ignore_index; NaN for any other label outside [0, classes) (the op checks labels first).
// T: float, bfloat16 or half. stream: a cudaStream_t, nullptr for the current one.
template <class T>
void cross_entropy_forward(const T* logits, const int64_t* labels, float* loss, float* logsumexp, int64_t rows,
                           int64_t classes, int64_t ignore_index = -100, void* stream = nullptr);

// dlogits[r, c] = (exp(logits[r, c] - logsumexp[r]) - [c == labels[r]]) * g_r, 0 on ignored rows, with
// g_r = dloss[r * dloss_stride] * dloss_scale (stride 0 broadcasts one value; a mean reduction passes
// scale = 1 / non-ignored rows).
template <class T>
void cross_entropy_backward(const T* logits, const int64_t* labels, const float* logsumexp, const T* dloss,
                            int64_t dloss_stride, float dloss_scale, T* dlogits, int64_t rows, int64_t classes,
                            int64_t ignore_index = -100, void* stream = nullptr);

// DINO's H(teacher, student) per row, teacher and student logits both [rows, classes]:
//   q = softmax((teacher - center) / teacher_temp),  loss[r] = -Σ_c q_c log_softmax(student / student_temp)_c
// center is [classes] or nullptr (zeros). Saves both rows' logsumexps of the scaled logits (fp32) for
// the backward. One read of teacher and student.
template <class T>
void distillation_cross_entropy_forward(const T* student, const T* teacher, const T* center, float* loss,
                                        float* student_logsumexp, float* teacher_logsumexp, int64_t rows,
                                        int64_t classes, float student_temp, float teacher_temp,
                                        void* stream = nullptr);

// dstudent[r, c] = (softmax(student/τs)_c - q_c) * g_r / τs, g_r = dloss[r * dloss_stride] * dloss_scale.
// The teacher gets no gradient (it is detached in DINO).
template <class T>
void distillation_cross_entropy_backward(const T* student, const T* teacher, const T* center,
                                         const float* student_logsumexp, const float* teacher_logsumexp,
                                         const T* dloss, int64_t dloss_stride, float dloss_scale, T* dstudent,
                                         int64_t rows, int64_t classes, float student_temp, float teacher_temp,
                                         void* stream = nullptr);

// Which kernels the launchers use (process-wide): 2, the default, splits a DINO row over several
// blocks when the rows alone cannot fill the GPU (merged in a fixed order by a second tiny kernel),
// issues a whole thread's loads first in the DINO backward, and keeps 8 loads in flight in the
// 16-bit hard-label forward; 1 runs the kernels of GPU run 1, kept so tests and benchmarks compare.
void set_cross_entropy_kernel_version(int version);
int cross_entropy_kernel_version();

}  // namespace histograd::cuda
