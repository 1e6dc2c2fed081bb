// Synthetic H&E-like tissue tiles in five classes (adipose, background, lymphocytes, stroma,
// tumour), drawn procedurally so the quickstart and the tests need no download. A tile is painted
// as haematoxylin and eosin optical-density maps by class, stain-unevenness noise and optical blur
// are added, and Beer–Lambert turns the densities into RGB through Ruifrok & Johnston's stain
// vectors (Anal. Quant. Cytol. Histol. 23:291, 2001) under a per-tile stain strength, stain hue and
// illumination, so morphology separates the classes and mean colour alone does not.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/image.hpp"
#include "dataset.hpp"

namespace histograd::data {

// Label order is the sorted folder names, so write_image_folder + ImageFolder gives the same labels.
enum class TissueClass : int { Adipose = 0, Background = 1, Lymphocytes = 2, Stroma = 3, Tumour = 4 };
inline constexpr int kTissueClasses = 5;
inline std::vector<std::string> tissue_class_names() {
  return {"adipose", "background", "lymphocytes", "stroma", "tumour"};
}

namespace detail {

// SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): tiny and fast; every tile seeds its own, so a
// tile depends on (seed, index) alone and tiles can be drawn in any order or thread.
class TileRandom {
 public:
  explicit TileRandom(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  bool chance(float p) { return uniform() < p; }
  // Approximately N(0, 1): the centred sum of four uniforms (Irwin–Hall), plenty for noise and jitter.
  float normal() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f; }

