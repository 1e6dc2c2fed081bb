// Border following and polygon math for tissue masks: the two-level contour hierarchy that
// cv2.findContours(mask, RETR_CCOMP, CHAIN_APPROX_NONE) returns (Suzuki & Abe 1985, "Topological
// structural analysis of digitized binary images by border following", with OpenCV's zero frame
// around the image and its output order), contourArea's shoelace and pointPolygonTest's sign test.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "image_ops.hpp"

namespace histograd::wsi {

struct Point {
  double x = 0, y = 0;
};
using Polygon = std::vector<Point>;  // closed implicitly (last point joins the first)

struct IntPoint {
  int32_t x = 0, y = 0;
  bool operator==(const IntPoint&) const = default;
};

// One border: every pixel on it in following order (CHAIN_APPROX_NONE), and its place in the
// RETR_CCOMP hierarchy as cv2 gives it: [next, previous, first_child, parent] (−1 for none).
// Outer borders of 8-connected components have parent −1; each hole border's parent is the outer
// border of the component around it. A component inside a hole is again a top-level outer border.
struct Contour {
  std::vector<IntPoint> points;
  bool is_hole = false;
  int next = -1, previous = -1, first_child = -1, parent = -1;
};

namespace detail {
// Neighbour offsets in OpenCV's chain-code order, counter-clockwise on screen starting to the right.
inline constexpr int chain_dx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
inline constexpr int chain_dy[8] = {0, -1, -1, -1, 0, 1, 1, 1};
}  // namespace detail

// Every border of the nonzero pixels of `mask`, in the order cv2.findContours(RETR_CCOMP,
// CHAIN_APPROX_NONE) returns them: outer borders in reverse order of discovery by the raster scan
// (OpenCV puts each new border at the head of its parent's list), each followed by its holes, also
// newest first. Pixels on the image edge count as foreground: the image is framed with zeros.
inline std::vector<Contour> find_contours(const GrayImage& mask) {
  detail::check_gray(mask, "find_contours");
  const int64_t w = mask.width + 2, h = mask.height + 2;
  HG_CHECK(mask.width < (int64_t(1) << 30) && mask.height < (int64_t(1) << 30), "find_contours",
           "expected an image under 2^30 pixels per side, got ", mask.width, "x", mask.height);
  if (mask.width == 0 || mask.height == 0) return {};
  // Labels: 0 background, 1 unvisited foreground, ±(k + 2) visited by border k (negative: the pixel
  // right of it is background, so no later border may start there).
  std::vector<int32_t> f(static_cast<size_t>(w * h), 0);
  for (int64_t y = 0; y < mask.height; ++y)
    for (int64_t x = 0; x < mask.width; ++x) f[static_cast<size_t>((y + 1) * w + x + 1)] = mask.at(x, y) != 0;
  int64_t offset[16];
  for (int s = 0; s < 16; ++s) offset[s] = detail::chain_dy[s & 7] * w + detail::chain_dx[s & 7];

  std::vector<Contour> found;        // discovery order
  std::vector<int> parent_of;        // per found border: index in `found`, −1 for the frame
  for (int64_t y = 1; y < h - 1; ++y) {
    int lnbd = -1;  // border last met on this row (−1: the frame)
    for (int64_t x = 1; x < w - 1; ++x) {
      const int64_t p0 = y * w + x;
      const int32_t v = f[static_cast<size_t>(p0)];
      if (v == 0) continue;
      bool outer = false, hole = false;
      if (v == 1 && f[static_cast<size_t>(p0 - 1)] == 0)
        outer = true;
      else if (v >= 1 && f[static_cast<size_t>(p0 + 1)] == 0)
        hole = true;
      if (outer || hole) {
        if (hole && v > 1) lnbd = v - 2;
        const int id = static_cast<int>(found.size());
        const int32_t label = id + 2;
        // Suzuki's table: a border's parent is the last border met if the two differ in kind,
        // else that border's parent.
        int parent = -1;
        if (lnbd >= 0) parent = found[static_cast<size_t>(lnbd)].is_hole != hole ? lnbd : parent_of[static_cast<size_t>(lnbd)];
        Contour c;
        c.is_hole = hole;
        // Look clockwise around the start pixel from the background pixel that revealed it.
        int s = hole ? 0 : 4;
        const int s_end = s;
        int64_t p1 = 0;
        do {
          s = (s - 1) & 7;
          p1 = p0 + offset[s];
        } while (f[static_cast<size_t>(p1)] == 0 && s != s_end);
        IntPoint pt{static_cast<int32_t>(x - 1), static_cast<int32_t>(y - 1)};
        if (s == s_end) {  // a lone pixel
          f[static_cast<size_t>(p0)] = -label;
          c.points.push_back(pt);
        } else {
          int64_t p3 = p0;
          for (;;) {
            const int from = s;
            int64_t p4 = 0;
            for (;;) {
              p4 = p3 + offset[++s];
              if (f[static_cast<size_t>(p4)] != 0) break;
            }
            s &= 7;
            // The right neighbour (direction 0) was examined and is background iff the
            // counter-clockwise sweep wrapped past it.
            if (static_cast<unsigned>(s - 1) < static_cast<unsigned>(from))
              f[static_cast<size_t>(p3)] = -label;
            else if (f[static_cast<size_t>(p3)] == 1)
              f[static_cast<size_t>(p3)] = label;
            c.points.push_back(pt);
            pt.x += detail::chain_dx[s];
            pt.y += detail::chain_dy[s];
            if (p4 == p0 && p3 == p1) break;
            p3 = p4;
            s = (s + 4) & 7;
          }
        }
        found.push_back(std::move(c));
        parent_of.push_back(hole ? parent : -1);  // RETR_CCOMP: every outer border is top level
      }
      const int32_t now = f[static_cast<size_t>(p0)];
      if (now != 1) lnbd = std::abs(now) - 2;
    }
  }

  // Output order: top-level borders newest first, each followed by its holes newest first.
  const int n = static_cast<int>(found.size());
  std::vector<std::vector<int>> children(static_cast<size_t>(n));
  std::vector<int> roots;
  for (int i = n - 1; i >= 0; --i) {
    if (parent_of[static_cast<size_t>(i)] < 0)
      roots.push_back(i);
    else
      children[static_cast<size_t>(parent_of[static_cast<size_t>(i)])].push_back(i);
  }
  std::vector<int> order, position(static_cast<size_t>(n), -1);
  for (int r : roots) {
    order.push_back(r);
    for (int c : children[static_cast<size_t>(r)]) order.push_back(c);
  }
  for (int k = 0; k < n; ++k) position[static_cast<size_t>(order[static_cast<size_t>(k)])] = k;
  std::vector<Contour> out(static_cast<size_t>(n));
  auto link_siblings = [&](const std::vector<int>& list, int parent_pos) {
    for (size_t k = 0; k < list.size(); ++k) {
      Contour& c = out[static_cast<size_t>(position[static_cast<size_t>(list[k])])];
      c.previous = k > 0 ? position[static_cast<size_t>(list[k - 1])] : -1;
      c.next = k + 1 < list.size() ? position[static_cast<size_t>(list[k + 1])] : -1;
      c.parent = parent_pos;
    }
  };
  for (int k = 0; k < n; ++k) {
    const int i = order[static_cast<size_t>(k)];
    out[static_cast<size_t>(k)].points = std::move(found[static_cast<size_t>(i)].points);
    out[static_cast<size_t>(k)].is_hole = found[static_cast<size_t>(i)].is_hole;
  }
  link_siblings(roots, -1);
  for (int r : roots) {
    const auto& kids = children[static_cast<size_t>(r)];
    link_siblings(kids, position[static_cast<size_t>(r)]);
    out[static_cast<size_t>(position[static_cast<size_t>(r)])].first_child =
        kids.empty() ? -1 : position[static_cast<size_t>(kids.front())];
  }
  return out;
}

// Unsigned area by the shoelace formula, summed in the order cv2.contourArea sums it (from the
// edge closing the polygon), so integer contours give cv2's value to the bit.
template <class P>
double polygon_area(const std::vector<P>& poly) {
  if (poly.empty()) return 0.0;
  double a = 0;
  double px = static_cast<double>(poly.back().x), py = static_cast<double>(poly.back().y);
  for (const P& p : poly) {
    const double x = static_cast<double>(p.x), y = static_cast<double>(p.y);
    a += px * y - py * x;
    px = x;
    py = y;
  }
  return std::abs(a * 0.5);
}

// cv2.pointPolygonTest(poly, p, measureDist=False): +1 inside, 0 on an edge or vertex, −1 outside,
// by counting crossings of the edges that straddle p's row to its right, with OpenCV's rules for
// which edge ends count, so points on vertices and horizontal edges come out as cv2 says.
template <class P>
int point_polygon_test(const std::vector<P>& poly, Point p) {
  if (poly.empty()) return -1;
  int crossings = 0;
  double x1 = static_cast<double>(poly.back().x), y1 = static_cast<double>(poly.back().y);
  for (const P& q : poly) {
    const double x0 = x1, y0 = y1;
    x1 = static_cast<double>(q.x);
    y1 = static_cast<double>(q.y);
    if ((y0 <= p.y && y1 <= p.y) || (y0 > p.y && y1 > p.y) || (x0 < p.x && x1 < p.x)) {
      if (p.y == y1 && (p.x == x1 || (p.y == y0 && ((x0 <= p.x && p.x <= x1) || (x1 <= p.x && p.x <= x0)))))
        return 0;
      continue;
    }
    double side = (p.y - y0) * (x1 - x0) - (p.x - x0) * (y1 - y0);
    if (side == 0) return 0;
    if (y1 < y0) side = -side;
    crossings += side > 0;
  }
  return crossings % 2 == 0 ? -1 : 1;
}

}  // namespace histograd::wsi
