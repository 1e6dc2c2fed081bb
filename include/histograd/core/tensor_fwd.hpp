// Forward declarations, so autograd headers can name Tensor before it is complete.
#pragma once
#include "shape.hpp"

namespace histograd {
template <class T> class Tensor;
template <class T> struct TensorImpl;
}  // namespace histograd
