// Border following (cv2.findContours RETR_CCOMP / CHAIN_APPROX_NONE), contourArea and
// pointPolygonTest: hand-made masks with hand-checked answers, and parity with cv2 on the
// fixtures and shared tiles through tests/fixtures/wsi/tissue_expected.txt
// (scripts/gen_tissue_fixtures.py): every contour's point list, hierarchy row and area.
#include <histograd/wsi/contours.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.hpp"

namespace wsi = histograd::wsi;
namespace io = histograd::io;

namespace {

std::string fnv(const void* data, size_t n) { return fnv1a_hex(data, n); }

wsi::GrayImage from_rows(const std::vector<std::string>& rows) {
  wsi::GrayImage g(static_cast<int64_t>(rows[0].size()), static_cast<int64_t>(rows.size()));
  for (size_t y = 0; y < rows.size(); ++y)
    for (size_t x = 0; x < rows[y].size(); ++x) g.pixels[y * rows[0].size() + x] = rows[y][x] == '#' ? 255 : 0;
  return g;
}

using Pts = std::vector<std::pair<int, int>>;
Pts pts(const wsi::Contour& c) {
  Pts out;
  for (const auto& p : c.points) out.emplace_back(p.x, p.y);
  return out;
}

// The binary images the fixture script thresholded: "clammask" = sat→median 7→>8→close 4,
// "rawsat" = sat > 40.
wsi::GrayImage mask_for(const io::Image& rgb, const std::string& label) {
  const wsi::GrayImage sat = wsi::rgb_to_saturation(rgb);
  if (label == "rawsat") return wsi::threshold_binary(sat, 40);
  return wsi::morphology_close(wsi::threshold_binary(wsi::median_blur(sat, 7), 8), 4);
}

}  // namespace

TEST_CASE("find_contours: a square with a hole, hand-checked against cv2") {
  // cv2.findContours on this mask (RETR_CCOMP, CHAIN_APPROX_NONE) gives the outer border from
  // (1,1) and the hole border from (1,2) (the pixel left of the hole's first row), hierarchy
  // [[-1,-1,1,-1],[-1,-1,-1,0]], areas 12 and 10 (the hole border runs through the pixels around it).
  const auto m = from_rows({"......",
                            ".#####",
                            ".#...#",
                            ".#...#",
                            ".#####",
                            "......"});
  const auto cs = wsi::find_contours(m);
  REQUIRE(cs.size() == 2);
  CHECK(!cs[0].is_hole);
  CHECK(cs[1].is_hole);
  CHECK((cs[0].next == -1 && cs[0].previous == -1 && cs[0].first_child == 1 && cs[0].parent == -1));
  CHECK((cs[1].next == -1 && cs[1].previous == -1 && cs[1].first_child == -1 && cs[1].parent == 0));
  CHECK(pts(cs[0]).front() == std::pair<int, int>{1, 1});
  CHECK(cs[0].points.size() == 14);
  CHECK(wsi::polygon_area(cs[0].points) == 12.0);
  CHECK(wsi::polygon_area(cs[1].points) == 10.0);
  // Outer borders run counter-clockwise on screen (down the left side first), as cv2's do.
  CHECK(pts(cs[0])[1] == std::pair<int, int>{1, 2});
}

TEST_CASE("find_contours: lone pixels, lines, border-touching shapes, 8-connectivity, nesting") {
  SUBCASE("one pixel: one contour of one point, area 0") {
    const auto cs = wsi::find_contours(from_rows({"#"}));
    REQUIRE(cs.size() == 1);
    CHECK(pts(cs[0]) == Pts{{0, 0}});
    CHECK(wsi::polygon_area(cs[0].points) == 0);
  }
  SUBCASE("a horizontal line: out and back along it") {
    const auto cs = wsi::find_contours(from_rows({"###"}));
    REQUIRE(cs.size() == 1);
    CHECK(pts(cs[0]) == Pts{{0, 0}, {1, 0}, {2, 0}, {1, 0}});
  }
  SUBCASE("diagonal pixels are one 8-connected component; a 4-connected background hole") {
    const auto cs = wsi::find_contours(from_rows({"#..", ".#.", "..#"}));
    REQUIRE(cs.size() == 1);
    const auto ring = wsi::find_contours(from_rows({".#.", "#.#", ".#."}));
    REQUIRE(ring.size() == 2);  // the centre is a hole: background is 4-connected
    CHECK(ring[1].parent == 0);
    CHECK(pts(ring[1]).size() == 4);
  }
  SUBCASE("the whole image is foreground: the frame is outside") {
    const auto cs = wsi::find_contours(from_rows({"###", "###"}));
    REQUIRE(cs.size() == 1);
    CHECK(wsi::polygon_area(cs[0].points) == 2.0);
  }
  SUBCASE("an island in a hole is a second top-level border; newest first") {
    const auto cs = wsi::find_contours(from_rows({"#######",
                                                  "#.....#",
                                                  "#.###.#",
                                                  "#.###.#",
                                                  "#.....#",
                                                  "#######"}));
    REQUIRE(cs.size() == 3);
    // Discovery: outer (0,0), hole, island (2,2). Output: island first (newest top level), then
    // the outer border and its hole.
    CHECK(pts(cs[0]).front() == std::pair<int, int>{2, 2});
    CHECK((cs[0].parent == -1 && cs[0].next == 1 && cs[0].first_child == -1));
    CHECK((cs[1].parent == -1 && cs[1].previous == 0 && cs[1].first_child == 2));
    CHECK((cs[2].parent == 1 && cs[2].is_hole));
  }
  SUBCASE("empty") {
    CHECK(wsi::find_contours(wsi::GrayImage()).empty());
    CHECK(wsi::find_contours(wsi::GrayImage(5, 3)).empty());
  }
}

