// The whole-slide-image component in one include (needs OpenSlide and HDF5: link histograd::wsi).
// slide.hpp/resolution.hpp read slides, tissue.hpp (+ qc_slide.hpp's blur QC) segments them, patching.hpp lays the patch grid,
// hdf5.hpp writes and reads the CLAM/TRIDENT files, extract.hpp runs the whole pipeline.
#pragma once
#include "slide.hpp"
#include "resolution.hpp"
#include "tissue.hpp"
#include "qc_slide.hpp"
#include "patching.hpp"
#include "hdf5.hpp"
#include "extract.hpp"
#include "slide_dataset.hpp"
