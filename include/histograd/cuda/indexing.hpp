// Reading and adding through an index on the GPU (cuda/indexing.cu): the kernels behind gather,
// index_select, embedding, scatter_add and the sort/top-k backward (ops/indexing.hpp). One thread
// per element of the walked shape (the index's shape, or the output's for index_select): its
// position in the dense tensor, in the index, and in the indexed tensor, whose `dim` coordinate
// is replaced by the index value. Strides are in elements, so views need no copy.
#pragma once
#include <cstdint>

namespace histograd::cuda {

constexpr int kMaxIndexDims = 8;

struct IndexWalk {
  int ndim = 0, dim = 0;
  int64_t shape[kMaxIndexDims] = {};            // the walked shape
  int64_t dense_strides[kMaxIndexDims] = {};    // of the dense side (gather's output, scatter's source)
  int64_t indexed_strides[kMaxIndexDims] = {};  // of the indexed side; its `dim` stride steps per index value
  int64_t index_strides[kMaxIndexDims] = {};    // of the int64 index (0 on dims it is broadcast along)
  int64_t skip = -1;                            // an index value whose elements are left out (embedding's padding_idx)
};

// dense[e] = indexed[at(e, index[e])] (skipped elements get 0).
template <class T>
void index_gather(const IndexWalk& walk, const T* indexed, const int64_t* index, T* dense, void* stream = nullptr);

// indexed[at(e, index[e])] += dense[e] with atomicAdd: repeated indices accumulate in an order the
// hardware picks, so float sums may differ from the CPU's (and run to run) in the last bits.
template <class T>
void index_scatter_add(const IndexWalk& walk, const T* dense, const int64_t* index, T* indexed,
                       void* stream = nullptr);

// Counts of an index's values: `valid` in [0, size), `ignored` equal to ignore_value, `bad` the
// rest, and one of the bad values (for the message). Waits for the result (16-byte read-back),
// so ops can throw a clear Error before any kernel reads out of range.
struct IndexCheck {
  int64_t valid = 0, ignored = 0, bad = 0, bad_value = 0;
};
IndexCheck check_index(const int64_t* index, int64_t n, int64_t size, int64_t ignore_value, void* stream = nullptr);

}  // namespace histograd::cuda
