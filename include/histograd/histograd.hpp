// histograd: header-only tensors, reverse-mode autograd and the ops of the pathology
// foundation models. Include this one header; see README.md for a tour.
#pragma once

#include "core/error.hpp"
#include "core/host_device.hpp"
#include "core/shape.hpp"
#include "core/dtype.hpp"
#include "core/device.hpp"
#include "core/random.hpp"
#include "core/tensor.hpp"
#include "core/factories.hpp"
#include "core/autocast.hpp"

#include "autograd/grad_mode.hpp"
#include "autograd/node.hpp"
#include "autograd/engine.hpp"
#include "autograd/gradcheck.hpp"

#include "ops/views.hpp"
#include "ops/elementwise.hpp"
#include "ops/reduce.hpp"
#include "ops/matmul.hpp"
#include "ops/softmax.hpp"
#include "ops/norm.hpp"
#include "ops/loss.hpp"
#include "ops/indexing.hpp"
#include "ops/random.hpp"
#include "ops/conv.hpp"
#include "ops/interpolate.hpp"
#include "ops/sort.hpp"
#include "ops/attention.hpp"
#include "nn/module.hpp"
#include "nn/layers.hpp"
#include "nn/attention.hpp"
#include "nn/transformer.hpp"
#include "optim/optimizer.hpp"
#include "optim/schedule.hpp"
#include "optim/clip.hpp"
#include "optim/ema.hpp"
#include "models/presets.hpp"
#include "io/safetensors.hpp"
#include "io/pth.hpp"
#include "io/checkpoint.hpp"
#include "io/npy.hpp"
#include "io/image.hpp"
#include "io/training_state.hpp"
#include "data/transforms.hpp"
#include "data/dataset.hpp"
#include "data/augment.hpp"
#include "data/loader.hpp"
#include "data/synthetic_tissue.hpp"
#include "ssl/dino.hpp"
#include "ssl/masking.hpp"
#include "ssl/dinov2.hpp"
#include "ssl/mae.hpp"
#include "ssl/evaluation.hpp"
#include "ssl/trainer.hpp"
#include "ssl/dinov2_trainer.hpp"

// The CUDA backend's launchers (raw device pointers) for programs that call kernels directly;
// the ops above dispatch to them on their own. Linking histograd::cuda defines HISTOGRAD_WITH_CUDA.
#ifdef HISTOGRAD_WITH_CUDA
#include "cuda/runtime.hpp"
#include "cuda/gemm.hpp"
#include "cuda/conv.hpp"
#include "cuda/attention.hpp"
#include "cuda/layer_norm.hpp"
#include "cuda/cross_entropy.hpp"
#include "cuda/ema.hpp"
#endif

// The whole-slide-image component needs OpenSlide and HDF5: linking histograd::wsi defines
// HISTOGRAD_WITH_WSI (or define it yourself and link -lopenslide -lhdf5).
#ifdef HISTOGRAD_WITH_WSI
#include "wsi/wsi.hpp"
#endif