 private:
  uint64_t state_;
};

inline uint64_t mix_seed(uint64_t seed, uint64_t index) {
  TileRandom r(seed ^ (index * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
  return r.next();
}

constexpr float kPi = 3.14159265358979f;

// sin to ~1e-3 without a libm call (two parabolas): the fibre pattern takes several per pixel.
inline float fast_sin(float x) {
  x -= 2 * kPi * std::floor((x + kPi) * (1.0f / (2 * kPi)));  // [-pi, pi)
  float y = (4 / kPi) * x - (4 / (kPi * kPi)) * x * std::fabs(x);
  return 0.225f * (y * std::fabs(y) - y) + y;
}

inline float clamp01(float v) { return v < 0 ? 0 : (v > 1 ? 1 : v); }

// Haematoxylin and eosin densities of one tile, in optical density per unit stain amount.
// Feature sizes are written for a 64-pixel tile and multiplied by `scale` = size / 64.
struct StainCanvas {
  int size;
  float scale;
  std::vector<float> haem, eosin;
  explicit StainCanvas(int size)
      : size(size), scale(static_cast<float>(size) / 64.0f), haem(static_cast<size_t>(size) * size, 0.0f),
        eosin(static_cast<size_t>(size) * size, 0.0f) {}
  size_t at(int x, int y) const { return static_cast<size_t>(y) * static_cast<size_t>(size) + static_cast<size_t>(x); }
};

// Smooth noise in [-1, 1]: random values on a (cells+1)² lattice over the tile, interpolated
// with a smoothstep so there are no grid creases.
inline std::vector<float> value_noise(int size, int cells, TileRandom& rng) {
  const int lattice = cells + 1;
  std::vector<float> knots(static_cast<size_t>(lattice * lattice));
  for (float& k : knots) k = rng.uniform(-1.0f, 1.0f);
  std::vector<float> out(static_cast<size_t>(size) * size);
  const float step = static_cast<float>(cells) / static_cast<float>(size);
  for (int y = 0; y < size; ++y) {
    const float gy = (static_cast<float>(y) + 0.5f) * step;
    const int iy = std::min(static_cast<int>(gy), cells - 1);
    float ty = gy - static_cast<float>(iy);
    ty = ty * ty * (3 - 2 * ty);
    for (int x = 0; x < size; ++x) {
      const float gx = (static_cast<float>(x) + 0.5f) * step;
      const int ix = std::min(static_cast<int>(gx), cells - 1);
      float tx = gx - static_cast<float>(ix);
      tx = tx * tx * (3 - 2 * tx);
      const float* k0 = &knots[static_cast<size_t>(iy * lattice + ix)];
      const float* k1 = k0 + lattice;
      const float top = k0[0] + (k0[1] - k0[0]) * tx, bottom = k1[0] + (k1[1] - k1[0]) * tx;
      out[static_cast<size_t>(y) * size + x] = top + (bottom - top) * ty;
    }
  }
  return out;
}

// One nucleus: an ellipse whose outline wobbles by its 2nd and 3rd angular harmonics
// (pleomorphism), a soft one-pixel edge, chromatin grain, and a darker rim for vesicular nuclei.
struct Nucleus {
  float x = 0, y = 0, radius_major = 2, radius_minor = 2, angle = 0;
  float density = 1;        // haematoxylin OD at the centre
  float wobble2 = 0, wobble3 = 0, phase2 = 0, phase3 = 0;
  float rim = 0;            // 0: solid; up to ~1: pale centre, dark membrane (vesicular)
  float chromatin = 0.2f;   // fraction of the density that is per-pixel grain
};

// Haematoxylin takes the max over overlapping nuclei (stacked nuclei do not add up to black);
// eosin under a nucleus is partly displaced.
inline void stamp_nucleus(StainCanvas& canvas, const Nucleus& n, TileRandom& rng) {
  const float reach = std::max(n.radius_major, n.radius_minor) * (1 + n.wobble2 + n.wobble3) + 1.5f;
  const int x0 = std::max(0, static_cast<int>(std::floor(n.x - reach))), x1 = std::min(canvas.size - 1, static_cast<int>(std::ceil(n.x + reach)));
  const int y0 = std::max(0, static_cast<int>(std::floor(n.y - reach))), y1 = std::min(canvas.size - 1, static_cast<int>(std::ceil(n.y + reach)));
  const float c = std::cos(n.angle), s = std::sin(n.angle);
  const float c2 = std::cos(n.phase2), s2 = std::sin(n.phase2), c3 = std::cos(n.phase3), s3 = std::sin(n.phase3);
  const float inv_major = 1 / n.radius_major, inv_minor = 1 / n.radius_minor;
  const float sharpness = std::min(n.radius_major, n.radius_minor) / 0.9f;  // edge ~0.9 px wide
  for (int py = y0; py <= y1; ++py)
    for (int px = x0; px <= x1; ++px) {
      const float dx = static_cast<float>(px) + 0.5f - n.x, dy = static_cast<float>(py) + 0.5f - n.y;
      const float u = (dx * c + dy * s) * inv_major, v = (-dx * s + dy * c) * inv_minor;
      const float r = std::sqrt(u * u + v * v);
      float boundary = 1;
      if (r > 1e-6f) {
        const float cu = u / r, sv = v / r;
        const float cos2 = cu * cu - sv * sv, sin2 = 2 * cu * sv;
        const float cos3 = cu * (4 * cu * cu - 3), sin3 = sv * (3 - 4 * sv * sv);
        boundary += n.wobble2 * (cos2 * c2 - sin2 * s2) + n.wobble3 * (cos3 * c3 - sin3 * s3);
      }
      const float coverage = clamp01((boundary - r) * sharpness);
      if (coverage <= 0) continue;
      const float relative = r / boundary;
      const float grain = 1 - n.chromatin + n.chromatin * 2 * rng.uniform();
      const float value = n.density * (1 + n.rim * (relative * relative - 0.6f)) * grain * coverage;
      const size_t i = canvas.at(px, py);
      canvas.haem[i] = std::max(canvas.haem[i], value);
      canvas.eosin[i] *= 1 - 0.6f * coverage;
    }
}

// Random point far enough (min_gap · (r + r_other)) from the centres already placed; false after
// `tries` failures (the tile is full).
struct Placed {
  float x, y, r;
};
template <class Accept>
inline bool place_point(std::vector<Placed>& placed, float r, float min_gap, int size, TileRandom& rng, Accept accept,
                        float& x, float& y, int tries = 12) {
  for (int t = 0; t < tries; ++t) {
    x = rng.uniform(0, static_cast<float>(size));
    y = rng.uniform(0, static_cast<float>(size));
    if (!accept(x, y)) continue;
    bool ok = true;
    for (const Placed& p : placed) {
      const float gap = min_gap * (r + p.r), ddx = p.x - x, ddy = p.y - y;
      if (ddx * ddx + ddy * ddy < gap * gap) { ok = false; break; }
    }
    if (ok) {
      placed.push_back({x, y, r});
      return true;
    }
  }
  return false;
}

// Collagen: two families of wavy parallel streaks at nearby angles, with clefts of empty space.
inline void paint_fibres(StainCanvas& canvas, float angle, float base, float strength, const std::vector<float>* region,
                         TileRandom& rng) {
  const float s = canvas.scale;
  const float period1 = rng.uniform(3.0f, 5.0f) * s, period2 = rng.uniform(2.5f, 4.5f) * s;
  const float wavelength1 = rng.uniform(14.0f, 30.0f) * s, wavelength2 = rng.uniform(10.0f, 24.0f) * s;
  const float amplitude1 = rng.uniform(0.8f, 2.5f) * s, amplitude2 = rng.uniform(0.5f, 2.0f) * s;
  const float phase1 = rng.uniform(0, 2 * kPi), phase2 = rng.uniform(0, 2 * kPi);
  const float angle2 = angle + rng.uniform(-0.35f, 0.35f);
  const float ca = std::cos(angle), sa = std::sin(angle), cb = std::cos(angle2), sb = std::sin(angle2);
  const std::vector<float> clefts = value_noise(canvas.size, 5, rng);
  const float cleft_level = rng.uniform(0.35f, 0.7f);
  // bundles bend and fray: warp the streaks' phase and thickness with slow noise
  const std::vector<float> warp = value_noise(canvas.size, 3, rng), fray = value_noise(canvas.size, 6, rng);
  const float warp_amount = rng.uniform(2.0f, 6.0f) * s;
  for (int y = 0; y < canvas.size; ++y)
    for (int x = 0; x < canvas.size; ++x) {
      const size_t i = canvas.at(x, y);
      if (region && (*region)[i] <= 0) continue;
      const float fx = static_cast<float>(x), fy = static_cast<float>(y);
      const float u1 = fx * ca + fy * sa, v1 = -fx * sa + fy * ca + warp_amount * warp[i];
      const float u2 = fx * cb + fy * sb, v2 = -fx * sb + fy * cb + 0.7f * warp_amount * warp[i];
      const float w1 = 0.5f + 0.5f * fast_sin(2 * kPi / period1 * (v1 + amplitude1 * fast_sin(2 * kPi / wavelength1 * u1 + phase1)));
      const float w2 = 0.5f + 0.5f * fast_sin(2 * kPi / period2 * (v2 + amplitude2 * fast_sin(2 * kPi / wavelength2 * u2 + phase2)));
      float e = base + strength * (0.75f + 0.25f * fray[i]) * (w1 * w1 * w1 + 0.6f * w2 * w2 * w2);
      const float cleft = clamp01((clefts[i] - cleft_level) * 4);
      e *= 1 - 0.8f * cleft;
      const float weight = region ? (*region)[i] : 1.0f;
      canvas.eosin[i] = canvas.eosin[i] * (1 - weight) + e * weight;
      canvas.haem[i] = canvas.haem[i] * (1 - weight) + 0.02f * weight;
    }
}

inline Nucleus lymphocyte(float x, float y, float s, TileRandom& rng) {
  Nucleus n;
  n.x = x;
  n.y = y;
  n.radius_major = rng.uniform(1.7f, 2.4f) * s;
  n.radius_minor = n.radius_major / rng.uniform(1.0f, 1.15f);
  n.angle = rng.uniform(0, kPi);
  n.density = rng.uniform(1.0f, 1.4f);
  n.wobble2 = rng.uniform(0.0f, 0.06f);
  n.phase2 = rng.uniform(0, 2 * kPi);
  n.chromatin = 0.15f;
  return n;
}

inline Nucleus spindle_nucleus(float x, float y, float angle, float s, TileRandom& rng) {
  Nucleus n;
  n.x = x;
  n.y = y;
  n.radius_major = rng.uniform(3.5f, 6.0f) * s;
  n.radius_minor = rng.uniform(0.9f, 1.4f) * s;
  n.angle = angle;
  n.density = rng.uniform(0.7f, 1.0f);
  n.wobble2 = rng.uniform(0.0f, 0.08f);
  n.phase2 = rng.uniform(0, 2 * kPi);
  n.chromatin = 0.2f;
  return n;
}

// Pink wavy collagen with sparse elongated (fibroblast) nuclei along the fibres, now and then a
// stray lymphocyte.
inline void paint_stroma(StainCanvas& canvas, TileRandom& rng) {
  const float s = canvas.scale, angle = rng.uniform(0, kPi);
  paint_fibres(canvas, angle, rng.uniform(0.1f, 0.2f), rng.uniform(0.2f, 0.4f), nullptr, rng);
  const float area = s * s;
  const int spindles = static_cast<int>(rng.uniform(2, 7) * area);
  for (int k = 0; k < spindles; ++k) {
    const float x = rng.uniform(0, static_cast<float>(canvas.size)), y = rng.uniform(0, static_cast<float>(canvas.size));
    stamp_nucleus(canvas, spindle_nucleus(x, y, angle + 0.2f * rng.normal(), s, rng), rng);
  }
  const int strays = static_cast<int>(rng.uniform(0, 3) * area);
  for (int k = 0; k < strays; ++k)
    stamp_nucleus(canvas, lymphocyte(rng.uniform(0, static_cast<float>(canvas.size)), rng.uniform(0, static_cast<float>(canvas.size)), s, rng), rng);
}

// Tumour-like epithelium: nests of amphophilic cytoplasm crowded with large pleomorphic vesicular
// nuclei with nucleoli, separated by strands of stroma, often around glandular lumens lined by a
// ring of columnar nuclei.
inline void paint_tumour(StainCanvas& canvas, TileRandom& rng) {
  const int size = canvas.size;
  const float s = canvas.scale, fsize = static_cast<float>(size);
  // nest mask: 1 inside epithelium, 0 in the stroma strands between nests
  std::vector<float> nest = value_noise(size, 3, rng);
  const float strand_level = rng.uniform(-0.9f, -0.35f);
  for (float& v : nest) v = clamp01((v - strand_level) * 5);
  std::vector<float> strands(nest.size());
  for (size_t i = 0; i < nest.size(); ++i) strands[i] = 1 - nest[i];
  const float cytoplasm_eosin = rng.uniform(0.28f, 0.45f), cytoplasm_haem = rng.uniform(0.05f, 0.12f);
  for (size_t i = 0; i < nest.size(); ++i) {
    canvas.eosin[i] = cytoplasm_eosin;
    canvas.haem[i] = cytoplasm_haem;
  }
  paint_fibres(canvas, rng.uniform(0, kPi), 0.15f, 0.3f, &strands, rng);

  struct Lumen { float x, y, r; };
  std::vector<Lumen> lumens;
  const int lumen_count = rng.chance(0.6f) ? (rng.chance(0.6f) ? 1 : 2) : 0;
  for (int k = 0; k < lumen_count; ++k) {
    Lumen l{rng.uniform(0.2f, 0.8f) * fsize, rng.uniform(0.2f, 0.8f) * fsize, rng.uniform(5.0f, 10.0f) * s};
    lumens.push_back(l);
    for (int y = std::max(0, static_cast<int>(l.y - l.r - 2)); y < std::min(size, static_cast<int>(l.y + l.r + 2)); ++y)
      for (int x = std::max(0, static_cast<int>(l.x - l.r - 2)); x < std::min(size, static_cast<int>(l.x + l.r + 2)); ++x) {
        const float d = std::hypot(static_cast<float>(x) + 0.5f - l.x, static_cast<float>(y) + 0.5f - l.y);
        const float inside = clamp01((l.r - d) / s);
        const size_t i = canvas.at(x, y);
        canvas.eosin[i] = canvas.eosin[i] * (1 - inside) + 0.03f * inside;  // faint secretion
        canvas.haem[i] *= 1 - inside;
        nest[i] *= 1 - inside;
      }
  }
  auto pleomorphic = [&](float x, float y, float radius) {
    Nucleus n;
    n.x = x;
    n.y = y;
    n.radius_major = radius * rng.uniform(1.0f, 1.25f);
    n.radius_minor = radius / rng.uniform(1.0f, 1.25f);
    n.angle = rng.uniform(0, kPi);
    n.density = rng.uniform(0.55f, 0.95f);
    n.wobble2 = rng.uniform(0.0f, 0.18f);
    n.wobble3 = rng.uniform(0.0f, 0.12f);
    n.phase2 = rng.uniform(0, 2 * kPi);
    n.phase3 = rng.uniform(0, 2 * kPi);
    n.rim = rng.uniform(0.3f, 0.8f);
    n.chromatin = 0.35f;
    return n;
  };
  auto stamp_with_nucleolus = [&](const Nucleus& n) {
    stamp_nucleus(canvas, n, rng);
    if (rng.chance(0.6f)) {
      Nucleus dot;
      dot.x = n.x + rng.normal() * 0.3f * n.radius_minor;
      dot.y = n.y + rng.normal() * 0.3f * n.radius_minor;
      dot.radius_major = dot.radius_minor = rng.uniform(0.6f, 0.9f) * s;
      dot.density = rng.uniform(1.2f, 1.6f);
      dot.chromatin = 0.1f;
      stamp_nucleus(canvas, dot, rng);
    }
  };
  std::vector<Placed> placed;
  for (const Lumen& l : lumens) {  // columnar lining, long axis pointing at the lumen
    const float ring = l.r + 3.2f * s;
    const int count = std::max(4, static_cast<int>(2 * kPi * ring / (4.6f * s)));
    const float start = rng.uniform(0, 2 * kPi);
    for (int k = 0; k < count; ++k) {
      const float a = start + 2 * kPi * static_cast<float>(k) / static_cast<float>(count) + 0.08f * rng.normal();
      Nucleus n = pleomorphic(l.x + ring * std::cos(a), l.y + ring * std::sin(a), rng.uniform(2.6f, 3.6f) * s);
      n.radius_major = n.radius_minor * rng.uniform(1.3f, 1.7f);
      n.angle = a;
      placed.push_back({n.x, n.y, n.radius_minor});
      stamp_with_nucleolus(n);
    }
  }
  auto in_nest = [&](float x, float y) {
    const int ix = std::min(size - 1, static_cast<int>(x)), iy = std::min(size - 1, static_cast<int>(y));
    return nest[canvas.at(ix, iy)] > 0.5f;
  };
  const int attempts = static_cast<int>(rng.uniform(45, 70) * s * s);
  for (int k = 0; k < attempts; ++k) {
    const float radius = rng.uniform(2.8f, 5.0f) * s;
    float x = 0, y = 0;
    if (!place_point(placed, radius, 0.8f, size, rng, in_nest, x, y, 4)) continue;
    stamp_with_nucleolus(pleomorphic(x, y, radius));
  }
}

// Lymphocyte-dense tissue: small round dark nuclei packed on a jittered grid, thinning out in
// patches, over pale cytoplasm.
inline void paint_lymphocytes(StainCanvas& canvas, TileRandom& rng) {
  const float s = canvas.scale, fsize = static_cast<float>(canvas.size);
  const float eosin = rng.uniform(0.10f, 0.2f), haem = rng.uniform(0.02f, 0.06f);
  std::fill(canvas.eosin.begin(), canvas.eosin.end(), eosin);
  std::fill(canvas.haem.begin(), canvas.haem.end(), haem);
  const std::vector<float> sparse = value_noise(canvas.size, 3, rng);
  const float spacing = rng.uniform(4.6f, 5.8f) * s, keep = rng.uniform(0.75f, 0.95f), thin_level = rng.uniform(0.2f, 0.8f);
  for (float gy = spacing * 0.5f; gy < fsize; gy += spacing)
    for (float gx = spacing * 0.5f; gx < fsize; gx += spacing) {
      const float x = gx + 0.25f * spacing * rng.normal(), y = gy + 0.25f * spacing * rng.normal();
      const int ix = std::clamp(static_cast<int>(gx), 0, canvas.size - 1), iy = std::clamp(static_cast<int>(gy), 0, canvas.size - 1);
      const float p = sparse[canvas.at(ix, iy)] > thin_level ? keep * 0.35f : keep;
      if (rng.uniform() >= p) continue;
      stamp_nucleus(canvas, lymphocyte(x, y, s, rng), rng);
    }
}

// Adipose: large empty polygonal cells (a jittered-grid Voronoi diagram) outlined by thin pink
// membranes, with a rare flattened nucleus pressed into a membrane.
inline void paint_adipose(StainCanvas& canvas, TileRandom& rng) {
  const float s = canvas.scale;
  const float cell = rng.uniform(14.0f, 24.0f) * s, membrane_width = rng.uniform(0.9f, 1.6f) * s;
  const float membrane_eosin = rng.uniform(0.35f, 0.6f);
  const int grid = static_cast<int>(std::ceil(static_cast<float>(canvas.size) / cell)) + 2;  // one spare ring each side
  std::vector<std::array<float, 2>> sites(static_cast<size_t>(grid * grid));
  for (int gy = 0; gy < grid; ++gy)
    for (int gx = 0; gx < grid; ++gx)
      sites[static_cast<size_t>(gy * grid + gx)] = {(static_cast<float>(gx) - 0.5f + rng.uniform(0.15f, 0.85f)) * cell,
                                                    (static_cast<float>(gy) - 0.5f + rng.uniform(0.15f, 0.85f)) * cell};
  // site (gx, gy) lives in the square [(gx-1/2)·cell, (gx+1/2)·cell) + jitter, so the nearest two
  // sites of a point are among the 3x3 squares around its own
  for (int y = 0; y < canvas.size; ++y)
    for (int x = 0; x < canvas.size; ++x) {
      const float fx = static_cast<float>(x) + 0.5f, fy = static_cast<float>(y) + 0.5f;
      const int cx = static_cast<int>(fx / cell + 0.5f), cy = static_cast<int>(fy / cell + 0.5f);
      float d1 = 1e30f, d2 = 1e30f;
      for (int gy = std::max(0, cy - 1); gy <= std::min(grid - 1, cy + 1); ++gy)
        for (int gx = std::max(0, cx - 1); gx <= std::min(grid - 1, cx + 1); ++gx) {
          const auto& p = sites[static_cast<size_t>(gy * grid + gx)];
          const float d = (p[0] - fx) * (p[0] - fx) + (p[1] - fy) * (p[1] - fy);
          if (d < d1) { d2 = d1; d1 = d; } else if (d < d2) { d2 = d; }
        }
      const float to_wall = 0.5f * (std::sqrt(d2) - std::sqrt(d1));  // ≈ distance to the bisector
      const float membrane = clamp01(1 - to_wall / membrane_width);
      const size_t i = canvas.at(x, y);
      canvas.eosin[i] = 0.015f + membrane_eosin * membrane;
      canvas.haem[i] = 0.005f + 0.03f * membrane;
    }
  const int nuclei = rng.chance(0.6f) ? 1 + static_cast<int>(rng.uniform(0, 2) * s * s) : 0;
  for (int k = 0; k < nuclei; ++k) {  // on the wall between a site and its right or lower neighbour
    const int gx = 1 + static_cast<int>(rng.uniform() * static_cast<float>(grid - 2));
    const int gy = 1 + static_cast<int>(rng.uniform() * static_cast<float>(grid - 2));
    const bool right = rng.chance(0.5f);
    const auto& a = sites[static_cast<size_t>(gy * grid + gx)];
    const auto& b = sites[static_cast<size_t>((gy + (right ? 0 : 1)) * grid + gx + (right ? 1 : 0))];
    Nucleus n = spindle_nucleus(0.5f * (a[0] + b[0]), 0.5f * (a[1] + b[1]),
                                std::atan2(b[1] - a[1], b[0] - a[0]) + kPi / 2, s, rng);
    n.radius_major *= 0.7f;
    stamp_nucleus(canvas, n, rng);
  }
}

// Background: glass with faint stain, a little debris, and in some tiles the ragged edge of a
// piece of tissue entering from a side.
inline void paint_background(StainCanvas& canvas, TileRandom& rng) {
  const float s = canvas.scale, fsize = static_cast<float>(canvas.size);
  const float eosin = rng.uniform(0.0f, 0.05f), haem = rng.uniform(0.0f, 0.02f);
  std::fill(canvas.eosin.begin(), canvas.eosin.end(), eosin);
  std::fill(canvas.haem.begin(), canvas.haem.end(), haem);
  if (rng.chance(0.3f)) {
    const float angle = rng.uniform(0, 2 * kPi), depth = rng.uniform(0.1f, 0.35f) * fsize;
    const float nx = std::cos(angle), ny = std::sin(angle), wave = rng.uniform(1.0f, 3.0f) * s;
    const float wavelength = rng.uniform(10.0f, 25.0f) * s, phase = rng.uniform(0, 2 * kPi);
    std::vector<float> edge(canvas.eosin.size());
    for (int y = 0; y < canvas.size; ++y)
      for (int x = 0; x < canvas.size; ++x) {
        // signed distance into the tile from the side the tissue enters at
        const float fx = static_cast<float>(x) - 0.5f * fsize, fy = static_cast<float>(y) - 0.5f * fsize;
        const float along = -fx * ny + fy * nx, into = fx * nx + fy * ny + 0.5f * fsize * (std::fabs(nx) + std::fabs(ny));
        edge[canvas.at(x, y)] = clamp01((depth + wave * fast_sin(2 * kPi / wavelength * along + phase) - into) / s);
      }
    paint_fibres(canvas, rng.uniform(0, kPi), 0.1f, 0.3f, &edge, rng);
  }
  const int debris = static_cast<int>(rng.uniform(0, 5));
  for (int k = 0; k < debris; ++k) {
    Nucleus n;
    n.x = rng.uniform(0, fsize);
    n.y = rng.uniform(0, fsize);
    n.radius_major = n.radius_minor = rng.uniform(0.5f, 1.5f) * s;
    n.density = rng.uniform(0.15f, 0.5f);
    stamp_nucleus(canvas, n, rng);
  }
}

// Separable Gaussian blur of a density map, edges clamped.
inline void blur(std::vector<float>& map, int size, float sigma, std::vector<float>& scratch) {
  const int radius = std::max(1, static_cast<int>(std::ceil(2.5f * sigma)));
  std::vector<float> kernel(static_cast<size_t>(2 * radius + 1));
  float total = 0;
  for (int k = -radius; k <= radius; ++k) total += kernel[static_cast<size_t>(k + radius)] = std::exp(-0.5f * static_cast<float>(k * k) / (sigma * sigma));
  for (float& k : kernel) k /= total;
  scratch.resize(map.size());
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      float acc = 0;
      for (int k = -radius; k <= radius; ++k)
        acc += kernel[static_cast<size_t>(k + radius)] * map[static_cast<size_t>(y * size + std::clamp(x + k, 0, size - 1))];
      scratch[static_cast<size_t>(y * size + x)] = acc;
    }
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      float acc = 0;
      for (int k = -radius; k <= radius; ++k)
        acc += kernel[static_cast<size_t>(k + radius)] * scratch[static_cast<size_t>(std::clamp(y + k, 0, size - 1) * size + x)];
      map[static_cast<size_t>(y * size + x)] = acc;
    }
}

inline std::array<float, 3> unit(std::array<float, 3> v) {
  const float n = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  return {v[0] / n, v[1] / n, v[2] / n};
}

}  // namespace detail

// One tile of `tissue`, size x size RGB, a pure function of (tissue, size, seed).
inline io::Image synthetic_tissue_tile(TissueClass tissue, int size, uint64_t seed) {
  HG_CHECK(size >= 8 && size <= 4096, "synthetic_tissue_tile", "expected a tile size in [8, 4096], got ", size);
  detail::TileRandom rng(seed);
  detail::StainCanvas canvas(size);
  switch (tissue) {
    case TissueClass::Adipose: detail::paint_adipose(canvas, rng); break;
    case TissueClass::Background: detail::paint_background(canvas, rng); break;
    case TissueClass::Lymphocytes: detail::paint_lymphocytes(canvas, rng); break;
    case TissueClass::Stroma: detail::paint_stroma(canvas, rng); break;
    case TissueClass::Tumour: detail::paint_tumour(canvas, rng); break;
    default: fail("synthetic_tissue_tile", "expected a tissue class in [0, ", kTissueClasses - 1, "], got ", static_cast<int>(tissue));
  }
  // uneven section thickness and staining: slow multiplicative drift of both stains
  const std::vector<float> drift = detail::value_noise(size, 2, rng);
  const float drift_amount = rng.uniform(0.05f, 0.2f);
  for (size_t i = 0; i < drift.size(); ++i) {
    const float f = 1 + drift_amount * drift[i];
    canvas.haem[i] *= f;
    canvas.eosin[i] *= f;
  }
  std::vector<float> scratch;
  const float sigma = rng.uniform(0.45f, 1.0f) * canvas.scale;  // focus varies from tile to tile
  detail::blur(canvas.haem, size, sigma, scratch);
  detail::blur(canvas.eosin, size, sigma, scratch);

  // Per-tile staining protocol and scanner: stain amounts, stain hue (perturbed Ruifrok vectors),
  // white level and colour cast of the illumination, sensor noise.
  // (section thickness scales both stains; staining time each on its own)
  const float thickness = rng.uniform(0.7f, 1.35f);
  const float haem_amount = thickness * rng.uniform(0.6f, 1.4f), eosin_amount = thickness * rng.uniform(0.55f, 1.45f);
  auto jitter = [&](std::array<float, 3> v) {
    for (float& c : v) c = std::max(0.01f, c + 0.09f * rng.normal());
    return detail::unit(v);
  };
  const std::array<float, 3> haem_vector = jitter({0.650f, 0.704f, 0.286f}), eosin_vector = jitter({0.072f, 0.990f, 0.105f});
  const float white = rng.uniform(210.0f, 252.0f);
  std::array<float, 3> light;
  for (float& l : light) l = std::min(255.0f, white + rng.uniform(-6.0f, 6.0f));
  const float noise = rng.uniform(1.0f, 4.0f);
  constexpr float kLn10 = 2.302585093f;
  std::array<float, 3> haem_k, eosin_k;
  for (int c = 0; c < 3; ++c) {
    haem_k[c] = -kLn10 * haem_amount * haem_vector[c];
    eosin_k[c] = -kLn10 * eosin_amount * eosin_vector[c];
  }

  io::Image image;
  image.width = image.height = size;
  image.pixels.resize(static_cast<size_t>(size) * size * 3);
  for (size_t i = 0; i < canvas.haem.size(); ++i) {
    const float h = canvas.haem[i], e = canvas.eosin[i];
    for (int c = 0; c < 3; ++c) {
      const float value = light[c] * std::exp(haem_k[c] * h + eosin_k[c] * e) + noise * rng.normal();
      image.pixels[i * 3 + static_cast<size_t>(c)] = static_cast<uint8_t>(std::clamp(value + 0.5f, 0.0f, 255.0f));
    }
  }
  return image;
}

// A labelled Dataset of synthetic H&E tiles, tiles_per_class of each of the five classes in
// class-major order (labels 0,0,...,1,1,... as ImageFolder lists a folder of them). Tile i is a
// pure function of (seed, i, tile_size): load() is thread-safe and any order gives the same tiles.
class SyntheticTissue : public Dataset {
 public:
  SyntheticTissue(size_t tiles_per_class, int tile_size = 64, uint64_t seed = 0)
      : tiles_per_class_(tiles_per_class), tile_size_(tile_size), seed_(seed) {
    HG_CHECK(tiles_per_class > 0, "SyntheticTissue", "expected at least one tile per class, got 0");
    HG_CHECK(tile_size >= 8 && tile_size <= 4096, "SyntheticTissue", "expected a tile size in [8, 4096], got ", tile_size);
  }
  size_t size() const override { return tiles_per_class_ * kTissueClasses; }
  io::Image load(size_t i) override {
    HG_CHECK(i < size(), "SyntheticTissue", "index ", i, " out of range for ", size(), " tiles");
    return synthetic_tissue_tile(static_cast<TissueClass>(label(i)), tile_size_, detail::mix_seed(seed_, i));
  }
  int label(size_t i) const override {
    HG_CHECK(i < size(), "SyntheticTissue", "index ", i, " out of range for ", size(), " tiles");
    return static_cast<int>(i / tiles_per_class_);
  }
  std::vector<std::string> classes() const override { return tissue_class_names(); }
  std::string path(size_t i) const override {
    return "synthetic " + tissue_class_names()[static_cast<size_t>(label(i))] + " tile " + std::to_string(i);
  }
  int tile_size() const { return tile_size_; }
  uint64_t seed() const { return seed_; }

