// The EMA teacher of DINO / DINOv2 / iBOT: θ_t ← m·θ_t + (1−m)·θ_s over every parameter
// (main_dino.py train_one_epoch; dinov2 SSLMetaArch.update_teacher), in one pass over one
// flat list of chunks so small and large tensors share the threads evenly. Teachers on a GPU
// are updated by cuda/ema.cu's multi-tensor kernel, every parameter in one launch.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../autograd/grad_mode.hpp"
#include "../core/tensor.hpp"
#include "../cpu/parallel.hpp"
#include "../cuda/ema.hpp"
#include "../nn/module.hpp"
#include "../ops/device.hpp"

namespace histograd::optim {

// Requires: teacher and student lists of equal length and matching shapes; teacher tensors
// contiguous (module parameters are). Ensures: each teacher tensor holds m·t + (1−m)·s,
// computed as t·m + (1−m)·s in T like torch's param_k.mul_(m).add_((1 - m) * param_q).
template <class T>
void ema_update(const std::vector<Tensor<T>>& teacher_params, const std::vector<Tensor<T>>& student_params,
                double momentum) {
  HG_CHECK(teacher_params.size() == student_params.size(), "ema_update", "expected as many teacher as student ",
           "parameters, got ", teacher_params.size(), " and ", student_params.size());
  for (size_t i = 0; i < teacher_params.size(); ++i) {
    HG_CHECK(teacher_params[i].defined() && student_params[i].defined(), "ema_update", "parameter ", i, " is undefined");
    HG_CHECK(teacher_params[i].shape() == student_params[i].shape(), "ema_update", "parameter ", i,
             ": teacher shape ", to_string(teacher_params[i].shape()), " differs from student shape ",
             to_string(student_params[i].shape()));
    HG_CHECK(teacher_params[i].is_contiguous(), "ema_update", "teacher parameter ", i, " must be contiguous");
    ::histograd::detail::require_same_device(teacher_params[0].device(), teacher_params[i].device(), "ema_update");
    ::histograd::detail::require_same_device(teacher_params[0].device(), student_params[i].device(), "ema_update");
  }
  NoGradGuard no_grad;
  if (!teacher_params.empty() && ::histograd::detail::is_cuda(teacher_params[0])) {  // one launch (cuda/ema.cu)
    std::vector<Tensor<T>> students;  // contiguous copies only where a student is strided
    std::vector<T*> t;
    std::vector<const T*> s;
    std::vector<int64_t> sizes;
    for (size_t i = 0; i < teacher_params.size(); ++i) {
      students.push_back(student_params[i].contiguous());
      t.push_back(teacher_params[i].device_data());
      s.push_back(students.back().device_data());
      sizes.push_back(teacher_params[i].numel());
    }
    ::histograd::detail::launch_on_device<std::is_same_v<T, float>>(teacher_params, "ema_update", [&] {
      cuda::ema_update_multi<T, T>(t.data(), s.data(), sizes.data(), int64_t(t.size()), momentum);
    });
    for (const auto& p : teacher_params) p.storage()->bump_version();
    return;
  }
  struct Chunk {
    T* teacher;
    const T* student;
    int64_t count;
  };
  const int64_t chunk_size = 16384;
  std::vector<Tensor<T>> students;  // contiguous copies only where a student is strided
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < teacher_params.size(); ++i) {
    students.push_back(student_params[i].contiguous());
    T* t = Tensor<T>(teacher_params[i]).data();
    const T* s = students.back().data();
    for (int64_t begin = 0, n = teacher_params[i].numel(); begin < n; begin += chunk_size)
      chunks.push_back({t + begin, s + begin, std::min(chunk_size, n - begin)});
  }
  const T m = T(momentum), one_minus_m = T(1 - momentum);
  cpu::parallel_for(static_cast<int64_t>(chunks.size()), chunk_size, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      T* t = chunks[size_t(c)].teacher;
      const T* s = chunks[size_t(c)].student;
      for (int64_t k = 0, n = chunks[size_t(c)].count; k < n; ++k) t[k] = t[k] * m + one_minus_m * s[k];
    }
  });
  for (const auto& t : teacher_params) t.storage()->bump_version();
}

// The same over two modules' parameters, in named_parameters() order (names must agree).
template <class T>
void ema_update(nn::Module<T>& teacher, nn::Module<T>& student, double momentum) {
  auto teacher_named = teacher.named_parameters(), student_named = student.named_parameters();
  HG_CHECK(teacher_named.size() == student_named.size(), "ema_update", "teacher has ", teacher_named.size(),
           " parameters, student ", student_named.size());
  std::vector<Tensor<T>> t, s;
  for (size_t i = 0; i < teacher_named.size(); ++i) {
    HG_CHECK(teacher_named[i].first == student_named[i].first, "ema_update", "parameter ", i, " is '",
             teacher_named[i].first, "' in the teacher but '", student_named[i].first, "' in the student");
    t.push_back(teacher_named[i].second);
    s.push_back(student_named[i].second);
  }
  ema_update(t, s, momentum);
}

}  // namespace histograd::optim