TEST_CASE("polygon_area and point_polygon_test on hand values") {
  const wsi::Polygon square{{0, 0}, {4, 0}, {4, 4}, {0, 4}};
  CHECK(wsi::polygon_area(square) == 16.0);
  const wsi::Polygon reversed(square.rbegin(), square.rend());
  CHECK(wsi::polygon_area(reversed) == 16.0);
  CHECK(wsi::polygon_area(wsi::Polygon{}) == 0.0);
  CHECK(wsi::point_polygon_test(square, {2, 2}) == 1);
  CHECK(wsi::point_polygon_test(square, {0, 2}) == 0);
  CHECK(wsi::point_polygon_test(square, {4, 4}) == 0);
  CHECK(wsi::point_polygon_test(square, {2, 0}) == 0);
  CHECK(wsi::point_polygon_test(square, {5, 2}) == -1);
  CHECK(wsi::point_polygon_test(square, {-0.5, 2}) == -1);
  CHECK(wsi::point_polygon_test(square, {3.999, 0.001}) == 1);
  CHECK(wsi::point_polygon_test(wsi::Polygon{}, {0, 0}) == -1);
  const wsi::Polygon tri{{0, 0}, {10, 0}, {0, 10}};
  CHECK(wsi::point_polygon_test(tri, {5, 5}) == 0);
  CHECK(wsi::point_polygon_test(tri, {5, 5.01}) == -1);
  CHECK(wsi::point_polygon_test(tri, {4.99, 5}) == 1);
}

TEST_CASE("find_contours and pointPolygonTest match cv2 on the fixtures and the shared tiles") {
  std::ifstream in(std::string(HISTOGRAD_FIXTURES_DIR) + "/wsi/tissue_expected.txt");
  REQUIRE(in.good());
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::optional<io::Image> image;
  std::string name;
  int compared = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::istringstream ss(lines[i]);
    std::string tag;
    ss >> tag;
    if (tag == "image") {
      std::string kind;
      ss >> kind >> name;
      const std::string path = kind == "fixture" ? std::string(HISTOGRAD_FIXTURES_DIR) + "/wsi/" + name + ".png"
                                                 : std::string(HISTOGRAD_SHARED_DATA_DIR) + "/tiles/" + name;
      image.reset();
      if (std::filesystem::exists(path))
        image = io::read_image(path);
      else
        MESSAGE("skipping " << name << ": " << path << " is absent (../shared/data is not part of a clone)");
    } else if (tag == "contours" && image) {
      std::string label;
      size_t n = 0;
      ss >> label >> n;
      INFO(name << " " << label);
      const auto cs = wsi::find_contours(mask_for(*image, label));
      REQUIRE(cs.size() == n);
      for (size_t k = 0; k < n; ++k) {
        std::istringstream cl(lines[i + 1 + k]);
        std::string c, area, hash;
        int next = 0, prev = 0, child = 0, parent = 0, x0 = 0, y0 = 0;
        size_t npts = 0;
        cl >> c >> next >> prev >> child >> parent >> npts >> x0 >> y0 >> area >> hash;
        INFO("contour " << k << ": " << lines[i + 1 + k]);
        CHECK(cs[k].next == next);
        CHECK(cs[k].previous == prev);
        CHECK(cs[k].first_child == child);
        CHECK(cs[k].parent == parent);
        REQUIRE(cs[k].points.size() == npts);
        CHECK(cs[k].points[0].x == x0);
        CHECK(cs[k].points[0].y == y0);
        CHECK(wsi::polygon_area(cs[k].points) == std::stod(area));
        CHECK(fnv(cs[k].points.data(), cs[k].points.size() * sizeof(wsi::IntPoint)) == hash);
        ++compared;
      }
    } else if (tag == "ppt") {
      // Contours of synth_shapes' saturation > 8, every half-pixel point of the box around each.
      const io::Image shapes = io::read_image(std::string(HISTOGRAD_FIXTURES_DIR) + "/wsi/synth_shapes.png");
      const auto cs = wsi::find_contours(wsi::threshold_binary(wsi::rgb_to_saturation(shapes), 8));
      size_t idx = 0;
      int x = 0, y = 0, w = 0, h = 0;
      std::string hash;
      ss >> idx >> x >> y >> w >> h >> hash;
      REQUIRE(idx < cs.size());
      std::vector<uint8_t> res;
      for (double yy = y - 2; yy < y + h + 2; yy += 0.5)
        for (double xx = x - 2; xx < x + w + 2; xx += 0.5)
          res.push_back(static_cast<uint8_t>(wsi::point_polygon_test(cs[idx].points, {xx, yy}) + 1));
      INFO(lines[i]);
      CHECK(fnv(res.data(), res.size()) == hash);
      ++compared;
    }
  }
  CHECK(compared > 100);
}

TEST_CASE("find_contours rejects a malformed image") {
  wsi::GrayImage g(4, 4);
  g.pixels.resize(3);
  CHECK_THROWS_WITH_AS(wsi::find_contours(g), doctest::Contains("find_contours: expected 16 pixels for 4x4, got 3"),
                       hg::Error);
}