 private:
  size_t tiles_per_class_;
  int tile_size_;
  uint64_t seed_;
};

// Writes every sample of a labelled dataset as <dir>/<class>/<index>.png (index zero-padded so
// file order is index order), creating the folders; reading <dir> back with ImageFolder gives the
// same images and labels. Returns the number of files written.
inline size_t write_image_folder(Dataset& dataset, const std::string& dir) {
  namespace fs = std::filesystem;
  const std::vector<std::string> classes = dataset.classes();
  HG_CHECK(!classes.empty(), "write_image_folder", "expected a labelled dataset (one folder per class), got one without classes");
  std::error_code ec;
  for (const std::string& name : classes) {
    fs::create_directories(fs::path(dir) / name, ec);
    HG_CHECK(!ec, "write_image_folder", "cannot create '", (fs::path(dir) / name).string(), "': ", ec.message());
  }
  const size_t digits = std::to_string(dataset.size() == 0 ? 0 : dataset.size() - 1).size();
  for (size_t i = 0; i < dataset.size(); ++i) {
    const int label = dataset.label(i);
    HG_CHECK(label >= 0 && static_cast<size_t>(label) < classes.size(), "write_image_folder", "expected labels in [0, ",
             classes.size(), ") for ", dataset.path(i), ", got ", label);
    std::string name = std::to_string(i);
    name.insert(0, digits - name.size(), '0');
    io::write_png((fs::path(dir) / classes[static_cast<size_t>(label)] / (name + ".png")).string(), dataset.load(i));
  }
  return dataset.size();
}

}  // namespace histograd::data
