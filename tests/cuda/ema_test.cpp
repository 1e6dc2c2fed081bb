// cuda/ema.cu against teacher = m * teacher + (1 - m) * student in float64: the flat update and the
// multi-tensor one over 150 tensors of odd sizes (0, 1, multi-chunk, misaligned), for fp32 and
// 16-bit teachers and students. Elements outside the tensors (a guard element before each
// misaligned one) must stay untouched.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "cuda/cuda_test_util.hpp"
#include "histograd/cuda/ema.hpp"

namespace {

using hg::test::DeviceBuffer;

template <class T> double tolerance() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, hg::bfloat16>) return 1e-2;
  else return 5e-3;
}

template <class TT, class TS> void check_flat(int64_t n, int64_t offset, uint64_t seed) {
  INFO("n ", n, " offset ", offset, " teacher ", hg::dtype_name<TT>(), " student ", hg::dtype_name<TS>());
  const double m = 0.996;
  const std::vector<TT> teacher = hg::test::random_values<TT>(size_t(n + offset), seed);
  const std::vector<TS> student = hg::test::random_values<TS>(size_t(n + offset), seed + 1);
  std::vector<double> expected(size_t(n + offset));
  for (size_t i = 0; i < expected.size(); ++i)
    expected[i] = i < size_t(offset) ? hg::test::to_double(teacher[i])
                                     : m * hg::test::to_double(teacher[i]) + (1 - m) * hg::test::to_double(student[i]);
  DeviceBuffer<TT> t(teacher);
  DeviceBuffer<TS> s(student);
  hg::cuda::ema_update_flat(t.ptr + offset, s.ptr + offset, n, m);
  const std::vector<TT> got = t.download();
  CHECK(hg::test::relative_error(expected, got) <= tolerance<TT>());
  for (int64_t i = 0; i < offset; ++i) CHECK(std::memcmp(&got[size_t(i)], &teacher[size_t(i)], sizeof(TT)) == 0);
}

template <class TT, class TS> void check_multi(int count, uint64_t seed) {
  INFO("tensors ", count, " teacher ", hg::dtype_name<TT>(), " student ", hg::dtype_name<TS>());
  const double m = 0.9995;
  std::vector<int64_t> sizes, offsets;
  for (int i = 0; i < count; ++i) {
    const int64_t size = i % 10 == 0 ? 0 : i % 10 == 1 ? 1 : i % 10 == 2 ? 65536 * 2 + 5 : (i * 7919 + 3) % 5000 + 2;
    sizes.push_back(size);
    offsets.push_back(i % 4 == 3 ? 1 : 0);  // a guard element first: the tensor starts misaligned
  }
  std::vector<std::unique_ptr<DeviceBuffer<TT>>> teachers;
  std::vector<std::unique_ptr<DeviceBuffer<TS>>> students;
  std::vector<std::vector<TT>> before;
  std::vector<std::vector<double>> expected;
  std::vector<TT*> tp;
  std::vector<const TS*> sp;
  for (int i = 0; i < count; ++i) {
    const size_t n = size_t(sizes[size_t(i)] + offsets[size_t(i)]);
    std::vector<TT> t = hg::test::random_values<TT>(n, seed + 2 * uint64_t(i));
    std::vector<TS> s = hg::test::random_values<TS>(n, seed + 2 * uint64_t(i) + 1);
    std::vector<double> e(n);
    for (size_t k = 0; k < n; ++k)
      e[k] = k < size_t(offsets[size_t(i)]) ? hg::test::to_double(t[k])
                                           : m * hg::test::to_double(t[k]) + (1 - m) * hg::test::to_double(s[k]);
    teachers.push_back(std::make_unique<DeviceBuffer<TT>>(t));
    students.push_back(std::make_unique<DeviceBuffer<TS>>(s));
    tp.push_back(teachers.back()->ptr + offsets[size_t(i)]);
    sp.push_back(students.back()->ptr + offsets[size_t(i)]);
    before.push_back(std::move(t));
    expected.push_back(std::move(e));
  }
  hg::cuda::ema_update_multi(tp.data(), sp.data(), sizes.data(), count, m);
  for (int i = 0; i < count; ++i) {
    INFO("tensor ", i, " of ", sizes[size_t(i)], " elements");
    if (sizes[size_t(i)] == 0 && offsets[size_t(i)] == 0) continue;  // nothing there (the buffer holds 1 poisoned element)
    const std::vector<TT> got = teachers[size_t(i)]->download();
    CHECK(hg::test::relative_error(expected[size_t(i)], got) <= tolerance<TT>());
    if (offsets[size_t(i)]) CHECK(std::memcmp(&got[0], &before[size_t(i)][0], sizeof(TT)) == 0);
  }
}

template <class TT, class TS> void check_pair() {
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000), int64_t(1) << 20, (int64_t(1) << 20) + 3})
    for (int64_t offset : {0, 1}) check_flat<TT, TS>(n, offset, 900 + uint64_t(n) + uint64_t(offset));
  check_multi<TT, TS>(150, 7000);
  check_multi<TT, TS>(hg::cuda::kEmaTensorsPerLaunch + 7, 9000);  // two launches
}

}  // namespace

TEST_CASE("cuda ema: flat and multi-tensor updates against float64, fp32 teacher") {
  HG_REQUIRE_GPU();
  check_pair<float, float>();
  check_pair<float, hg::bfloat16>();
  check_pair<float, hg::half>();
}

TEST_CASE("cuda ema: flat and multi-tensor updates against float64, 16-bit teacher") {
  HG_REQUIRE_GPU();
  check_pair<hg::bfloat16, hg::bfloat16>();
  check_pair<hg::half, hg::half>();
}

TEST_CASE("cuda ema: bad arguments name the op") {
  HG_REQUIRE_GPU();
  DeviceBuffer<float> t(4), s(4);
  CHECK_THROWS_WITH_AS(hg::cuda::ema_update_flat(t.ptr, s.ptr, 4, 1.5), doctest::Contains("cuda::ema_update_flat: expected momentum in [0, 1]"),
                       hg::Error);
  const int64_t bad = -1;
  float* tp = t.ptr;
  const float* sp = s.ptr;
  CHECK_THROWS_WITH_AS(hg::cuda::ema_update_multi(&tp, &sp, &bad, 1, 0.9),
                       doctest::Contains("cuda::ema_update_multi: expected non-negative sizes"), hg::Error);
}
