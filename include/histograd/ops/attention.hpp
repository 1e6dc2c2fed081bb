#pragma once
#include "../core/tensor.hpp"
